//! The `Dormant` tier on the fake machine: an idle Dormant-tier partition
//! is snapshoted and its memory returned; a message wakes it from the
//! pristine image and the snapshot, with its state and the message intact.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use rvm_abi::bundle::MemoryTier;
use rvm_abi::recovery::DormantArgs;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, ObjectKind};

use crate::fake::FakeArch;
use crate::partition::{PartitionId, PartitionState};
use crate::tests::orders::{assert_chains_verify, boot, events, runtime, shared, Part, DATA, HEAP};

/// A Dormant-tier agent: its first start commits an item, finds its inbox
/// empty, asks `Idle`, snapshots its heap and sleeps (`asleep` set just
/// before). Woken, it reports what it restored, receives, answers, and
/// finishes.
fn sleeper(asleep: Rc<RefCell<bool>>, log: Rc<RefCell<Vec<String>>>) -> crate::fake::GuestFn {
    sleeper_receiving(Hypercall::ChannelRecv, asleep, log)
}

/// [`sleeper`], finding its inbox empty with `recv`: `ChannelRecv`, or a
/// `ChannelWait` with no deadline.
fn sleeper_receiving(recv: Hypercall, asleep: Rc<RefCell<bool>>, log: Rc<RefCell<Vec<String>>>) -> crate::fake::GuestFn {
    runtime(Box::new(move |g| {
        let ch = g.handle(ObjectKind::Channel);
        let store = g.handle(ObjectKind::StateStore);
        match (g.start, g.step) {
            (0, 0) => {
                g.m.write(HEAP, b"turn-041").unwrap();
                g.m.write(HEAP + 0x100, b"41").unwrap();
                g.m.write(DATA, &[0xdd; 16]).unwrap();
                g.call(Hypercall::StateStage, &[store, HEAP, 4, HEAP + 0x100, 2])
            }
            (0, 1) => g.call(Hypercall::StateCommit, &[store]),
            (0, 2) => g.call(recv, &[ch, HEAP + 0x800, 64, u64::MAX]),
            (0, 3) => {
                log.borrow_mut().push(alloc::format!("recv {}", HvError::from_code(g.status()).map_or("ok", HvError::name)));
                g.call(Hypercall::Idle, &[0])
            }
            (0, 4) => {
                log.borrow_mut().push(alloc::format!("may sleep {}", g.result(0)));
                g.call(Hypercall::Snapshot, &[HEAP, 8, 0, 0])
            }
            (0, 5) => {
                let id = g.result(0);
                *asleep.borrow_mut() = true;
                g.call(Hypercall::Idle, &[id])
            }
            (0, n) => panic!("a dormant guest ran again (step {n}, status {})", g.status()),
            (1, 0) => {
                let (mut image, mut data, mut heap) = ([0u8; 8], [0u8; 16], [0xffu8; 8]);
                g.m.read(g.restore.image_ipa, &mut image).unwrap();
                g.m.read(DATA, &mut data).unwrap();
                g.m.read(HEAP, &mut heap).unwrap();
                log.borrow_mut().push(alloc::format!(
                    "woken from {} image {} data reset {} heap zero {}",
                    g.restore.snapshot_id,
                    core::str::from_utf8(&image).unwrap_or("?"),
                    data != [0xdd; 16],
                    heap == [0; 8]
                ));
                g.m.write(HEAP, b"turn").unwrap();
                g.call(Hypercall::StateGet, &[store, HEAP, 4, HEAP + 0x100, 16])
            }
            (1, 1) => {
                let mut v = [0u8; 2];
                g.m.read(HEAP + 0x100, &mut v).unwrap();
                log.borrow_mut().push(alloc::format!("store turn {}", core::str::from_utf8(&v).unwrap_or("?")));
                g.call(Hypercall::ChannelRecv, &[ch, HEAP + 0x800, 64])
            }
            (1, 2) => {
                let n = g.result(0) as usize;
                let mut msg = alloc::vec![0u8; n.min(64)];
                g.m.read(HEAP + 0x800, &mut msg).unwrap();
                log.borrow_mut().push(alloc::format!("got {}", core::str::from_utf8(&msg).unwrap_or("?")));
                g.call(Hypercall::ChannelRecv, &[ch, HEAP + 0x800, 64])
            }
            (1, 3) => {
                log.borrow_mut().push(alloc::format!("then {}", HvError::from_code(g.status()).map_or("ok", HvError::name)));
                g.m.write(HEAP + 0x900, b"pong").unwrap();
                g.call(Hypercall::ChannelSend, &[ch, HEAP + 0x900, 4])
            }
            (1, _) => g.exit(0),
            (s, n) => panic!("unexpected start {s} step {n}"),
        }
    }))
}

