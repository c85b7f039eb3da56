//! Whole-kernel tests of coherence domains on the fake machine: several
//! agents in one partition, each call attributed to the running agent,
//! traffic recorded in the communication graph, and split and merge
//! decisions witnessed with their cut value.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use rvm_abi::bootinfo::{self, layout, AgentTable, HandleInfo};
use rvm_abi::bundle::{
    AgentChannelDesc, AgentRef, BootConfig, BundleWriter, ChannelDesc, EntryKind, BOOT_FLAG_COHERENCE, GLOBAL,
};
use rvm_abi::frame::Frame;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, ObjectKind, WitnessRecord};
use rvm_coherence::{AgentId, Decision, Weight};

use crate::memory::addr::{Ipa, PhysAddr, PhysRange};
use crate::arch::{Arch, TrapInfo};
use crate::fake::FakeArch;
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;

const HEAP: u64 = layout::HEAP_IPA;
const MSG: &[u8] = b"hello, agent";
const RECV: u64 = HEAP + 0x100;

fn runtime() -> Vec<u8> {
    crate::load::elf::tests::build(0x4000_0000, &[(0x4000_0000, 5, 64, 64), (0x4000_1000, 6, 16, 0x2000)])
}

use crate::tests::desc;

pub(crate) fn agent(partition: u32, slot: u32) -> AgentRef {
    AgentRef { partition, slot }
}

/// Partitions `p1..` with `agents[i]` modules each; agent channels and
/// partition channels as given.
pub(crate) fn boot(agents: &[usize], agent_channels: &[(AgentRef, AgentRef)], channels: &[(u32, u32)], flags: u32) -> Hypervisor<FakeArch> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { flags, ..BootConfig::DEFAULT }.to_bytes());
    for (n, &count) in agents.iter().enumerate() {
        let i = w.partition(&desc(&alloc::format!("p{}", n + 1)));
        for k in 0..count {
            // Distinct modules (the kernel does not parse them).
            let mut module = b"\0asm\x01\0\0\0".to_vec();
            module.extend(core::iter::repeat_n(0u8, 5000 * k));
            w.entry(EntryKind::Wasm, i, &module);
        }
    }
    for (a, b) in channels {
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: *a, b: *b, capacity: 8 }.to_bytes());
    }
    for (a, b) in agent_channels {
        w.entry(EntryKind::AgentChannel, GLOBAL, &AgentChannelDesc { a: *a, b: *b, capacity: 8 }.to_bytes());
    }
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap()
}

/// A page of partition `idx`'s guest memory, if mapped.
fn guest_page(hv: &Hypervisor<FakeArch>, idx: usize, ipa: u64) -> Option<Vec<u8>> {
    let t = hv.partitions[idx].stage2().translate(&hv.arch, Ipa::new(ipa))?;
    let mut page = vec![0u8; 4096];
    hv.arch.phys_read(t.pa, &mut page);
    Some(page)
}

/// What one call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ret {
    call: Hypercall,
    status: i64,
    x1: u64,
}

pub(crate) type Trace = Rc<RefCell<Vec<Ret>>>;

/// A guest that writes [`MSG`] into its heap before each call (a restart
/// scrubs the heap), makes `calls` in order, then exits 0.
pub(crate) fn guest(calls: Vec<(Hypercall, [u64; 6])>, trace: Trace) -> crate::fake::GuestFn {
    let mut calls = calls.into_iter();
    let mut last: Option<Hypercall> = None;
    Box::new(move |v, m| {
        if let Some(call) = last.take() {
            trace.borrow_mut().push(Ret { call, status: v.regs.x[0] as i64, x1: v.regs.x[1] });
        }
        if let Err(f) = m.write(HEAP, MSG) {
            return f.0;
        }
        let (c, regs) = calls.next().unwrap_or((Hypercall::Exit, [0; 6]));
        last = Some(c);
        v.regs.x[0] = u64::from(c.function_id());
        v.regs.x[1..7].copy_from_slice(&regs);
        let t: TrapInfo = FakeArch::hvc();
        t
    })
}

pub(crate) fn switch(slot: u64) -> (Hypercall, [u64; 6]) {
    (Hypercall::AgentSwitch, [slot, 0, 0, 0, 0, 0])
}
pub(crate) fn send(handle: u64) -> (Hypercall, [u64; 6]) {
    (Hypercall::ChannelSend, [handle, HEAP, MSG.len() as u64, 0, 0, 0])
}
pub(crate) fn recv(handle: u64) -> (Hypercall, [u64; 6]) {
    (Hypercall::ChannelRecv, [handle, RECV, 64, 0, 0, 0])
}

/// The channel handles of partition `idx`, in install order.
pub(crate) fn channel_handles(hv: &Hypervisor<FakeArch>, idx: usize) -> Vec<HandleInfo> {
    hv.partitions[idx].boot_handles().iter().copied().filter(|h| h.kind == ObjectKind::Channel as u8).collect()
}

