//! The input journal (`rvm_abi::journal`): with the bundle's
//! [`BOOT_FLAG_JOURNAL`] set, every witnessed hypercall of a partition is
//! followed on the console by an `@J` frame carrying its registers, its
//! status and results, and the bytes its record's `args` digest covers; a
//! partition's start is followed by one carrying the handles it started
//! with (bound to its `PartitionStart` record). A host replayer reads the
//! journal beside the log and re-executes the agent.
//!
//! Dispatch calls in here at three points: when a call's [`Witnessed`] is
//! built ([`Journal::on`]: whether buffer bytes must be kept), after a
//! witnessed call set its return registers ([`call`]), and when a partition
//! starts ([`start_args`], [`started`]).
//!
//! [`Witnessed`]: crate::dispatch


use rvm_abi::bootinfo::HandleInfo;
use rvm_abi::bundle::BootConfig;
use rvm_abi::control::Outgoing;
use rvm_abi::journal::{CallEntry, BOOT_FLAG_JOURNAL};

use crate::arch::Arch;

/// Whether the run journals its partitions' inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    on: bool,
}

impl Journal {
    /// As the bundle's boot configuration says.
    pub fn from_config(c: &BootConfig) -> Self {
        Self { on: c.flags & BOOT_FLAG_JOURNAL != 0 }
    }

    /// Whether entries are written.
    pub fn on(self) -> bool {
        self.on
    }
}

/// What a witnessed call leaves for its journal entry.
pub(crate) struct CallInput<'a> {
    /// The record's sequence number.
    pub seq: u64,
    pub regs: &'a [u64; 6],
    /// The bytes the record's digest covers after the registers.
    pub data: &'a [u8],
}

/// Write the journal entry of a witnessed call of log `log` whose return
/// registers are now `status` and `results` (nothing when journaling is off).
pub(crate) fn call(journal: Journal, arch: &mut dyn Arch, log: u32, input: &CallInput<'_>, status: i64, results: &[u64]) {
    if !journal.on() {
        return;
    }
    let mut r = [0u64; 3];
    for (slot, v) in r.iter_mut().zip(results) {
        *slot = *v;
    }
    let entry = CallEntry { seq: input.seq, regs: *input.regs, status, results: r, data: input.data };
    arch.send_frame(&Outgoing::JournalCall { log, entry: &entry });
}

/// The `args` of a `PartitionStart` record: the binding digest of the
/// handles the partition starts with (written whether or not the run
/// journals, so the record means the same in every run).
pub(crate) fn start_args(handles: &[HandleInfo]) -> [u8; 16] {
    rvm_state::digest::of_start(handles)
}

/// A partition has just started: its `PartitionStart` record is record
/// `seq` of log `log`. Write the start entry with its handles.
pub(crate) fn started(journal: Journal, arch: &mut dyn Arch, log: u32, seq: u64, handles: &[HandleInfo]) {
    if !journal.on() {
        return;
    }
    arch.send_frame(&Outgoing::JournalStart { log, seq, handles });
}

#[cfg(test)]
mod tests {
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use rvm_abi::bootinfo::{layout, BootInfo};
    use rvm_abi::bundle::{BootConfig, BundleWriter, ChannelDesc, EntryKind, GLOBAL};
    use rvm_abi::frame::Frame;
    use rvm_abi::journal::{Entry, JournalFrame, BOOT_FLAG_JOURNAL};
    use rvm_abi::witness::{flags, KernelEvent};
    use rvm_abi::{HvError, Hypercall, ObjectKind, WitnessRecord};

    use crate::memory::addr::{PhysAddr, PhysRange};
    use crate::arch::TrapInfo;
    use crate::fake::{FakeArch, GuestView};
    use crate::memory::frames::FrameAllocator;
    use crate::state::Hypervisor;
    use crate::running::vcpu::Vcpu;

    const HEAP: u64 = layout::HEAP_IPA;

