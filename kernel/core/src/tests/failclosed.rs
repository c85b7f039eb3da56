//! Fail-closed everywhere: the witness is made to refuse a record at any
//! point of a run (the N-th admission — an append without held room, or a
//! reservation — once, or from then on), and every state change visible
//! afterwards must have its record in a chain: the partition's own, or the
//! hypervisor's for a decision the kernel could not refuse. A decision that
//! could not be witnessed at all either did not happen, or left its
//! partition stopped and the run stopped.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use rvm_abi::bootinfo::exit;
use rvm_abi::frame::{Frame, OrderKind};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{Hypercall, ObjectKind, WitnessRecord};

use crate::memory::addr::{PhysAddr, PhysRange};
use crate::fake::FakeArch;
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;
use crate::partition::{PartitionId, PartitionState};
use crate::tests::orders::{assert_chains_verify, order_line, runtime, Part, HEAP, OPERATOR_SEED};
use crate::witness::FailAt;

use PartitionState::*;

/// An IPA no partition ever has mapped.
const UNMAPPED: u64 = 0x1000;

/// The states a kernel event leaves its partition in (empty: not a change
/// of state).
fn states_after(e: KernelEvent) -> &'static [PartitionState] {
    match e {
        KernelEvent::PartitionCreate => &[Created],
        KernelEvent::PartitionLoad => &[Loaded],
        KernelEvent::PartitionStart
        | KernelEvent::Unfence
        | KernelEvent::DormantExit
        | KernelEvent::RecoverRestart
        | KernelEvent::RecoverRollback => &[Running],
        // The end of an agent, or the end of the run for one still going.
        KernelEvent::PartitionExit => &[Finished, Suspended],
        KernelEvent::RecoverFence => &[Fenced],
        KernelEvent::RecoverEvict => &[Evicted],
        KernelEvent::DormantEnter => &[Dormant],
        // Refused at load (evicted) or refusing its module (then finished).
        KernelEvent::PartitionRefused => &[Evicted, Finished],
        _ => &[],
    }
}

/// Every record streamed, with its log.
fn all_records(hv: &Hypervisor<FakeArch>) -> Vec<(u32, WitnessRecord)> {
    hv.arch
        .console_text()
        .lines()
        .filter_map(Frame::parse)
        .filter_map(|f| match f {
            Frame::Record { log, bytes } => Some((log, WitnessRecord::from_bytes(&bytes).unwrap())),
            _ => None,
        })
        .collect()
}

/// Records about partition `id`: in its own log, and in the hypervisor's
/// log naming it.
fn about(recs: &[(u32, WitnessRecord)], id: PartitionId) -> (Vec<WitnessRecord>, Vec<WitnessRecord>) {
    let own = recs.iter().filter(|(l, _)| *l == id.0).map(|(_, r)| *r).collect();
    let hyp = recs.iter().filter(|(l, r)| *l == 0 && r.partition == id.0 && id.0 != 0).map(|(_, r)| *r).collect();
    (own, hyp)
}

fn event(r: &WitnessRecord) -> Option<KernelEvent> {
    KernelEvent::from_code(r.op)
}

