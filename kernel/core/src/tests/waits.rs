//! Receives that wait: a parked receiver costs no calls and no records
//! until its receive is answered, once, by a send or its deadline; the
//! attacks on a parked call (its partition evicted, a bad buffer, nothing
//! that could ever answer it) change nothing they should not.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;

use rvm_abi::{HvError, Hypercall, ObjectKind};

use super::{boot, call, handle, handles_of, records, status, HEAP};
use crate::partition::PartitionId;

/// `x4` of a receive that waits with no deadline.
const FOREVER: u64 = u64::MAX;

/// Records of `op` in partition `log`'s log, with their outcomes.
fn outcomes(text: &str, log: u32, op: Hypercall) -> alloc::vec::Vec<i16> {
    records(text).into_iter().filter(|(l, r)| *l == log && r.op == op as u16).map(|(_, r)| r.outcome).collect()
}

/// A sender that yields `yields` times (so the receiver parks first), then
/// sends "ping" and exits.
fn sender(yields: u32) -> crate::fake::GuestFn {
    let mut step = 0u32;
    Box::new(move |v, m| {
        step += 1;
        match step {
            s if s <= yields => call(v, Hypercall::Yield, &[]),
            s if s == yields + 1 => {
                if let Err(f) = m.write(HEAP, b"ping") {
                    // The heap page is backed on first touch: again after.
                    step -= 1;
                    return f.0;
                }
                call(v, Hypercall::ChannelSend, &[handle(m, ObjectKind::Channel), HEAP, 4])
            }
            _ => call(v, Hypercall::Exit, &[0]),
        }
    })
}

/// Touch the heap page first (it is backed on first touch), then `then`.
fn touched(m: &mut crate::fake::GuestView<'_>) -> Option<crate::arch::TrapInfo> {
    m.write(HEAP, &[0]).err().map(|f| f.0)
}

#[test]
fn a_waiting_receive_is_answered_by_the_send_with_one_record_and_no_polling() {
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, sender(3));
    // beta: one receive that waits; then it checks the answer and exits.
    let seen: Rc<RefCell<alloc::vec::Vec<(i64, u64, u64)>>> = Rc::default();
    let log = seen.clone();
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        if let Some(fault) = touched(m) {
            return fault;
        }
        step += 1;
        match step {
            1 => call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP + 64, 64, FOREVER]),
            2 => {
                let mut buf = [0u8; 4];
                m.read(HEAP + 64, &mut buf).unwrap();
                assert_eq!(&buf, b"ping");
                log.borrow_mut().push((status(v), v.regs.x[1], v.regs.x[2]));
                call(v, Hypercall::Exit, &[0])
            }
            _ => panic!("beta ran while it waited, or after it exited"),
        }
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 2, "{text}");
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    let (st, len, waited) = seen[0];
    assert_eq!((st, len), (0, 4), "the message, its length");
    assert!(waited > 0, "x2 says how long it waited");
    // One record for the receive, none per poll.
    assert_eq!(outcomes(&text, 2, Hypercall::ChannelWait), [0]);
    let beta = &hv.partitions()[1];
    assert_eq!((beta.stats().hypercalls, beta.stats().denied), (2, 0), "the receive and the exit");
}

#[test]
fn a_deadline_answers_would_block_once_and_it_is_no_denial() {
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    let answer: Rc<RefCell<Option<(i64, u64)>>> = Rc::default();
    let a = answer.clone();
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        step += 1;
        match step {
            1 => call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP + 64, 64, 5_000_000]),
            2 => {
                *a.borrow_mut() = Some((status(v), 0));
                call(v, Hypercall::ClockRead, &[])
            }
            3 => call(v, Hypercall::Exit, &[0]),
            _ => panic!("beta ran after it exited"),
        }
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 2, "the run waited for the deadline: {text}");
    assert_eq!(answer.borrow().map(|(s, _)| s), Some(HvError::WouldBlock.code()));
    assert_eq!(outcomes(&text, 2, Hypercall::ChannelWait), [HvError::WouldBlock.code() as i16]);
    // The answer came at the deadline, not before: the receive's record is
    // 5 ms or more after beta started.
    let recs = records(&text);
    let start = recs.iter().find(|(l, r)| *l == 2 && r.op & 0x8000 != 0).map(|(_, r)| r.timestamp).unwrap();
    let recv = recs.iter().find(|(l, r)| *l == 2 && r.op == Hypercall::ChannelWait as u16).map(|(_, r)| r.timestamp).unwrap();
    assert!(recv - start >= 5_000_000, "answered after {} ns", recv - start);
    assert_eq!(hv.partitions()[1].stats().denied, 0, "waiting is not a refusal");
}