/// Every record of every log, decoded from the console.
fn records(hv: &Hypervisor<FakeArch>) -> Vec<(u32, WitnessRecord)> {
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

/// Every log's chain links each record to its predecessor, in sequence.
fn assert_chains_verify(hv: &Hypervisor<FakeArch>) {
    let mut logs: alloc::collections::BTreeMap<u32, Vec<[u8; 64]>> = Default::default();
    for f in hv.arch.console_text().lines().filter_map(Frame::parse) {
        if let Frame::Record { log, bytes } = f {
            logs.entry(log).or_default().push(bytes);
        }
    }
    assert!(!logs.is_empty());
    for (log, recs) in logs {
        let mut head = rvm_witness::Hash::ZERO;
        for (i, bytes) in recs.iter().enumerate() {
            let r = WitnessRecord::from_bytes(bytes).unwrap();
            assert_eq!(r.seq, i as u64, "log {log}: seq");
            assert_eq!(r.prev, head.prefix16(), "log {log}: record {i} links its predecessor");
            head = rvm_witness::chain::chain_step(&head, bytes);
        }
    }
}

#[test]
fn a_partition_carries_several_agents_with_a_table_and_per_agent_handles() {
    // p1: three agents; p2: one. Channels: p1/0 ↔ p1/1 (inside p1) and
    // p1/2 ↔ p2/0 (across).
    let hv = boot(&[3, 1], &[(agent(0, 0), agent(0, 1)), (agent(0, 2), agent(1, 0))], &[], 0);
    let d = hv.domains();
    let ids: Vec<(u32, usize, u16)> = d.agents().iter().map(|a| (a.id.0, a.partition, a.slot.0)).collect();
    assert_eq!(ids, [(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0)]);
    assert!(d.is_multi_agent(0) && !d.is_multi_agent(1));

    // The boot-info page counts the agents; the table lists their modules.
    let boot1 = guest_page(&hv, 0, layout::BOOTINFO_IPA).unwrap();
    assert_eq!(bootinfo::agent_count(&boot1), 3);
    let table = guest_page(&hv, 0, layout::AGENTS_IPA).expect("agent table mapped");
    assert_eq!(AgentTable::count(&table), 3);
    let entries: Vec<_> = (0..3).map(|s| AgentTable::read(&table, s).unwrap()).collect();
    assert_eq!(entries[0].module_ipa, layout::WASM_IPA);
    assert_eq!(entries.iter().map(|e| e.module_len).collect::<Vec<_>>(), [8, 5008, 10008]);
    assert_eq!(entries.iter().map(|e| e.agent_id).collect::<Vec<_>>(), [0, 1, 2]);
    for pair in entries.windows(2) {
        assert!(pair[1].module_ipa >= pair[0].module_ipa + pair[0].module_len, "modules overlap");
        assert_eq!(pair[1].module_ipa % 4096, 0);
    }
    let second = guest_page(&hv, 0, entries[1].module_ipa).unwrap();
    assert_eq!(&second[..8], b"\0asm\x01\0\0\0");

    // The load record binds every module of the domain, in slot order.
    let modules: Vec<Vec<u8>> = (0..3)
        .map(|k| {
            let mut m = b"\0asm\x01\0\0\0".to_vec();
            m.extend(core::iter::repeat_n(0u8, 5000 * k));
            m
        })
        .collect();
    let parts: Vec<&[u8]> = modules.iter().map(Vec::as_slice).collect();
    let load = records(&hv)
        .into_iter()
        .find(|(l, r)| *l == 1 && r.op == KernelEvent::PartitionLoad as u16)
        .expect("p1 loaded")
        .1;
    assert_eq!(load.args, rvm_state::digest::of_parts(&parts));

    // A single-agent partition looks as it always did: no count, no table,
    // every handle for every agent.
    let boot2 = guest_page(&hv, 1, layout::BOOTINFO_IPA).unwrap();
    assert_eq!(bootinfo::agent_count(&boot2), 0);
    assert!(guest_page(&hv, 1, layout::AGENTS_IPA).is_none());
    assert!(hv.partitions[1].boot_handles().iter().all(|h| h.agent == 0));

    // p1's handles: the store for all, each channel end for its agent.
    let tags: Vec<(u8, u8)> = hv.partitions[0].boot_handles().iter().map(|h| (h.kind, h.agent)).collect();
    let (st, ch) = (ObjectKind::StateStore as u8, ObjectKind::Channel as u8);
    assert_eq!(tags, [(st, 0), (ch, 1), (ch, 2), (ch, 3)]);
    // The page lists the tags the runtime filters by.
    let listed: Vec<u8> = (0..4).map(|n| rvm_abi::bootinfo::BootInfo::read_handle(&boot1, n).unwrap().agent).collect();
    assert_eq!(listed, [0, 1, 2, 3]);
}

#[test]
fn every_call_belongs_to_the_running_agent_and_traffic_is_recorded() {
    let mut hv = boot(&[3, 1], &[(agent(0, 0), agent(0, 1)), (agent(0, 2), agent(1, 0))], &[], 0);
    let h = channel_handles(&hv, 0);
    let (c0_s0, c0_s1, c1_s2) = (h[0].raw, h[1].raw, h[2].raw);
    let trace: Trace = Rc::default();
    let calls = vec![
        switch(1),
        send(c0_s1),   // agent 1 → agent 0
        switch(0),
        recv(c0_s0),   // agent 0 takes it
        send(c0_s1),   // a handle names the channel; the end is the caller's: agent 0 → agent 1
        recv(c1_s2),   // agent 0 is no end of agent 2's channel
        switch(2),
        send(c1_s2),   // agent 2 → p2's agent
        send(c1_s2),
        switch(7),     // no such agent
        (Hypercall::Snapshot, [HEAP, 16, 0, 0, 0, 0]),
    ];
    let vmid = hv.partitions[0].vmid();
    hv.arch.set_guest(vmid, guest(calls, trace.clone()));
    let vmid2 = hv.partitions[1].vmid();
    hv.arch.set_guest(vmid2, guest(vec![], Rc::default()));
    hv.run();

    let got: Vec<(Hypercall, Result<(), HvError>)> = trace
        .borrow()
        .iter()
        .map(|r| (r.call, if r.status == 0 { Ok(()) } else { Err(HvError::from_code(r.status).unwrap()) }))
        .collect();
    use Hypercall::*;
    assert_eq!(
        got,
        [
            (AgentSwitch, Ok(())),
            (ChannelSend, Ok(())),
            (AgentSwitch, Ok(())),
            (ChannelRecv, Ok(())),
            (ChannelSend, Ok(())),
            (ChannelRecv, Err(HvError::BadHandle)),
            (AgentSwitch, Ok(())),
            (ChannelSend, Ok(())),
            (ChannelSend, Ok(())),
            (AgentSwitch, Err(HvError::InvalidArgument)),
            (Snapshot, Err(HvError::NotSupported)),
        ]
    );
    assert_eq!(trace.borrow()[3].x1, MSG.len() as u64);
    // Queued, not lost: p2 never received; agent 1 has agent 0's message.
    assert_eq!(hv.channels[1].pending_for(hv.partitions[1].id()), 2);
    let p1 = hv.partitions[0].id();
    assert_eq!(hv.channels[0].pending_for(crate::channel::Endpoint { partition: p1, slot: crate::channel::AgentSlot(1) }), 1);
    assert_eq!(hv.channels[0].pending_for(p1), 0);

    // The chain names the running agent before each of its calls.
    let p1 = p1.0;
    let ops: Vec<u16> = records(&hv).into_iter().filter(|(l, r)| *l == p1 && r.op < 0x8000).map(|(_, r)| r.op).collect();
    assert_eq!(ops.iter().filter(|&&op| op == AgentSwitch as u16).count(), 4);
    assert_eq!(ops.len(), 11 + 1, "every call and the final Exit");

    // The graph holds exactly the delivered traffic, agent to agent.
    let g = hv.domains().evaluator().unwrap().graph();
    let inside = g.edge(AgentId(0), AgentId(1)).expect("agents 0 and 1 talked");
    let across = g.edge(AgentId(2), AgentId(3)).expect("agent 2 talked to p2");
    assert_eq!((inside.messages, inside.bytes), (2, 2 * MSG.len() as u64));
    assert_eq!((across.messages, across.bytes), (2, 2 * MSG.len() as u64));
    assert!(g.edge(AgentId(0), AgentId(2)).is_none());
    assert!(hv.domains().decisions().is_empty(), "evaluation is off without the boot flag");
    assert_chains_verify(&hv);
}

/// `rounds` of: agent 0 and agent 1 exchange a message each way over `a`
/// (agent 0's end) / `b` (agent 1's end); every `quiet_every` rounds agent 2
/// sends one message on `q2` that agent 0 takes on `q0`.
fn chatty_domain(rounds: usize, quiet_every: usize, a: u64, b: u64, q0: u64, q2: u64) -> Vec<(Hypercall, [u64; 6])> {
    let mut calls = Vec::new();
    for n in 0..rounds {
        calls.extend([switch(0), send(a), switch(1), recv(b), send(b), switch(0), recv(a)]);
        if n % quiet_every == 0 {
            calls.extend([switch(2), send(q2), switch(0), recv(q0)]);
        }
    }
    calls
}

/// A single-agent partition sending and receiving on `h`, `rounds` times.
pub(crate) fn chatty_peer(rounds: usize, h: u64) -> Vec<(Hypercall, [u64; 6])> {
    (0..rounds).flat_map(|_| [send(h), recv(h), (Hypercall::Yield, [0; 6])]).collect()
}

#[test]
fn the_quiet_agent_is_decided_out_and_chatty_partitions_together_with_their_cut_values() {
    // p1: agents 0, 1 chat; agent 2 says little. p2 and p3 chat across.
    let mut hv = boot(
        &[3, 1, 1],
        &[(agent(0, 0), agent(0, 1)), (agent(0, 0), agent(0, 2))],
        &[(1, 2)],
        BOOT_FLAG_COHERENCE,
    );
    // One millisecond per guest entry: the run spans seconds of epochs.
    hv.arch.tick_ns = 1_000_000;
    let h = channel_handles(&hv, 0);
    let (a, b, q0, q2) = (h[0].raw, h[1].raw, h[2].raw, h[3].raw);
    let trace: Trace = Rc::default();
    let vmid = hv.partitions[0].vmid();
    hv.arch.set_guest(vmid, guest(chatty_domain(400, 40, a, b, q0, q2), trace.clone()));
    let (t2, t3): (Trace, Trace) = (Rc::default(), Rc::default());
    for (idx, t) in [(1, &t2), (2, &t3)] {
        let h = channel_handles(&hv, idx)[0].raw;
        let vmid = hv.partitions[idx].vmid();
        hv.arch.set_guest(vmid, guest(chatty_peer(1500, h), t.clone()));
    }
    hv.run();

    let d = hv.domains();
    let split = d.decisions().iter().find(|r| r.event == KernelEvent::SplitDecided).expect("a split decided");
    assert_eq!(split.partition, hv.partitions[0].id());
    assert_eq!(split.movers, [AgentId(2)], "the quiet agent is the one that would move");
    assert!(!split.cut.is_zero() && split.cut.raw() * 10 < split.internal.raw(), "a weak cut: {split:?}");
    let merge = d.decisions().iter().find(|r| r.event == KernelEvent::MergeDecided).expect("a merge decided");
    let (p2, p3) = (hv.partitions[1].id(), hv.partitions[2].id());
    assert!([(merge.partition, merge.other), (merge.other.unwrap(), Some(merge.partition))].contains(&(p2, Some(p3))));
    assert!(merge.cut >= Weight::from_units(32));
    // These scripts ignore `AgentSwitch`'s DEPART (the peers never issue
    // one), so each departure is abandoned after its timeout (or waits for
    // the other move) and the domains are decided again: every decision
    // names the same agents, and nothing moves.
    let merges: Vec<_> = d.decisions().iter().filter(|r| r.event == KernelEvent::MergeDecided).collect();
    assert!(merges.iter().all(|r| (r.partition, r.other) == (merge.partition, merge.other)));
    let splits: Vec<_> = d.decisions().iter().filter(|r| r.event == KernelEvent::SplitDecided).collect();
    assert!(splits.iter().all(|r| r.movers == [AgentId(2)]));

    // Witnessed with the cut value: the split in p1's log, the merge in both.
    let recs = records(&hv);
    let events = |log: u32, e: KernelEvent| -> Vec<WitnessRecord> {
        recs.iter().filter(|(l, r)| *l == log && r.op == e as u16).map(|(_, r)| *r).collect()
    };
    let s = events(hv.partitions[0].id().0, KernelEvent::SplitDecided);
    // (The kernel keeps the last DECISIONS_KEPT decisions; the logs keep all.)
    assert!(s.len() >= splits.len());
    assert!(s.iter().any(|r| Decision::parse_witness_args(&r.args) == (split.cut, split.internal)));
    let (m2, m3) = (events(p2.0, KernelEvent::MergeDecided), events(p3.0, KernelEvent::MergeDecided));
    assert!(!m2.is_empty() && m2.len() == m3.len(), "each merge decision in both logs");
    for (x, y) in m2.iter().zip(&m3) {
        assert_eq!(x.args, y.args);
    }
    assert!(m2.iter().any(|r| Decision::parse_witness_args(&r.args).0 == merge.cut));
    assert!(events(p2.0, KernelEvent::Merge).is_empty() && events(p3.0, KernelEvent::Merge).is_empty(), "no merge is claimed");
    // This script ignores `AgentSwitch`'s DEPART and never hands the agent
    // over: so nothing moves, and no split is claimed.
    assert!(events(hv.partitions[0].id().0, KernelEvent::Split).is_empty(), "no split is claimed");
    assert!(d.moves().is_empty());
    let text = hv.arch.console_text();
    assert!(splits.len() > 1, "decided again after the abandoned departure");
    assert!(text.contains("coherence: agent 2 stays in its partition: it did not reach a turn boundary in time"), "{text}");
    assert!(text.contains("coherence: split of partition 1 'p1' decided: agents [2] would move"), "{text}");
    assert!(text.contains("coherence: merge of partition"), "{text}");

    // No message lost: what was sent is what was received plus what waits.
    let ok = |t: &Trace, c: Hypercall| t.borrow().iter().filter(|r| r.call == c && r.status == 0).count() as u64;
    let sent = ok(&trace, Hypercall::ChannelSend) + ok(&t2, Hypercall::ChannelSend) + ok(&t3, Hypercall::ChannelSend);
    let received = ok(&trace, Hypercall::ChannelRecv) + ok(&t2, Hypercall::ChannelRecv) + ok(&t3, Hypercall::ChannelRecv);
    let delivered: u64 = hv.channels.iter().map(|c| c.delivered()[0] + c.delivered()[1]).sum();
    let waiting: u64 = hv
        .channels
        .iter()
        .map(|c| (c.pending_for(c.endpoint(0)) + c.pending_for(c.endpoint(1))) as u64)
        .sum();
    assert_eq!(sent, delivered);
    assert_eq!(received + waiting, sent);
    assert_chains_verify(&hv);
}

#[test]
fn an_f1_restart_restarts_every_agent_and_keeps_the_queues_and_the_table() {
    let mut hv = boot(&[3], &[(agent(0, 0), agent(0, 1))], &[], 0);
    let h = channel_handles(&hv, 0);
    let (c0_s0, c0_s1) = (h[0].raw, h[1].raw);
    let trace: Trace = Rc::default();
    let calls = vec![
        switch(1),
        send(c0_s1),
        // One agent traps: the runtime ends the partition with TRAP (F1).
        (Hypercall::Exit, [bootinfo::exit::TRAP, 0, 0, 0, 0, 0]),
        // The restarted runtime starts every agent again; agent 0 finds the
        // message queued before the restart.
        switch(0),
        recv(c0_s0),
    ];
    let vmid = hv.partitions[0].vmid();
    hv.arch.set_guest(vmid, guest(calls, trace.clone()));
    hv.run();
    let t = trace.borrow();
    // Every call came back (the final Exit does not return).
    assert_eq!(t.iter().map(|r| r.call).collect::<Vec<_>>(), [Hypercall::AgentSwitch, Hypercall::ChannelSend, Hypercall::Exit, Hypercall::AgentSwitch, Hypercall::ChannelRecv]);
    assert_eq!((t[4].call, t[4].status, t[4].x1), (Hypercall::ChannelRecv, 0, MSG.len() as u64));
    assert_eq!(hv.partitions[0].restarts(), 1);
    let p1 = hv.partitions[0].id().0;
    assert_eq!(records(&hv).iter().filter(|(l, r)| *l == p1 && r.op == KernelEvent::RecoverRestart as u16).count(), 1);
    // The restarted guest finds the same agents.
    let page = guest_page(&hv, 0, layout::BOOTINFO_IPA).unwrap();
    assert_eq!(bootinfo::agent_count(&page), 3);
    assert_eq!(AgentTable::count(&guest_page(&hv, 0, layout::AGENTS_IPA).unwrap()), 3);
    assert_chains_verify(&hv);
}

fn stage(store: u64, key_len: u64) -> (Hypercall, [u64; 6]) {
    (Hypercall::StateStage, [store, HEAP, key_len, HEAP, MSG.len() as u64, 0])
}
fn commit(store: u64) -> (Hypercall, [u64; 6]) {
    (Hypercall::StateCommit, [store, 0, 0, 0, 0, 0])
}
fn get(store: u64, key_len: u64) -> (Hypercall, [u64; 6]) {
    (Hypercall::StateGet, [store, HEAP, key_len, RECV, 64, 0])
}

/// A multi-agent runtime's script: each call is made by the agent in its
/// slot. When an `AgentSwitch` answers `DEPART`, the runtime snapshots
/// that agent (16 bytes of its heap) and, if the kernel took it, drops every
/// later call of that agent.
pub(crate) fn domain_runtime(calls: Vec<(u16, (Hypercall, [u64; 6]))>, trace: Trace) -> crate::fake::GuestFn {
    domain_runtime_handing(calls, trace, [HEAP, 16, 0, 0, 0, 0])
}

/// [`domain_runtime`] handing over the departing agent's image as `image`
/// (the `Snapshot` registers).
fn domain_runtime_handing(calls: Vec<(u16, (Hypercall, [u64; 6]))>, trace: Trace, image: [u64; 6]) -> crate::fake::GuestFn {
    let mut calls = calls.into_iter();
    let mut last: Option<(u16, Hypercall)> = None;
    let mut gone: Vec<u16> = Vec::new();
    let mut departing: Option<u16> = None;
    Box::new(move |v, m| {
        if let Some((slot, call)) = last.take() {
            let (status, x1) = (v.regs.x[0] as i64, v.regs.x[1]);
            trace.borrow_mut().push(Ret { call, status, x1 });
            match call {
                Hypercall::AgentSwitch if status == 0 && x1 == rvm_abi::hypercall::agent_switch::DEPART => {
                    departing = Some(slot)
                }
                Hypercall::Snapshot if status == 0 => gone.push(slot),
                _ => {}
            }
        }
        if let Err(f) = m.write(HEAP, MSG) {
            return f.0;
        }
        let (slot, (c, regs)) = match departing.take() {
            Some(slot) => (slot, (Hypercall::Snapshot, image)),
            None => calls.find(|(s, _)| !gone.contains(s)).unwrap_or((0, (Hypercall::Exit, [0; 6]))),
        };
        last = Some((slot, c));
        v.regs.x[0] = u64::from(c.function_id());
        v.regs.x[1..7].copy_from_slice(&regs);
        let t: TrapInfo = FakeArch::hvc();
        t
    })
}

#[test]
fn the_quiet_agent_moves_out_with_its_queue_handles_and_committed_state() {
    // p1: agents 0, 1 chat; agent 2 says little. Agent 0 also sends agent 2
    // three messages it never reads in p1: they are queued when it moves.
    let mut hv = boot(&[3, 1, 1], &[(agent(0, 0), agent(0, 1)), (agent(0, 0), agent(0, 2))], &[(1, 2)], BOOT_FLAG_COHERENCE);
    hv.arch.tick_ns = 1_000_000;
    let h = channel_handles(&hv, 0);
    let (a, b, q0, q2) = (h[0].raw, h[1].raw, h[2].raw, h[3].raw);
    let store = hv.partitions[0].boot_handles()[0].raw;
    let first = vec![
        (0, switch(0)),
        (0, send(q0)),
        (0, send(q0)),
        (0, send(q0)),
        (2, switch(2)),
        (2, stage(store, 4)),
        (2, commit(store)),
    ];
    let calls = quiet_third_agent(first, a, b, q0, q2);
    let trace: Trace = Rc::default();
    let vmid = hv.partitions[0].vmid();
    hv.arch.set_guest(vmid, domain_runtime(calls, trace.clone()));
    let (t2, t3): (Trace, Trace) = (Rc::default(), Rc::default());
    for (idx, t) in [(1, &t2), (2, &t3)] {
        let h = channel_handles(&hv, idx)[0].raw;
        let vmid = hv.partitions[idx].vmid();
        hv.arch.set_guest(vmid, guest(chatty_peer(1500, h), t.clone()));
    }
    // The moved agent, in the new partition (VMID 4): its cached handles
    // still work. It reads the committed item, takes the three queued
    // messages, sends one, commits another item, and exits.
    let t4: Trace = Rc::default();
    let moved_calls = vec![get(store, 4), recv(q2), recv(q2), recv(q2), recv(q2), send(q2), stage(store, 5), commit(store)];
    hv.arch.set_guest(4, guest(moved_calls, t4.clone()));
    hv.run();

    // The move happened once, witnessed with the decision's cut value.
    let d = hv.domains();
    let split = d.decisions().iter().find(|r| r.event == KernelEvent::SplitDecided).expect("a split decided").clone();
    assert_eq!(split.movers, [AgentId(2)]);
    assert_eq!(d.moves().len(), 1, "{:?}", d.moves());
    let m = d.moves()[0].clone();
    let (p1, p4) = (hv.partitions[0].id(), hv.partitions[3].id());
    assert_eq!((m.agent, m.from, m.to), (AgentId(2), p1, p4));
    assert_eq!((m.channels, m.handles), (1, 2), "one channel end, the store and that channel");
    assert_eq!(m.queued, 3, "agent 0's three messages waited for it");
    assert_eq!(hv.partitions[3].name(), "p1.a2");
    // With coherence, the new partition runs its agent from a table of one
    // (so it can move again).
    let table4 = guest_page(&hv, 3, layout::AGENTS_IPA).expect("a table of one");
    assert_eq!(AgentTable::count(&table4), 1);
    assert_eq!(AgentTable::read(&table4, 0).unwrap().agent_id, 2);
    assert_eq!(bootinfo::agent_count(&guest_page(&hv, 3, layout::BOOTINFO_IPA).unwrap()), 1);
    let info = d.agents()[2];
    assert_eq!((info.partition, info.slot.0), (3, 0));
    assert!(d.agent_at(0, crate::channel::AgentSlot(2)).is_none(), "its old slot names nobody");
    // A restarted p1 runtime would not start it again: its table entry is vacated.
    let table = guest_page(&hv, 0, layout::AGENTS_IPA).unwrap();
    assert_eq!(AgentTable::count(&table), 3);
    assert_eq!(AgentTable::read(&table, 2).unwrap().module_len, 0);
    assert_ne!(AgentTable::read(&table, 1).unwrap().module_len, 0);
    let recs = records(&hv);
    let events = |log: u32, e: KernelEvent| -> Vec<WitnessRecord> {
        recs.iter().filter(|(l, r)| *l == log && r.op == e as u16).map(|(_, r)| *r).collect()
    };
    for log in [p1.0, p4.0] {
        let s = events(log, KernelEvent::Split);
        assert_eq!(s.len(), 1, "one Split in log {log}");
        assert_eq!(Decision::parse_witness_args(&s[0].args), (split.cut, split.internal));
    }
    assert_eq!(events(p4.0, KernelEvent::PartitionCreate).len(), 1);
    assert_eq!(events(p4.0, KernelEvent::CapInstall).len(), 2, "each transplanted handle witnessed");
    assert!(hv.arch.console_text().contains("coherence: split of partition 1 'p1': agent 2 moved to partition 4 'p1.a2'"));

    // The departure: the switch said DEPART, the snapshot was taken, and
    // agent 2 made no call in p1 after it.
    let t = trace.borrow();
    let at = t.iter().position(|r| r.call == Hypercall::AgentSwitch && r.x1 == rvm_abi::hypercall::agent_switch::DEPART).expect("DEPART");
    assert_eq!((t[at + 1].call, t[at + 1].status, t[at + 1].x1), (Hypercall::Snapshot, 0, 1));
    let later: Vec<&Ret> = t[at + 2..].iter().filter(|r| r.call == Hypercall::AgentSwitch && (r.status != 0 || r.x1 != 0)).collect();
    assert!(later.is_empty(), "{later:?}");
    drop(t);

    // In p4: the committed item is there, the three queued messages arrive
    // in order, then nothing; its send reaches agent 0; its commit lands in
    // the store it always used.
    let t4 = t4.borrow();
    let got: Vec<(Hypercall, i64)> = t4.iter().map(|r| (r.call, r.status)).collect();
    let would_block = HvError::WouldBlock.code();
    assert_eq!(
        got,
        [
            (Hypercall::StateGet, 0),
            (Hypercall::ChannelRecv, 0),
            (Hypercall::ChannelRecv, 0),
            (Hypercall::ChannelRecv, 0),
            (Hypercall::ChannelRecv, would_block),
            (Hypercall::ChannelSend, 0),
            (Hypercall::StateStage, 0),
            (Hypercall::StateCommit, 0),
        ]
    );
    assert_eq!(t4[0].x1, MSG.len() as u64);
    let store1 = hv.store(p1).unwrap();
    assert!(store1.get(&MSG[..4]).is_some() && store1.get(&MSG[..5]).is_some(), "both commits in the domain's store");
    assert_eq!(hv.partitions[3].state(), crate::partition::PartitionState::Finished);

    // No message lost or duplicated: sent = received + waiting, per channel.
    let ok = |t: &Trace, c: Hypercall| t.borrow().iter().filter(|r| r.call == c && r.status == 0).count() as u64;
    let ok4 = |c: Hypercall| t4.iter().filter(|r| r.call == c && r.status == 0).count() as u64;
    let sent = ok(&trace, Hypercall::ChannelSend) + ok(&t2, Hypercall::ChannelSend) + ok(&t3, Hypercall::ChannelSend) + ok4(Hypercall::ChannelSend);
    let received = ok(&trace, Hypercall::ChannelRecv) + ok(&t2, Hypercall::ChannelRecv) + ok(&t3, Hypercall::ChannelRecv) + ok4(Hypercall::ChannelRecv);
    let delivered: u64 = hv.channels.iter().map(|c| c.delivered()[0] + c.delivered()[1]).sum();
    let waiting: u64 =
        hv.channels.iter().map(|c| (c.pending_for(c.endpoint(0)) + c.pending_for(c.endpoint(1))) as u64).sum();
    assert_eq!(sent, delivered);
    assert_eq!(received + waiting, sent);
    let ch2 = &hv.channels[2];
    assert_eq!(ch2.endpoint(1), crate::channel::Endpoint { partition: p4, slot: crate::channel::AgentSlot(0) });

    // The transplanted handles are the originals' children: the same raw
    // handle in p4; evicting p1 revokes them too.
    let q2_raw = q2;
    assert!(hv.caps.info(p4, q2_raw).is_ok());
    hv.caps.evict(p1);
    assert_eq!(hv.caps.info(p4, q2_raw).err(), Some(HvError::Revoked));
    assert_chains_verify(&hv);
}

/// `first`, then 900 rounds in which agents 0 and 1 chat over `a`/`b` and
/// agent 2 says little (one message on `q2` every 40 rounds, read on `q0`):
/// the traffic that decides agent 2 out of its partition.
fn quiet_third_agent(
    mut calls: Vec<(u16, (Hypercall, [u64; 6]))>,
    a: u64,
    b: u64,
    q0: u64,
    q2: u64,
) -> Vec<(u16, (Hypercall, [u64; 6]))> {
    for n in 0..900 {
        calls.extend([(0, switch(0)), (0, send(a)), (1, switch(1)), (1, recv(b)), (1, send(b)), (0, switch(0)), (0, recv(a))]);
        if n % 40 == 0 {
            calls.extend([(2, switch(2)), (2, send(q2)), (0, switch(0)), (0, recv(q0))]);
        }
    }
    calls
}

#[test]
fn a_refused_hand_over_moves_nothing_and_the_agent_stays() {
    let mut hv = boot(&[3, 1, 1], &[(agent(0, 0), agent(0, 1)), (agent(0, 0), agent(0, 2))], &[(1, 2)], BOOT_FLAG_COHERENCE);
    hv.arch.tick_ns = 1_000_000;
    let h = channel_handles(&hv, 0);
    let (a, b, q0, q2) = (h[0].raw, h[1].raw, h[2].raw, h[3].raw);
    let calls = quiet_third_agent(Vec::new(), a, b, q0, q2);
    let trace: Trace = Rc::default();
    let vmid = hv.partitions[0].vmid();
    // The image lies outside the partition's memory: the snapshot is refused.
    hv.arch.set_guest(vmid, domain_runtime_handing(calls, trace.clone(), [0x10_0000_0000, 16, 0, 0, 0, 0]));
    for idx in [1, 2] {
        let h = channel_handles(&hv, idx)[0].raw;
        let vmid = hv.partitions[idx].vmid();
        hv.arch.set_guest(vmid, guest(chatty_peer(1500, h), Rc::default()));
    }
    hv.run();

    let t = trace.borrow();
    let departs = t.iter().filter(|r| r.call == Hypercall::AgentSwitch && r.x1 == rvm_abi::hypercall::agent_switch::DEPART).count();
    assert!(departs >= 1, "the agent was told to leave");
    let refused: Vec<&Ret> = t.iter().filter(|r| r.call == Hypercall::Snapshot).collect();
    assert_eq!(refused.len(), departs);
    assert!(refused.iter().all(|r| r.status == HvError::BadAddress.code()), "{refused:?}");
    // The agent stayed: it went on sending from p1 after the refusal.
    let at = t.iter().position(|r| r.call == Hypercall::Snapshot).unwrap();
    assert!(t[at..].iter().any(|r| r.call == Hypercall::ChannelSend && r.status == 0));
    drop(t);
    assert_eq!(hv.partitions.len(), 3, "no partition created");
    assert!(hv.domains().moves().is_empty());
    assert_eq!(hv.domains().agents()[2].partition, 0);
    let recs = records(&hv);
    assert!(!recs.iter().any(|(_, r)| r.op == KernelEvent::Split as u16), "no Split witnessed");
    assert!(hv.arch.console_text().contains("coherence: agent 2 stays in its partition: its snapshot was refused"));
    // No snapshot is held anywhere.
    assert!(hv.partitions.iter().all(|p| p.snapshot().is_none()));
    assert_chains_verify(&hv);
}

/// The runtime of a partition that admits an agent: its own agent (slot 0)
/// runs `own` until an `AgentSwitch` reports a second table slot (`x2`);
/// from then on it runs `after`, each call by the agent in its slot. The
/// trace records `(slot, call, status, x1)`; `listed` every `x2`.
fn admitting_runtime(
    own: Vec<(Hypercall, [u64; 6])>,
    after: Vec<(u16, (Hypercall, [u64; 6]))>,
    trace: Rc<RefCell<Vec<(u16, Ret)>>>,
    listed: Rc<RefCell<Vec<u64>>>,
) -> crate::fake::GuestFn {
    let mut own = own.into_iter();
    let mut after = after.into_iter();
    let mut arrived = false;
    let mut last: Option<(u16, Hypercall)> = None;
    Box::new(move |v, m| {
        if let Some((slot, call)) = last.take() {
            let (status, x1) = (v.regs.x[0] as i64, v.regs.x[1]);
            trace.borrow_mut().push((slot, Ret { call, status, x1 }));
            if call == Hypercall::AgentSwitch && status == 0 {
                listed.borrow_mut().push(v.regs.x[2]);
                arrived |= v.regs.x[2] == 2;
            }
        }
        if let Err(f) = m.write(HEAP, MSG) {
            return f.0;
        }
        let next = if arrived { after.next() } else { own.next().map(|c| (0, c)) };
        let (slot, (c, regs)) = next.unwrap_or((0, (Hypercall::Exit, [0; 6])));
        last = Some((slot, c));
        v.regs.x[0] = u64::from(c.function_id());
        v.regs.x[1..7].copy_from_slice(&regs);
        let t: TrapInfo = FakeArch::hvc();
        t
    })
}

/// Two single-agent partitions chatting over one channel, with coherence:
/// each runs the shared runtime with a table of one, so it reaches turn
/// boundaries (`AgentSwitch` 0 before each turn).
fn chatty_turns(rounds: usize, h: u64) -> Vec<(u16, (Hypercall, [u64; 6]))> {
    (0..rounds).flat_map(|_| [(0, switch(0)), (0, send(h)), (0, recv(h)), (0, (Hypercall::Yield, [0; 6]))]).collect()
}

#[test]
fn chatty_partitions_merge_moving_the_agent_its_queue_handles_and_committed_state() {
    let mut hv = boot(&[1, 1], &[], &[(0, 1)], BOOT_FLAG_COHERENCE);
    hv.arch.tick_ns = 1_000_000;
    let (p1, p2) = (hv.partitions[0].id(), hv.partitions[1].id());
    let h1 = channel_handles(&hv, 0)[0].raw;
    let h2 = channel_handles(&hv, 1)[0].raw;
    let store2 = hv.partitions[1].boot_handles()[0].raw;
    // A coherence bundle spreads each partition's handles over its own slots.
    assert_ne!(rvm_abi::CapHandle::from_raw(h1).unwrap().index, rvm_abi::CapHandle::from_raw(h2).unwrap().index);
    for idx in [0, 1] {
        let table = guest_page(&hv, idx, layout::AGENTS_IPA).expect("a table of one");
        assert_eq!(AgentTable::count(&table), 1);
        assert_eq!(bootinfo::agent_count(&guest_page(&hv, idx, layout::BOOTINFO_IPA).unwrap()), 1);
    }
    // p1 chats and, before that, sends three messages p2 never reads in p2.
    let mut own = vec![send(h1), send(h1), send(h1)];
    for _ in 0..1500 {
        own.extend([switch(0), send(h1), recv(h1), (Hypercall::Yield, [0; 6])]);
    }
    // Once the agent arrived (slot 1): it reads what waits for it, sends
    // one message, reads its committed item and commits another; then
    // agent 0 reads what waits for it.
    let mut after: Vec<(u16, (Hypercall, [u64; 6]))> = vec![(1, switch(1))];
    after.extend((0..12).map(|_| (1, recv(h2))));
    after.extend([(1, send(h2)), (1, get(store2, 4)), (1, stage(store2, 5)), (1, commit(store2)), (0, switch(0))]);
    after.extend((0..12).map(|_| (0, recv(h1))));
    let t1: Rc<RefCell<Vec<(u16, Ret)>>> = Rc::default();
    let listed: Rc<RefCell<Vec<u64>>> = Rc::default();
    hv.arch.set_guest(hv.partitions[0].vmid(), admitting_runtime(own, after, t1.clone(), listed.clone()));
    let mut script2 = vec![(0, switch(0)), (0, stage(store2, 4)), (0, commit(store2))];
    script2.extend(chatty_turns(1500, h2));
    let t2: Trace = Rc::default();
    hv.arch.set_guest(hv.partitions[1].vmid(), domain_runtime(script2, t2.clone()));
    let frames_before = hv.frames_in_use();
    hv.run();

    // Decided, then carried out once: p2's agent moved into p1.
    let d = hv.domains();
    let merge = d.decisions().iter().find(|r| r.event == KernelEvent::MergeDecided).expect("a merge decided").clone();
    assert_eq!((merge.partition, merge.other), (p1, Some(p2)), "p2 empties into p1 (the lower id on a tie)");
    assert_eq!(d.moves().len(), 1, "{:?}", d.moves());
    let m = d.moves()[0].clone();
    assert_eq!((m.kind, m.agent, m.from, m.to), (crate::domains::migrate::MoveKind::Merge, AgentId(1), p2, p1));
    assert_eq!((m.channels, m.handles), (1, 2), "its channel end; the store and that channel");
    assert!(m.queued >= 3, "p1's three unread messages waited for it: {m:?}");
    assert_eq!((m.cut, m.internal), (merge.cut, merge.internal));
    let info = d.agents()[1];
    assert_eq!((info.partition, info.slot.0), (0, 1));
    assert!(d.agent_at(1, crate::channel::AgentSlot(0)).is_none());
    // p1's table lists it (its restore length cleared once it ran); p2's is vacated.
    let table = guest_page(&hv, 0, layout::AGENTS_IPA).unwrap();
    assert_eq!(AgentTable::count(&table), 2);
    let e = AgentTable::read(&table, 1).unwrap();
    assert_eq!((e.agent_id, e.restore_len), (1, 0));
    assert!(e.module_ipa > layout::WASM_IPA && e.module_len != 0);
    assert!(d.arrival().is_none(), "the image was returned at its first turn");
    assert!(guest_page(&hv, 0, layout::SNAPSHOT_IPA).is_none(), "and unmapped");
    assert!(listed.borrow().contains(&2), "AgentSwitch reported the second slot");
    // The arrival's handles: listed for slot 1 in p1's boot-info page; p1's own for slot 0.
    let handles = hv.partitions[0].boot_handles();
    assert!(handles.iter().any(|h| h.raw == h2 && h.agent == 2) && handles.iter().any(|h| h.raw == store2 && h.agent == 2));
    assert!(handles.iter().filter(|h| h.raw != h2 && h.raw != store2).all(|h| h.agent == 1));

    // The emptied partition was retired: finished, memory returned.
    assert_eq!(hv.partitions[1].state(), crate::partition::PartitionState::Finished);
    assert!(hv.partitions[1].private_frames().is_empty() && hv.partitions[1].heap_pages().is_empty());
    assert!(hv.frames_in_use() < frames_before + 4, "no frames kept by the move");
    let text = hv.arch.console_text();
    assert!(text.contains("coherence: merge of partition 2 'p2': agent 1 moved to partition 1 'p1'"), "{text}");
    assert!(text.contains("coherence: partition 2 'p2' retired"), "{text}");

    // Witnessed: `Merge` with the decision's values in both logs, after the
    // move: in p2's after its Snapshot call record and before its exit;
    // in p1's after the transplanted handles.
    let recs = records(&hv);
    let log = |l: u32| -> Vec<WitnessRecord> { recs.iter().filter(|(x, _)| *x == l).map(|(_, r)| *r).collect() };
    for l in [p1.0, p2.0] {
        let merges: Vec<WitnessRecord> = log(l).into_iter().filter(|r| r.op == KernelEvent::Merge as u16).collect();
        assert_eq!(merges.len(), 1, "one Merge in log {l}");
        assert_eq!(Decision::parse_witness_args(&merges[0].args), (merge.cut, merge.internal));
    }
    let l2 = log(p2.0);
    let at = l2.iter().position(|r| r.op == KernelEvent::Merge as u16).unwrap();
    assert_eq!(l2[at - 1].op, Hypercall::Snapshot as u16, "after the hand-over's call record");
    assert_eq!(l2.get(at + 1).map(|r| r.op), Some(KernelEvent::PartitionExit as u16), "then the retirement: {:x?}", l2[at - 2..].iter().map(|r| r.op).collect::<Vec<_>>());
    assert_eq!(at + 2, l2.len(), "nothing after");
    let l1 = log(p1.0);
    let at = l1.iter().position(|r| r.op == KernelEvent::Merge as u16).unwrap();
    assert_eq!(l1[at - 2..at].iter().filter(|r| r.op == KernelEvent::CapInstall as u16).count(), 2);

    // The departure in p2: DEPART was the last answer it saw; its
    // snapshot (witnessed above) never returned: it was retired.
    let t = t2.borrow();
    let at = t.iter().position(|r| r.call == Hypercall::AgentSwitch && r.x1 == rvm_abi::hypercall::agent_switch::DEPART).expect("DEPART");
    assert_eq!(t.len(), at + 1, "the retired partition never ran again");
    drop(t);

    // In p1, the arrival: its cached handles work; the queued messages
    // arrive, then nothing; its committed item is there and its new commit
    // lands in p2's store (the store stays where it was).
    let t = t1.borrow();
    let arrival: Vec<(Hypercall, i64)> = t.iter().filter(|(s, _)| *s == 1).map(|(_, r)| (r.call, r.status)).collect();
    assert_eq!(arrival[0], (Hypercall::AgentSwitch, 0));
    let recvs: Vec<i64> = arrival.iter().filter(|(c, _)| *c == Hypercall::ChannelRecv).map(|(_, s)| *s).collect();
    let got = recvs.iter().take_while(|&&s| s == 0).count();
    assert!(got >= 3 && recvs[got..].iter().all(|&s| s == HvError::WouldBlock.code()), "{recvs:?}");
    assert!(arrival.ends_with(&[(Hypercall::ChannelSend, 0), (Hypercall::StateGet, 0), (Hypercall::StateStage, 0), (Hypercall::StateCommit, 0)]), "{arrival:?}");
    let s2 = hv.store(p2).unwrap();
    assert!(s2.get(&MSG[..4]).is_some() && s2.get(&MSG[..5]).is_some(), "both commits in p2's store");
    assert!(hv.store(p1).unwrap().get(&MSG[..5]).is_none());

    // No message lost or duplicated.
    let ok1 = |c: Hypercall| t.iter().filter(|(_, r)| r.call == c && r.status == 0).count() as u64;
    let ok2 = |c: Hypercall| t2.borrow().iter().filter(|r| r.call == c && r.status == 0).count() as u64;
    let sent = ok1(Hypercall::ChannelSend) + ok2(Hypercall::ChannelSend);
    let received = ok1(Hypercall::ChannelRecv) + ok2(Hypercall::ChannelRecv);
    let ch = &hv.channels[0];
    let waiting = (ch.pending_for(ch.endpoint(0)) + ch.pending_for(ch.endpoint(1))) as u64;
    assert_eq!(sent, ch.delivered()[0] + ch.delivered()[1]);
    assert_eq!(received + waiting, sent);
    assert_eq!(waiting, 0, "both read everything");
    assert_eq!(ch.endpoint(1), crate::channel::Endpoint { partition: p1, slot: crate::channel::AgentSlot(1) });
    drop(t);
    assert_chains_verify(&hv);
}

#[test]
fn a_refused_merge_hand_over_moves_nothing() {
    for collide in [false, true] {
        let mut hv = boot(&[1, 1], &[], &[(0, 1)], BOOT_FLAG_COHERENCE);
        hv.arch.tick_ns = 1_000_000;
        let h1 = channel_handles(&hv, 0)[0].raw;
        let h2 = channel_handles(&hv, 1)[0].raw;
        let (p1, p2) = (hv.partitions[0].id(), hv.partitions[1].id());
        let image = if collide {
            // p1 uses the slot of p2's channel handle: that handle cannot
            // keep its slot there, so nothing moves.
            let desc = rvm_abi::bundle::CapDesc {
                kind: ObjectKind::StateStore,
                rights: rvm_abi::Rights::READ,
                tiers: crate::load::tiers_for(rvm_abi::Rights::READ, 1),
                object: p1.0,
                quota: 0,
                expires_at: 0,
                window_start: 0,
                window_len: 0,
                resource_digest: [0; 16],
            };
            let slot = rvm_abi::CapHandle::from_raw(h2).unwrap().index;
            hv.caps.install_at(p1, &desc, slot).unwrap();
            [HEAP, 16, 0, 0, 0, 0]
        } else {
            // The image lies outside the partition's memory: refused.
            [0x10_0000_0000, 16, 0, 0, 0, 0]
        };
        let own: Vec<(Hypercall, [u64; 6])> =
            (0..1500).flat_map(|_| [switch(0), send(h1), recv(h1), (Hypercall::Yield, [0; 6])]).collect();
        hv.arch.set_guest(hv.partitions[0].vmid(), guest(own, Rc::default()));
        let t2: Trace = Rc::default();
        hv.arch.set_guest(hv.partitions[1].vmid(), domain_runtime_handing(chatty_turns(1500, h2), t2.clone(), image));
        hv.run();

        let t = t2.borrow();
        assert!(t.iter().any(|r| r.call == Hypercall::AgentSwitch && r.x1 == rvm_abi::hypercall::agent_switch::DEPART));
        let cks: Vec<&Ret> = t.iter().filter(|r| r.call == Hypercall::Snapshot).collect();
        assert!(!cks.is_empty() && cks.iter().all(|r| r.status != 0), "collide {collide}: {cks:?}");
        // It stayed and went on chatting in p2 after the refusal.
        let at = t.iter().position(|r| r.call == Hypercall::Snapshot).unwrap();
        assert!(t[at..].iter().any(|r| r.call == Hypercall::ChannelSend && r.status == 0));
        drop(t);
        let d = hv.domains();
        assert!(d.moves().is_empty() && d.arrival().is_none());
        assert_eq!(d.agents()[1].partition, 1);
        assert_eq!(AgentTable::count(&guest_page(&hv, 0, layout::AGENTS_IPA).unwrap()), 1);
        assert!(hv.caps.info(p1, h2).is_err() || collide);
        assert_eq!(hv.channels[0].endpoint(1).partition, p2);
        assert_ne!(hv.partitions[1].state(), crate::partition::PartitionState::Evicted);
        assert!(!records(&hv).iter().any(|(_, r)| r.op == KernelEvent::Merge as u16), "no Merge witnessed");
        let why = if collide { "a capability could not be transplanted" } else { "its snapshot was refused" };
        assert!(hv.arch.console_text().contains(&alloc::format!("coherence: agent 1 stays in its partition: {why}")));
        assert!(hv.partitions.iter().all(|p| p.snapshot().is_none()));
        assert_chains_verify(&hv);
    }
}

#[test]
fn a_split_whose_new_partition_does_not_fit_is_refused_and_the_agent_stays() {
    // A split admits a partition: with every frame already promised to the
    // partitions running, the new one cannot reserve its memory, so the
    // move is refused (witnessed, `NoMemory`) and the agent stays.
    let mut hv = boot(&[3, 1, 1], &[(agent(0, 0), agent(0, 1)), (agent(0, 0), agent(0, 2))], &[(1, 2)], BOOT_FLAG_COHERENCE);
    hv.arch.tick_ns = 1_000_000;
    let unpromised = hv.frames.commit(u64::MAX).expect_err("the pool is finite");
    hv.frames.commit(unpromised).unwrap();
    let h = channel_handles(&hv, 0);
    let (a, b, q0, q2) = (h[0].raw, h[1].raw, h[2].raw, h[3].raw);
    let calls = quiet_third_agent(Vec::new(), a, b, q0, q2);
    let trace: Trace = Rc::default();
    let vmid = hv.partitions[0].vmid();
    hv.arch.set_guest(vmid, domain_runtime(calls, trace.clone()));
    for idx in [1, 2] {
        let h = channel_handles(&hv, idx)[0].raw;
        let vmid = hv.partitions[idx].vmid();
        hv.arch.set_guest(vmid, guest(chatty_peer(1500, h), Rc::default()));
    }
    // Were the move carried out, its partition (VMID 4) would just exit.
    hv.arch.set_guest(4, guest(Vec::new(), Rc::default()));
    hv.run();

    let text = hv.arch.console_text();
    assert!(hv.domains().decisions().iter().any(|r| r.event == KernelEvent::SplitDecided), "a split was decided: {text}");
    assert!(hv.domains().moves().is_empty(), "nothing moved: {:?}", hv.domains().moves());
    assert_eq!(hv.domains().agents()[2].partition, 0, "the agent stayed in p1");
    assert!(text.contains("refused: its memory budget does not fit"), "{text}");
    let recs = records(&hv);
    assert!(!recs.iter().any(|(_, r)| r.op == KernelEvent::Split as u16), "no Split witnessed");
    let refused: Vec<&WitnessRecord> = recs.iter().filter(|(_, r)| r.op == KernelEvent::PartitionRefused as u16).map(|(_, r)| r).collect();
    assert!(!refused.is_empty(), "the refused admission is witnessed");
    assert!(refused.iter().all(|r| r.outcome == HvError::NoMemory.outcome_code()), "{refused:?}");
    assert!(hv.frames.frames_committed() <= hv.frames.frames_total(), "never overcommitted");
    assert_chains_verify(&hv);
}