/// The invariant: every state change visible now has its record. `ran[i]`:
/// how often partition `i`'s guest was entered.
fn assert_every_change_witnessed(hv: &Hypervisor<FakeArch>, ran: &[u32], what: &str) {
    let recs = all_records(hv);
    let lost = hv.witness.lost();
    for (idx, p) in hv.partitions().iter().enumerate() {
        let (own, hyp) = about(&recs, p.id());
        let changes = |rs: &[WitnessRecord]| -> Vec<KernelEvent> {
            rs.iter().filter_map(event).filter(|e| !states_after(*e).is_empty()).collect()
        };
        let (own_changes, hyp_changes) = (changes(&own), changes(&hyp));
        // The state now is what the last change in its own log says, or what
        // a change recorded for it in the hypervisor's log says.
        let mut allowed: Vec<PartitionState> = Vec::new();
        if let Some(last) = own_changes.last() {
            allowed.extend_from_slice(states_after(*last));
        }
        for e in &hyp_changes {
            allowed.extend_from_slice(states_after(*e));
        }
        if !allowed.contains(&p.state()) {
            assert!(
                lost && !p.is_runnable(),
                "{what}: partition {} is {:?}, its records say {:?} (own {:?}, hypervisor's {:?}), witness lost: {lost}",
                p.id().0,
                p.state(),
                allowed,
                own_changes,
                hyp_changes
            );
        }
        // A guest that ran was started (or let run again), witnessed.
        let starts = [KernelEvent::PartitionStart, KernelEvent::Unfence, KernelEvent::DormantExit];
        if ran.get(idx).copied().unwrap_or(0) > 0 {
            assert!(
                own_changes.iter().chain(&hyp_changes).any(|e| starts.contains(e)),
                "{what}: partition {} ran without a start record",
                p.id().0
            );
        }
        // Every guest restart (F1, F2, unfence, wake) has its record.
        let restarts = own_changes
            .iter()
            .chain(&hyp_changes)
            .filter(|e| {
                matches!(
                    e,
                    KernelEvent::RecoverRestart | KernelEvent::RecoverRollback | KernelEvent::Unfence | KernelEvent::DormantExit
                )
            })
            .count();
        assert!(p.restarts() as usize <= restarts, "{what}: partition {} restarted {} times, {restarts} recorded", p.id().0, p.restarts());
        // Every capability it was given has its `CapInstall`.
        for h in p.boot_handles() {
            let cap = crate::caps::witness_id(h.raw);
            assert!(
                own.iter().any(|r| event(r) == Some(KernelEvent::CapInstall) && r.cap == cap),
                "{what}: partition {} holds handle {:#x} with no CapInstall record",
                p.id().0,
                h.raw
            );
        }
        // Its snapshot was taken, witnessed (or came with its agent, moved
        // by a witnessed split).
        if let Some(ck) = p.snapshot() {
            let prefix = ck.hash.prefix16();
            assert!(
                own.iter().any(|r| event(r) == Some(KernelEvent::SnapshotTaken) && r.args == prefix)
                    || own.iter().any(|r| event(r) == Some(KernelEvent::Split)),
                "{what}: partition {} keeps snapshot {} with no SnapshotTaken record",
                p.id().0,
                ck.id
            );
        }
    }
    // Every order carried out was recorded first.
    let orders = recs.iter().filter(|(_, r)| event(r) == Some(KernelEvent::OperatorOrder)).count() as u64;
    assert!(u64::from(hv.orders.applied()) <= orders, "{what}: {} orders applied, {orders} recorded", hv.orders.applied());
    if lost {
        assert!(hv.arch.console_text().contains("stopping"), "{what}: a lost witness stops the run, said");
    }
    if !recs.is_empty() {
        assert_chains_verify(hv);
    }
}

fn frames() -> FrameAllocator {
    FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()])
}

/// The bundle of the life-cycle scenario: a victim and a bystander linked
/// by a channel, with an operator key.
fn lifecycle_bundle() -> Vec<u8> {
    crate::tests::orders::boot(&[Part::new("victim"), Part::new("bystander")], &[(0, 1)], true).1
}

/// The life-cycle scenario, with the witness refusing as `fail` says:
/// load with capabilities; the victim snapshots, traps (F1 restart),
/// violates stage 2 (F3 fence), is unfenced by an order and exits; the
/// bystander commits an item and exits, and an order evicts it (F4).
/// Guests take whatever answer they get and go on. Returns the hypervisor
/// and how often each guest was entered.
fn lifecycle(fail: Option<FailAt>) -> (Hypervisor<FakeArch>, Vec<u32>) {
    let bundle = lifecycle_bundle();
    let mut hv = Hypervisor::boot_with(FakeArch::new(), frames().into(), &bundle, |w| w.inject(fail)).unwrap();
    let ran: Rc<RefCell<Vec<u32>>> = Rc::new(RefCell::new(alloc::vec![0, 0]));
    let r = ran.clone();
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            r.borrow_mut()[0] += 1;
            match (g.start, g.step) {
                (0, 0) => {
                    g.m.write(HEAP, b"marker-1").unwrap();
                    g.call(Hypercall::Snapshot, &[HEAP, 8, 0, 0])
                }
                (0, 1) => g.exit(exit::TRAP),
                (1, 0) => match g.m.write(UNMAPPED, b"x") {
                    Err(f) => f.0,
                    Ok(()) => panic!("a write outside the partition succeeded"),
                },
                _ => g.exit(0),
            }
        })),
    );
    let r = ran.clone();
    hv.arch.set_guest(
        2,
        runtime(Box::new(move |g| {
            r.borrow_mut()[1] += 1;
            match g.step {
                0 => {
                    g.m.write(HEAP, b"k").unwrap();
                    g.m.write(HEAP + 0x100, b"v").unwrap();
                    let h = g.handle(ObjectKind::StateStore);
                    g.call(Hypercall::StateStage, &[h, HEAP, 1, HEAP + 0x100, 1])
                }
                1 => {
                    let h = g.handle(ObjectKind::StateStore);
                    g.call(Hypercall::StateCommit, &[h])
                }
                _ => g.exit(0),
            }
        })),
    );
    hv.run();
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 1, "victim").as_bytes());
    hv.housekeeping();
    hv.run();
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Evict, 2, "bystander").as_bytes());
    hv.housekeeping();
    let ran = ran.borrow().clone();
    (hv, ran)
}