/// A peer that waits until the sleeper is asleep (spending its slices),
/// sends `ping` when `send` says so, and waits for the answer.
fn peer(asleep: Rc<RefCell<bool>>, send: bool, log: Rc<RefCell<Vec<String>>>) -> crate::fake::GuestFn {
    // 0: waiting for the sleeper; 1: `ping` sent; 2: receiving.
    let mut phase = 0u8;
    runtime(Box::new(move |g| {
        let ch = g.handle(ObjectKind::Channel);
        match phase {
            0 if !*asleep.borrow() => FakeArch::timer(),
            0 if !send => g.exit(0),
            0 => {
                phase = 1;
                g.m.write(HEAP, b"ping").unwrap();
                g.call(Hypercall::ChannelSend, &[ch, HEAP, 4])
            }
            1 => {
                assert_eq!(g.status(), 0, "ping sent");
                phase = 2;
                g.call(Hypercall::ChannelRecv, &[ch, HEAP + 0x800, 64])
            }
            _ if g.status() == 0 => {
                let mut msg = [0u8; 4];
                g.m.read(HEAP + 0x800, &mut msg).unwrap();
                log.borrow_mut().push(alloc::format!("peer got {}", core::str::from_utf8(&msg).unwrap_or("?")));
                g.exit(0)
            }
            _ => g.call(Hypercall::ChannelRecv, &[ch, HEAP + 0x800, 64]),
        }
    }))
}

/// What the sleeper and its peer log when the sleeper finds its inbox
/// empty, sleeps, and is woken by the peer's `ping`.
const SLEPT_AND_WOKEN: [&str; 7] = [
    "recv WouldBlock",
    "may sleep 1",
    "woken from 1 image turn-041 data reset true heap zero true",
    "store turn 41",
    "got ping",
    "then WouldBlock",
    "peer got pong",
];

fn dormant_pair() -> (crate::state::Hypervisor<FakeArch>, Vec<u8>) {
    boot(&[Part::new("sleeper").tier(MemoryTier::Dormant), Part::new("peer")], &[(0, 1)], true)
}

#[test]
fn an_idle_dormant_partition_returns_its_memory_and_keeps_what_it_needs() {
    let (mut hv, _) = dormant_pair();
    let booted = hv.frames_in_use();
    let (asleep, flag) = shared::<bool>();
    let (log, seen) = shared::<Vec<String>>();
    hv.arch.set_guest(1, sleeper(asleep, log.clone()));
    hv.arch.set_guest(2, peer(flag, false, log));
    hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Dormant);
    assert_eq!(*seen.borrow(), ["recv WouldBlock", "may sleep 1"]);
    let d = hv.dormancy(PartitionId(1));
    assert_eq!((d.sleeps, d.wakes), (1, 0));
    // Returned: two heap pages, two runtime data pages, the boot-info page
    // and the stage-2 tables beyond an empty root. Kept: the module's two
    // pages and the one-page snapshot.
    let least: u64 = 2 + 2 + 1 + 1;
    assert!(d.last_reclaimed >= least, "reclaimed {}", d.last_reclaimed);
    assert!(hv.frames_in_use() < booted, "{} frames in use now, {booted} at boot", hv.frames_in_use());
    let p = &hv.partitions()[0];
    assert_eq!(p.private_frames().len(), 2, "only the module's frames stay");
    assert!(p.heap_pages().is_empty());
    assert_eq!(hv.store(PartitionId(1)).unwrap().committed_items(), 1, "the committed store stays");
    let ev = events(&hv, 1, &[KernelEvent::DormantEnter]);
    assert_eq!(ev.len(), 1);
    let a = DormantArgs::from_bytes(&ev[0].1.args);
    assert_eq!((u64::from(a.frames), a.committed_items, a.snapshot_id), (d.last_reclaimed, 1, 1));
    assert!(hv.arch.console_text().contains("rvm: partition 1 'sleeper' dormant on snapshot 1"));
    assert_chains_verify(&hv);
}