#[test]
fn a_sleep_parks_until_its_deadline_with_one_record_even_when_a_message_comes() {
    // alpha sends beta a message while beta sleeps: a sleep waits on no
    // channel, so the message does not end it.
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, sender(3));
    let answer: Rc<RefCell<alloc::vec::Vec<i64>>> = Rc::default();
    let a = answer.clone();
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, _| {
        step += 1;
        match step {
            1 => call(v, Hypercall::WaitAny, &[0, 0, 5_000_000]),
            2 => {
                a.borrow_mut().push(status(v));
                call(v, Hypercall::Exit, &[0])
            }
            _ => panic!("beta ran while it slept, or after it exited"),
        }
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 2, "{text}");
    assert_eq!(answer.borrow().as_slice(), [HvError::WouldBlock.code()], "the deadline answered it");
    assert_eq!(outcomes(&text, 2, Hypercall::WaitAny), [HvError::WouldBlock.code() as i16], "one record");
    let recs = records(&text);
    let start = recs.iter().find(|(l, r)| *l == 2 && r.op & 0x8000 != 0).map(|(_, r)| r.timestamp).unwrap();
    let woke = recs.iter().find(|(l, r)| *l == 2 && r.op == Hypercall::WaitAny as u16).map(|(_, r)| r.timestamp).unwrap();
    let sent = recs.iter().find(|(l, r)| *l == 1 && r.op == Hypercall::ChannelSend as u16).map(|(_, r)| r.timestamp).unwrap();
    assert!(sent < woke && woke - start >= 5_000_000, "slept through the message until its deadline");
    assert_eq!(hv.partitions()[1].stats().denied, 0, "a sleep is not a refusal");
}

#[test]
fn a_receive_that_waits_on_a_channel_nobody_can_send_to_ends_the_run() {
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        step += 1;
        assert_eq!(step, 1, "beta ran again without an answer");
        call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP, 64, FOREVER])
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!((summary.finished, summary.stopped), (1, 1), "{text}");
    assert!(text.contains("stopping beta (waiting for a message)"), "{text}");
    assert!(outcomes(&text, 2, Hypercall::ChannelWait).is_empty(), "an unanswered receive has no record");
}

#[test]
fn an_evicted_receiver_is_not_answered_and_its_memory_not_written() {
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, sender(0));
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        step += 1;
        assert_eq!(step, 1, "beta runs only once");
        call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP, 64, FOREVER])
    }));
    hv.run_slice(1);
    assert!(hv.partitions()[1].waiting().is_some(), "beta parked");
    crate::orders::evict(&mut hv, PartitionId(2)).unwrap();
    assert!(hv.partitions()[1].waiting().is_none(), "the eviction took its wait with it");
    hv.run_slice(0);
    let text = hv.arch.console_text();
    assert_eq!(outcomes(&text, 1, Hypercall::ChannelSend), [0], "alpha's send went into the queue");
    assert!(outcomes(&text, 2, Hypercall::ChannelWait).is_empty(), "no answer to an evicted partition: {text}");
}

#[test]
fn a_parked_receive_into_a_buffer_it_cannot_write_is_refused_when_answered() {
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, sender(2));
    let answer: Rc<RefCell<Option<i64>>> = Rc::default();
    let a = answer.clone();
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        step += 1;
        match step {
            // The boot-info page is read-only to the guest.
            1 => call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), rvm_abi::bootinfo::layout::BOOTINFO_IPA, 64, FOREVER]),
            2 => {
                *a.borrow_mut() = Some(status(v));
                call(v, Hypercall::Exit, &[0])
            }
            _ => panic!("beta ran after it exited"),
        }
    }));
    hv.run();
    let text = hv.arch.console_text();
    let refused = answer.borrow().expect("beta was answered");
    assert!(refused < 0, "a read-only buffer is refused: {refused}");
    assert_eq!(outcomes(&text, 2, Hypercall::ChannelWait), [refused as i16]);
}

#[test]
fn on_two_cpus_a_send_wakes_the_receiver_parked_on_the_other() {
    let mut hv = boot(&["alpha", "beta"], true);
    hv.arch.set_guest(1, sender(5));
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        if let Some(fault) = touched(m) {
            return fault;
        }
        step += 1;
        match step {
            1 => call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP + 64, 64, FOREVER]),
            2 => {
                assert_eq!((status(v), v.regs.x[1]), (0, 4));
                call(v, Hypercall::Exit, &[0])
            }
            _ => panic!("beta ran while it waited, or after it exited"),
        }
    }));
    let summary = hv.run_on_cpus(2);
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 2, "{text}");
    assert_eq!(outcomes(&text, 2, Hypercall::ChannelWait), [0]);
}