#[test]
fn the_lifecycle_without_failures_is_what_the_sweep_departs_from() {
    let (hv, ran) = lifecycle(None);
    assert_eq!(hv.partitions()[0].state(), Finished, "{}", hv.arch.console_text());
    assert_eq!(hv.partitions()[1].state(), Evicted);
    assert!(ran.iter().all(|&n| n > 0));
    assert!(hv.partitions()[0].restarts() >= 2, "F1 restart and the unfence");
    assert!(!hv.witness.lost());
    assert_every_change_witnessed(&hv, &ran, "clean run");
}

/// The admission just before the first record of `op` in `log` (the
/// reservation for it, or the append itself) in a clean run.
fn admission_before(op: KernelEvent, log: u32) -> u64 {
    let (hv, _) = lifecycle(None);
    let code = rvm_abi::WitnessOp::Event(op).code();
    let (n, _, _) = *hv
        .witness
        .trace()
        .iter()
        .find(|(_, l, o)| *l == log && *o == code)
        .unwrap_or_else(|| panic!("no {op:?} in log {log}"));
    n - 1
}

/// One row per class of witnessed kernel decision: the record whose
/// admission fails (once), and what must hold afterwards beyond the
/// general invariant.
struct Row {
    class: &'static str,
    op: KernelEvent,
    log: u32,
    /// Admissions refused from there (2: the partition's log twice, so a
    /// decision that cannot be refused goes to the hypervisor's log).
    refused: u64,
    check: fn(&Hypervisor<FakeArch>, &[u32]),
}

fn in_hypervisor_log(hv: &Hypervisor<FakeArch>, id: u32, op: KernelEvent) -> bool {
    all_records(hv).iter().any(|(l, r)| *l == 0 && r.partition == id && event(r) == Some(op))
}

const ROWS: &[Row] = &[
    Row {
        class: "capability install at load",
        op: KernelEvent::CapInstall,
        log: 1,
        refused: 1,
        check: |hv, ran| {
            assert_eq!(hv.partitions()[0].state(), Evicted, "refused, not admitted with an unwitnessed capability");
            assert_eq!(ran[0], 0, "never ran");
            assert!(hv.arch.console_text().contains("refused: its witness log could not take the record"));
        },
    },
    Row {
        class: "partition load",
        op: KernelEvent::PartitionLoad,
        log: 2,
        refused: 1,
        check: |hv, ran| {
            assert_eq!(hv.partitions()[1].state(), Evicted);
            assert_eq!(ran[1], 0);
        },
    },
    Row {
        class: "partition start (state transition)",
        op: KernelEvent::PartitionStart,
        log: 1,
        refused: 1,
        check: |hv, _| {
            // Fenced instead of started: the guest runs only once an order
            // lets it run again (witnessed: `Unfence`).
            let (own, _) = about(&all_records(hv), PartitionId(1));
            let life: Vec<KernelEvent> = own.iter().filter_map(event).filter(|e| !states_after(*e).is_empty()).collect();
            assert_eq!(life[..3], [KernelEvent::PartitionCreate, KernelEvent::PartitionLoad, KernelEvent::RecoverFence]);
            assert!(!life.contains(&KernelEvent::PartitionStart));
            assert!(hv.arch.console_text().contains("a change could not be witnessed: fenced (F3)"));
        },
    },
    Row {
        class: "snapshot",
        op: KernelEvent::SnapshotTaken,
        log: 1,
        refused: 1,
        check: |hv, _| {
            let (own, _) = about(&all_records(hv), PartitionId(1));
            assert!(!own.iter().any(|r| event(r) == Some(KernelEvent::SnapshotTaken)), "no snapshot taken");
        },
    },
    Row {
        class: "F1 restart",
        op: KernelEvent::RecoverRestart,
        log: 1,
        refused: 1,
        check: |hv, _| {
            assert!(hv.arch.console_text().contains("recovery record refused: fenced (F3)"));
        },
    },
    Row {
        class: "F3 fence",
        op: KernelEvent::RecoverFence,
        log: 1,
        refused: 2,
        check: |hv, _| {
            assert!(in_hypervisor_log(hv, 1, KernelEvent::RecoverFence), "the fence went to the hypervisor's log");
        },
    },
    Row {
        class: "operator order",
        op: KernelEvent::OperatorOrder,
        log: 1,
        refused: 1,
        check: |hv, _| {
            assert_eq!(hv.partitions()[0].state(), Fenced, "an order that cannot be witnessed is not carried out");
        },
    },
    Row {
        class: "operator unfence (recovery step)",
        op: KernelEvent::Unfence,
        log: 1,
        refused: 1,
        check: |hv, _| {
            assert_eq!(hv.partitions()[0].state(), Fenced, "not let run again unwitnessed");
        },
    },
    Row {
        class: "Exit",
        op: KernelEvent::PartitionExit,
        log: 2,
        refused: 2,
        check: |hv, _| {
            assert!(in_hypervisor_log(hv, 2, KernelEvent::PartitionExit), "the exit went to the hypervisor's log");
        },
    },
    Row {
        class: "F4 eviction",
        op: KernelEvent::RecoverEvict,
        log: 2,
        refused: 2,
        check: |hv, _| {
            assert_eq!(hv.partitions()[1].state(), Evicted);
            assert!(in_hypervisor_log(hv, 2, KernelEvent::RecoverEvict), "the eviction went to the hypervisor's log");
        },
    },
];