#[test]
fn a_message_wakes_a_dormant_partition_from_its_snapshot_and_is_received_exactly_once() {
    let (mut hv, _) = dormant_pair();
    let (asleep, flag) = shared::<bool>();
    let (log, seen) = shared::<Vec<String>>();
    hv.arch.set_guest(1, sleeper(asleep, log.clone()));
    hv.arch.set_guest(2, peer(flag, true, log));
    let summary = hv.run();
    assert_eq!(summary.finished, 2, "{}", hv.arch.console_text());
    assert_eq!(
        *seen.borrow(),
        SLEPT_AND_WOKEN
    );
    let d = hv.dormancy(PartitionId(1));
    assert_eq!((d.sleeps, d.wakes), (1, 1));
    assert!(d.last_restored > 0);
    let ev = events(&hv, 1, &[KernelEvent::DormantEnter, KernelEvent::DormantExit]);
    assert_eq!(ev.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [KernelEvent::DormantEnter, KernelEvent::DormantExit]);
    assert_eq!(DormantArgs::from_bytes(&ev[1].1.args).snapshot_id, 1);
    assert!(hv.arch.console_text().contains("rvm: partition 1 'sleeper' woken by a message"));
    assert_chains_verify(&hv);
}

#[test]
fn only_dormant_tier_partitions_sleep_and_only_on_their_last_snapshot() {
    let (mut hv, _) = boot(&[Part::new("warm"), Part::new("sleeper").tier(MemoryTier::Dormant)], &[], true);
    let (log, seen) = shared::<Vec<String>>();
    let l2 = log.clone();
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| match g.step {
            0 => g.call(Hypercall::Idle, &[0]),
            1 => {
                log.borrow_mut().push(alloc::format!("warm may sleep {}", g.result(0)));
                g.call(Hypercall::Snapshot, &[HEAP, 8, 0, 0])
            }
            2 => g.call(Hypercall::Idle, &[1]),
            _ => {
                log.borrow_mut().push(alloc::format!("warm idle {}", HvError::from_code(g.status()).map_or("ok", HvError::name)));
                g.exit(0)
            }
        })),
    );
    hv.arch.set_guest(
        2,
        runtime(Box::new(move |g| match g.step {
            0 => g.call(Hypercall::Snapshot, &[HEAP, 8, 0, 0]),
            1 => g.call(Hypercall::Idle, &[2]),
            _ => {
                l2.borrow_mut().push(alloc::format!("stale id {}", HvError::from_code(g.status()).map_or("ok", HvError::name)));
                g.exit(0)
            }
        })),
    );
    hv.run();
    assert_eq!(*seen.borrow(), ["warm may sleep 0", "warm idle NotSupported", "stale id InvalidArgument"]);
    assert_eq!(hv.partitions()[0].state(), PartitionState::Finished);
    assert_eq!(hv.partitions()[1].state(), PartitionState::Finished);
}