#[test]
fn an_idle_secondary_sleeps_until_a_deadline_or_a_kick_and_the_boot_cpu_keeps_its_tick() {
    // alpha (CPU 0) spins through 20 slices, then exits; beta (CPU 1) waits
    // 20 ms for a message that never comes, then exits.
    let mut hv = boot(&["alpha", "beta"], true);
    let slice = hv.policy.slice_ns;
    let mut slices = 0;
    hv.arch.set_guest(1, Box::new(move |v, _| {
        slices += 1;
        if slices < 20 { crate::fake::FakeArch::timer() } else { call(v, Hypercall::Exit, &[0]) }
    }));
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        step += 1;
        match step {
            1 => call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP + 64, 64, 20_000_000]),
            _ => call(v, Hypercall::Exit, &[0]),
        }
    }));
    let summary = hv.run_on_cpus(2);
    assert_eq!(summary.finished, 2, "{}", hv.arch.console_text());
    let waits = hv.arch.idle_waits();
    let cpu1: alloc::vec::Vec<u64> = waits.iter().filter(|w| w.0 == crate::arch::CpuId(1)).map(|&(_, now, until)| until - now).collect();
    let longest = cpu1.iter().copied().max().unwrap_or(0);
    assert!(longest > slice, "CPU 1 slept past its tick, to beta's deadline: at most {longest} ns");
    assert!(longest <= 20_000_000, "never past the deadline: {longest} ns");
    let cpu0 = waits.iter().filter(|w| w.0 == crate::arch::CpuId(0));
    assert!(cpu0.clone().all(|&(_, now, until)| until - now <= slice), "the boot CPU keeps its tick");
}

/// Three partitions: alpha and gamma each joined to beta by a channel.
fn three() -> crate::state::Hypervisor<crate::fake::FakeArch> {
    super::boot_with_channels(&["alpha", "beta", "gamma"], &[(0, 1), (2, 1)])
}

#[test]
fn wait_any_is_answered_by_a_message_on_any_listed_channel_with_its_position() {
    let mut hv = three();
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    hv.arch.set_guest(3, sender(3));
    let seen: Rc<RefCell<alloc::vec::Vec<(i64, u64)>>> = Rc::default();
    let log = seen.clone();
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        if let Some(fault) = touched(m) {
            return fault;
        }
        step += 1;
        let chans = handles_of(m, ObjectKind::Channel);
        match step {
            1 => {
                // The list: its channel to alpha, then its channel to gamma.
                let list: alloc::vec::Vec<u8> = chans.iter().flat_map(|h| h.to_le_bytes()).collect();
                m.write(HEAP + 256, &list).unwrap();
                call(v, Hypercall::WaitAny, &[HEAP + 256, chans.len() as u64, FOREVER])
            }
            2 => {
                log.borrow_mut().push((status(v), v.regs.x[1]));
                // The message stays queued for a receive.
                call(v, Hypercall::ChannelRecv, &[chans[1], HEAP + 64, 64])
            }
            3 => {
                log.borrow_mut().push((status(v), v.regs.x[1]));
                call(v, Hypercall::Exit, &[0])
            }
            _ => panic!("beta ran while it waited, or after it exited"),
        }
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 3, "{text}");
    assert_eq!(seen.borrow().as_slice(), [(0, 1), (0, 4)], "gamma's channel, second in the list; then its 4-byte message");
    assert_eq!(outcomes(&text, 2, Hypercall::WaitAny), [0], "one record for the wait");
}

#[test]
fn wait_any_refuses_bad_lists_and_handles_that_are_no_readable_channels() {
    let mut hv = three();
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    hv.arch.set_guest(3, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    let seen: Rc<RefCell<alloc::vec::Vec<i64>>> = Rc::default();
    let log = seen.clone();
    let mut step = 0;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        if let Some(fault) = touched(m) {
            return fault;
        }
        step += 1;
        if step > 1 {
            log.borrow_mut().push(status(v));
        }
        let chans = handles_of(m, ObjectKind::Channel);
        let store = handle(m, ObjectKind::StateStore);
        let mut list: alloc::vec::Vec<u8> = chans.iter().flat_map(|h| h.to_le_bytes()).collect();
        list.extend_from_slice(&store.to_le_bytes());
        m.write(HEAP + 256, &list).unwrap();
        match step {
            // No handles and no deadline (a sleep nothing would end); more
            // than 16; a list outside its memory; a state store among the
            // channels; then just looking (nothing queued).
            1 => call(v, Hypercall::WaitAny, &[HEAP + 256, 0, FOREVER]),
            2 => call(v, Hypercall::WaitAny, &[HEAP + 256, 17, 0]),
            3 => call(v, Hypercall::WaitAny, &[0x10, 2, 0]),
            4 => call(v, Hypercall::WaitAny, &[HEAP + 256, 3, FOREVER]),
            5 => call(v, Hypercall::WaitAny, &[HEAP + 256, 2, 0]),
            _ => call(v, Hypercall::Exit, &[0]),
        }
    }));
    hv.run();
    let text = hv.arch.console_text();
    let seen = seen.borrow();
    assert_eq!(&seen[..2], [HvError::InvalidArgument.code(), HvError::InvalidArgument.code()]);
    assert!(seen[2] < 0, "a list it cannot read is refused");
    assert!(seen[3] < 0 && seen[3] != HvError::WouldBlock.code(), "a store is no channel: {}", seen[3]);
    assert_eq!(seen[4], HvError::WouldBlock.code(), "nothing queued, no wait");
    assert_eq!(outcomes(&text, 2, Hypercall::WaitAny).len(), 5, "each call one record");
}