#[test]
fn a_refused_record_of_any_class_leaves_no_unwitnessed_change() {
    for row in ROWS {
        let at = admission_before(row.op, row.log);
        let (hv, ran) = lifecycle(Some(FailAt { at, count: row.refused }));
        let what = alloc::format!("{} ({} admissions from {at} refused)", row.class, row.refused);
        assert_every_change_witnessed(&hv, &ran, &what);
        (row.check)(&hv, &ran);
        assert!(!hv.witness.lost(), "{what}: one refusal does not lose the witness");
    }
}

#[test]
fn a_log_that_stops_taking_records_stops_the_run_and_leaves_nothing_unwitnessed() {
    // From the same points on, every admission fails (the hypervisor's log
    // too): what cannot be refused is done the safe way and the run stops.
    for row in ROWS {
        let at = admission_before(row.op, row.log);
        let (hv, ran) = lifecycle(Some(FailAt::from(at)));
        let what = alloc::format!("{} (admissions from {at} refused)", row.class);
        assert_every_change_witnessed(&hv, &ran, &what);
        assert!(hv.partitions().iter().all(|p| !p.is_runnable() || hv.witness.lost()), "{what}");
    }
}

#[test]
fn failing_at_every_append_of_the_lifecycle_never_leaves_a_change_unwitnessed() {
    let total = lifecycle(None).0.witness.admissions();
    assert!(total > 20, "the scenario makes {total} admissions");
    let mut seen: Vec<&str> = Vec::new();
    for at in 0..=total {
        for count in [1, 2, u64::MAX] {
            let (hv, ran) = lifecycle(Some(FailAt { at, count }));
            assert_every_change_witnessed(&hv, &ran, &alloc::format!("{count} admissions from {at} refused"));
            let text = hv.arch.console_text();
            for marker in [
                "refused: its witness log could not take the record",
                "a change could not be witnessed: fenced (F3)",
                "recovery record refused: fenced (F3)",
                "witness log refused a record the kernel cannot refuse: stopping",
            ] {
                if text.contains(marker) && !seen.contains(&marker) {
                    seen.push(marker);
                }
            }
            if all_records(&hv).iter().any(|(l, r)| *l == 0 && r.partition != 0) && !seen.contains(&"fallback") {
                seen.push("fallback");
            }
        }
    }
    assert_eq!(seen.len(), 5, "every fail-closed path was taken somewhere in the sweep: {seen:?}");
}