    fn bundle(flags: u32) -> Vec<u8> {
        let mut w = BundleWriter::new();
        let runtime = crate::load::elf::tests::build(0x4000_0000, &[(0x4000_0000, 5, 64, 64), (0x4000_1000, 6, 16, 0x2000)]);
        w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime);
        w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
        w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 50, flags, ..BootConfig::DEFAULT }.to_bytes());
        for name in ["alpha", "beta"] {
            let i = w.partition(&crate::tests::desc(name));
            w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
        }
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: 0, b: 1, capacity: 4 }.to_bytes());
        w.finish()
    }

    fn call(v: &mut Vcpu, c: Hypercall, args: &[u64]) -> TrapInfo {
        v.regs.x[0] = u64::from(c.function_id());
        for (i, a) in args.iter().enumerate() {
            v.regs.x[1 + i] = *a;
        }
        FakeArch::hvc()
    }

    fn handle(view: &GuestView<'_>, kind: ObjectKind) -> u64 {
        let mut page = [0u8; 4096];
        view.read(layout::BOOTINFO_IPA, &mut page).unwrap();
        let info = BootInfo::read(&page).unwrap();
        (0..info.handle_count as usize)
            .filter_map(|n| BootInfo::read_handle(&page, n))
            .find(|h| h.kind == kind as u8)
            .map(|h| h.raw)
            .unwrap()
    }

    /// alpha: receive (nothing yet: `WouldBlock`), read the clock, stage and
    /// commit, send "ping", exit. beta: receive until "ping" arrives, exit.
    fn run(flags: u32) -> alloc::string::String {
        let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
        let mut hv = Hypervisor::boot(FakeArch::new(), frames, &bundle(flags)).unwrap();
        let mut step = 0;
        hv.arch.set_guest(1, Box::new(move |v, m| {
            step += 1;
            match step {
                1 => {
                    if let Err(f) = m.write(HEAP, &[0; 8]) {
                        step -= 1;
                        return f.0;
                    }
                    call(v, Hypercall::ChannelRecv, &[handle(m, ObjectKind::Channel), HEAP, 64])
                }
                2 => {
                    assert_eq!(v.regs.x[0] as i64, HvError::WouldBlock.code());
                    call(v, Hypercall::ClockRead, &[])
                }
                3 => {
                    // The heap is mapped on first touch: fault, then retry.
                    if let Err(f) = m.write(HEAP, b"keyvalue") {
                        step -= 1;
                        return f.0;
                    }
                    call(v, Hypercall::StateStage, &[handle(m, ObjectKind::StateStore), HEAP, 3, HEAP + 3, 5])
                }
                4 => call(v, Hypercall::StateCommit, &[handle(m, ObjectKind::StateStore)]),
                5 => {
                    m.write(HEAP + 64, b"ping").unwrap();
                    call(v, Hypercall::ChannelSend, &[handle(m, ObjectKind::Channel), HEAP + 64, 4])
                }
                _ => call(v, Hypercall::Exit, &[0]),
            }
        }));
        let mut got = false;
        hv.arch.set_guest(2, Box::new(move |v, m| {
            if got || (v.regs.x[0] == 0 && v.regs.x[1] == 4) {
                got = true;
                return call(v, Hypercall::Exit, &[0]);
            }
            if let Err(f) = m.write(HEAP, &[0; 8]) {
                return f.0;
            }
            call(v, Hypercall::ChannelRecv, &[handle(m, ObjectKind::Channel), HEAP, 64])
        }));
        let summary = hv.run();
        assert_eq!(summary.finished, 2, "{}", hv.arch.console_text());
        hv.arch.console_text()
    }

    fn digest(parts: &[&[u8]]) -> [u8; 16] {
        rvm_state::digest::of_parts(parts)
    }

    #[test]
    fn every_witnessed_call_has_an_entry_that_recomputes_its_record() {
        let text = run(BOOT_FLAG_JOURNAL);
        let mut records: BTreeMap<(u32, u64), WitnessRecord> = BTreeMap::new();
        for f in text.lines().filter_map(Frame::parse) {
            if let Frame::Record { log, bytes } = f {
                let r = WitnessRecord::from_bytes(&bytes).unwrap();
                records.insert((log, r.seq), r);
            }
        }
        let entries: Vec<JournalFrame> = text.lines().filter(|l| l.starts_with("@J ")).map(|l| JournalFrame::parse(l).expect("an entry decodes")).collect();
        let mut bound = 0;
        for f in &entries {
            let r = records[&(f.log, f.entry.seq())];
            match &f.entry {
                Entry::Call { regs, status, data, .. } => {
                    assert_eq!(r.flags & flags::KERNEL_EVENT, 0);
                    assert_ne!(r.flags & flags::JOURNALED, 0, "the record says it has an entry");
                    assert_eq!(i64::from(r.outcome), *status);
                    assert_eq!(digest(&[&rvm_abi::journal::regs_bytes(regs), data]), r.args, "entry for {:?}", r);
                }
                Entry::Start { handles, .. } => {
                    assert_eq!(r.op, KernelEvent::PartitionStart as u16);
                    assert_eq!(handles.len(), 2, "a channel and the state store");
                    let mut input = Vec::new();
                    rvm_abi::journal::start_digest_input(&mut |b: &[u8]| input.extend_from_slice(b), handles);
                    assert_eq!(digest(&[&input]), r.args);
                }
            }
            bound += 1;
        }
        // Every call record of the partitions' logs has its entry.
        let calls = records.iter().filter(|((log, _), r)| *log != 0 && r.flags & flags::KERNEL_EVENT == 0).count();
        let starts = records.values().filter(|r| r.op == KernelEvent::PartitionStart as u16).count();
        assert_eq!(bound, calls + starts);
        assert_eq!(starts, 2);
        // The data each call carried into or out of the guest.
        let data_of = |log: u32, call: Hypercall| -> Vec<(i64, Vec<u8>, [u64; 3])> {
            entries
                .iter()
                .filter(|f| f.log == log)
                .filter_map(|f| match &f.entry {
                    Entry::Call { seq, status, data, results, .. } if records[&(log, *seq)].op == call as u16 => Some((*status, data.clone(), *results)),
                    _ => None,
                })
                .collect()
        };
        let recv = data_of(1, Hypercall::ChannelRecv);
        assert_eq!(recv[0].0, HvError::WouldBlock.code(), "a WouldBlock is journaled with its status");
        let clock = &data_of(1, Hypercall::ClockRead)[0];
        assert_eq!(clock.1, clock.2[0].to_le_bytes(), "the clock value read");
        assert_eq!(data_of(1, Hypercall::StateStage)[0].1, b"keyvalue");
        let got = data_of(2, Hypercall::ChannelRecv);
        assert_eq!(got.last().unwrap().1, b"ping", "the message received");
    }

    /// Calls answered after they waited (`WaitAny`, `ChannelWait`) are
    /// journaled like any other: the replay needs their answers.
    #[test]
    fn a_call_answered_after_it_waited_has_its_entry() {
        let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
        let mut hv = Hypervisor::boot(FakeArch::new(), frames, &bundle(BOOT_FLAG_JOURNAL)).unwrap();
        let mut step = 0;
        hv.arch.set_guest(1, Box::new(move |v, m| {
            step += 1;
            match step {
                1..=3 => call(v, Hypercall::Yield, &[]),
                4 => {
                    if let Err(f) = m.write(HEAP + 64, b"ping") {
                        step -= 1;
                        return f.0;
                    }
                    call(v, Hypercall::ChannelSend, &[handle(m, ObjectKind::Channel), HEAP + 64, 4])
                }
                _ => call(v, Hypercall::Exit, &[0]),
            }
        }));
        let mut step = 0;
        hv.arch.set_guest(2, Box::new(move |v, m| {
            // The heap is mapped on first touch: fault, then again.
            if let Err(f) = m.write(HEAP, &handle(m, ObjectKind::Channel).to_le_bytes()) {
                return f.0;
            }
            step += 1;
            match step {
                1 => call(v, Hypercall::WaitAny, &[HEAP, 1, u64::MAX]),
                2 => call(v, Hypercall::ChannelWait, &[handle(m, ObjectKind::Channel), HEAP + 8, 64, u64::MAX]),
                _ => call(v, Hypercall::Exit, &[0]),
            }
        }));
        let summary = hv.run();
        let text = hv.arch.console_text();
        assert_eq!(summary.finished, 2, "{text}");
        let calls: Vec<WitnessRecord> = text
            .lines()
            .filter_map(Frame::parse)
            .filter_map(|f| match f {
                Frame::Record { log: 2, bytes } => Some(WitnessRecord::from_bytes(&bytes).unwrap()),
                _ => None,
            })
            .filter(|r| r.flags & flags::KERNEL_EVENT == 0)
            .collect();
        let ops: Vec<u16> = calls.iter().map(|r| r.op).collect();
        assert_eq!(ops, [Hypercall::WaitAny as u16, Hypercall::ChannelWait as u16, Hypercall::Exit as u16]);
        let entries: Vec<JournalFrame> =
            text.lines().filter(|l| l.starts_with("@J 2 c")).map(|l| JournalFrame::parse(l).expect("an entry decodes")).collect();
        for r in &calls[..2] {
            assert_ne!(r.flags & flags::JOURNALED, 0, "{:?} says it has an entry", r.op);
            let e = entries.iter().find(|f| f.entry.seq() == r.seq).expect("the entry is there");
            let Entry::Call { regs, data, .. } = &e.entry else { panic!("a call entry") };
            assert_eq!(digest(&[&rvm_abi::journal::regs_bytes(regs), data]), r.args, "entry for {:?}", r.op);
        }
    }

    #[test]
    fn without_the_flag_nothing_is_journaled_and_the_start_record_still_binds() {
        let text = run(0);
        assert!(!text.lines().any(|l| l.starts_with("@J")), "{text}");
        let journaled = text.lines().filter_map(Frame::parse).any(|f| match f {
            Frame::Record { bytes, .. } => WitnessRecord::from_bytes(&bytes).unwrap().flags & flags::JOURNALED != 0,
            _ => false,
        });
        assert!(!journaled, "no record claims an entry");
        let start = text
            .lines()
            .filter_map(Frame::parse)
            .filter_map(|f| match f {
                Frame::Record { log: 1, bytes } => Some(WitnessRecord::from_bytes(&bytes).unwrap()),
                _ => None,
            })
            .find(|r| r.op == KernelEvent::PartitionStart as u16)
            .unwrap();
        assert_ne!(start.args, [0; 16], "PartitionStart binds the handles in every run");
    }
}