#[test]
fn a_warm_partition_that_waited_as_long_as_its_manifest_allows_sleeps_and_a_message_wakes_it() {
    // The sleeper is Warm, may sleep after 5 ms of waiting, and waits for a
    // message with no deadline; the peer sends once it is asleep.
    let parts = [Part::new("sleeper").dormant_after_ms(5), Part::new("peer")];
    let (mut hv, _) = boot(&parts, &[(0, 1)], true);
    let (asleep, flag) = shared::<bool>();
    let (log, seen) = shared::<Vec<String>>();
    hv.arch.set_guest(1, sleeper_receiving(Hypercall::ChannelWait, asleep, log.clone()));
    hv.arch.set_guest(2, peer(flag, true, log));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 2, "{text}");
    assert_eq!(
        *seen.borrow(),
        SLEPT_AND_WOKEN
    );
    let d = hv.dormancy(PartitionId(1));
    assert_eq!((d.sleeps, d.wakes), (1, 1));
    // One record for the wait, 5 ms or more after it began.
    let recs: Vec<_> = crate::tests::records(&text).into_iter().filter(|(l, _)| *l == 1).map(|(_, r)| r).collect();
    let waits: Vec<_> = recs.iter().filter(|r| r.op == Hypercall::ChannelWait as u16).collect();
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].outcome, HvError::WouldBlock.outcome_code());
    let committed = recs.iter().find(|r| r.op == Hypercall::StateCommit as u16).unwrap();
    assert!(waits[0].timestamp - committed.timestamp >= 5_000_000, "it waited its 5 ms first");
    assert_chains_verify(&hv);
}

#[test]
fn a_warm_partition_without_the_policy_waits_and_never_sleeps() {
    // No `dormant_after_ms`: the wait lasts until the message, and the
    // sleeper's `Idle` question is answered no.
    let (mut hv, _) = boot(&[Part::new("sleeper"), Part::new("peer")], &[(0, 1)], true);
    let (log, seen) = shared::<Vec<String>>();
    let l2 = log.clone();
    let mut step = 0;
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            let ch = g.handle(ObjectKind::Channel);
            step += 1;
            match step {
                1 => g.call(Hypercall::ChannelWait, &[ch, HEAP + 0x800, 64, u64::MAX]),
                2 => {
                    log.borrow_mut().push(alloc::format!("recv {}", HvError::from_code(g.status()).map_or("ok", HvError::name)));
                    g.call(Hypercall::Idle, &[0])
                }
                _ => {
                    log.borrow_mut().push(alloc::format!("may sleep {}", g.result(0)));
                    g.exit(0)
                }
            }
        })),
    );
    // The peer spends 50 ms of slices, then sends.
    let mut slices = 0;
    hv.arch.set_guest(
        2,
        runtime(Box::new(move |g| {
            slices += 1;
            match slices {
                n if n < 5 => FakeArch::timer(),
                5 => {
                    g.m.write(HEAP, b"ping").unwrap();
                    let ch = g.handle(ObjectKind::Channel);
                    g.call(Hypercall::ChannelSend, &[ch, HEAP, 4])
                }
                _ => {
                    l2.borrow_mut().push("peer sent".into());
                    g.exit(0)
                }
            }
        })),
    );
    hv.run();
    let seen = seen.borrow();
    assert!(seen.contains(&"recv ok".into()) && seen.contains(&"may sleep 0".into()), "{seen:?}");
    assert_eq!(hv.dormancy(PartitionId(1)).sleeps, 0);
}

#[test]
fn an_operator_may_evict_a_dormant_partition() {
    let (mut hv, bundle) = dormant_pair();
    let (asleep, flag) = shared::<bool>();
    hv.arch.set_guest(1, sleeper(asleep, Rc::default()));
    hv.arch.set_guest(2, peer(flag, false, Rc::default()));
    hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Dormant);
    let dormant_frames = hv.frames_in_use();
    let line = crate::tests::orders::order_line(&bundle, &crate::tests::orders::OPERATOR_SEED, rvm_abi::frame::OrderKind::Evict, 1, "sleeper");
    hv.arch.type_input(line.as_bytes());
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Evicted);
    assert!(hv.frames_in_use() < dormant_frames, "module and snapshot returned");
    assert_chains_verify(&hv);
}