#[test]
fn a_boot_whose_record_cannot_be_written_runs_nothing() {
    let (hv, ran) = lifecycle(Some(FailAt::from(0)));
    assert!(hv.witness.lost());
    assert_eq!(ran, [0, 0], "nothing ran unwitnessed");
    assert_every_change_witnessed(&hv, &ran, "boot refused");
}

/// The split scenario of `tests_domains` (agent 2 of p1 says little and is
/// moved out to a new partition), with the witness refusing as `fail` says
/// from boot on.
fn split_scenario(fail: Option<FailAt>) -> Hypervisor<FakeArch> {
    use crate::tests::domains::{agent, boot, channel_handles, chatty_peer, domain_runtime, guest, recv, send, switch};
    let mut hv = boot(&[3, 1, 1], &[(agent(0, 0), agent(0, 1)), (agent(0, 0), agent(0, 2))], &[(1, 2)], rvm_abi::bundle::BOOT_FLAG_COHERENCE);
    hv.witness.inject(fail);
    hv.arch.tick_ns = 1_000_000;
    let h = channel_handles(&hv, 0);
    let (a, b, q0, q2) = (h[0].raw, h[1].raw, h[2].raw, h[3].raw);
    let mut calls: Vec<(u16, (Hypercall, [u64; 6]))> = Vec::new();
    for n in 0..900 {
        calls.extend([(0, switch(0)), (0, send(a)), (1, switch(1)), (1, recv(b)), (1, send(b)), (0, switch(0)), (0, recv(a))]);
        if n % 40 == 0 {
            calls.extend([(2, switch(2)), (2, send(q2)), (0, switch(0)), (0, recv(q0))]);
        }
    }
    let vmid = hv.partitions[0].vmid();
    hv.arch.set_guest(vmid, domain_runtime(calls, Rc::default()));
    for idx in [1, 2] {
        let h = channel_handles(&hv, idx)[0].raw;
        let vmid = hv.partitions[idx].vmid();
        hv.arch.set_guest(vmid, guest(chatty_peer(1500, h), Rc::default()));
    }
    hv.arch.set_guest(4, guest(alloc::vec![recv(q2)], Rc::default()));
    hv.run();
    hv
}

#[test]
#[ignore = "slow (about 17 runs of the split scenario, minutes in a debug build): cargo test -p rvm-kernel -- --ignored a_split"]
fn a_split_whose_records_are_refused_moves_nothing_or_is_witnessed_whole() {
    let clean = split_scenario(None);
    assert_eq!(clean.domains().moves().len(), 1, "the scenario splits");
    let code = |e: KernelEvent| rvm_abi::WitnessOp::Event(e).code();
    let find = |log: u32, e: KernelEvent| {
        clean.witness.trace().iter().find(|(_, l, o)| *l == log && *o == code(e)).map(|(n, _, _)| *n - 1).unwrap()
    };
    let decided = find(1, KernelEvent::SplitDecided);
    let created = find(4, KernelEvent::PartitionCreate);
    let split = find(1, KernelEvent::Split);
    // The decision, then the hand-over: the call's reservation, the new
    // partition's creation, each capability, the load and the `Split`s.
    let window: Vec<u64> = core::iter::once(decided).chain(created.saturating_sub(2)..=split).collect();
    assert!(window.len() >= 6, "{window:?}");
    for at in window {
        for count in [1, u64::MAX] {
            let hv = split_scenario(Some(FailAt { at, count }));
            let what = alloc::format!("split: {count} admissions from {at} refused");
            assert_every_change_witnessed(&hv, &[], &what);
            let recs = all_records(&hv);
            let has = |log: u32, e: KernelEvent| recs.iter().any(|(l, r)| *l == log && event(r) == Some(e));
            match hv.domains().moves().len() {
                0 => {
                    assert_eq!(hv.domains().agents()[2].partition, 0, "{what}: the agent stayed");
                    assert!(!has(1, KernelEvent::Split), "{what}");
                    if let Some(p) = hv.partitions().get(3) {
                        assert_eq!(p.state(), Evicted, "{what}: a partition created on the way is refused");
                    }
                }
                _ => {
                    assert_eq!(hv.domains().agents()[2].partition, 3, "{what}");
                    assert!(has(1, KernelEvent::SplitDecided) && has(1, KernelEvent::Split), "{what}: the move in its source's log");
                    assert!(has(4, KernelEvent::Split) && has(4, KernelEvent::PartitionLoad), "{what}: the move in the new partition's log");
                }
            }
        }
    }
}
