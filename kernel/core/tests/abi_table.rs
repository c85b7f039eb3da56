//! Keeps the hypercall table of `docs/ABI.md` honest.
//!
//! * Every hypercall of `rvm_abi` (the source of truth for the numbers) is a
//!   row of the table with the same number and name, and the table has no
//!   other row.
//! * The rows marked reserved are exactly the calls the kernel does not
//!   provide. That is observed, not listed: each call is issued by a guest
//!   on the fake machine, once with every argument register zero and once
//!   with each handle the partition holds in `x1` (and buffers in the
//!   others), each time on a freshly booted hypervisor. A call whose every
//!   answer is `NotSupported` is not provided; one that answered anything
//!   else is built.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use rvm_abi::bootinfo::{layout, BootInfo};
use rvm_abi::bundle::{BootConfig, BundleWriter, CapDesc, ChannelDesc, EntryKind, MemoryTier, PartitionDesc, RecoveryDesc, GLOBAL};
use rvm_abi::frame::Frame;
use rvm_abi::{HvError, Hypercall, ObjectKind, Rights, WitnessRecord};
use rvm_kernel::memory::addr::{PhysAddr, PhysRange};
use rvm_kernel::fake::{FakeArch, GuestView};
use rvm_kernel::memory::frames::FrameAllocator;
use rvm_kernel::Hypervisor;

const ABI_MD: &str = include_str!("../../../docs/ABI.md");

/// How a row of the table says its call is reserved: the description
/// starts with this.
const RESERVED: &str = "**Reserved.**";

struct Row {
    number: u16,
    name: String,
    reserved: bool,
}

/// The rows of the table under `## Hypercalls` (up to the next heading).
fn table_rows() -> Vec<Row> {
    let section = ABI_MD.split("\n## Hypercalls\n").nth(1).expect("docs/ABI.md has a `## Hypercalls` section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| 0x"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 3, "a hypercall row has number, name and description: {l}");
            let number = u16::from_str_radix(cells[0].trim_start_matches("0x"), 16)
                .unwrap_or_else(|_| panic!("not a hex number: {}", cells[0]));
            let name = cells[1].trim_matches('`').to_string();
            Row { number, name, reserved: cells[2].starts_with(RESERVED) }
        })
        .collect()
}

#[test]
fn the_table_lists_every_hypercall_with_its_number_and_name() {
    let rows = table_rows();
    for call in Hypercall::ALL {
        let matching: Vec<&Row> = rows.iter().filter(|r| r.name == call.name()).collect();
        assert_eq!(matching.len(), 1, "docs/ABI.md: `{}` must have exactly one row", call.name());
        assert_eq!(matching[0].number, *call as u16, "docs/ABI.md: `{}` has the wrong number", call.name());
    }
    for row in &rows {
        assert_eq!(
            Hypercall::from_number(row.number).map(Hypercall::name),
            Some(row.name.as_str()),
            "docs/ABI.md row 0x{:02x} `{}` is no hypercall of rvm_abi",
            row.number,
            row.name
        );
    }
}

// --- the fake machine -------------------------------------------------------

/// A minimal AArch64 executable: one read+execute page at the IPA where
/// guest images start, one read+write data page after it.
fn runtime_image() -> Vec<u8> {
    const PHDR: usize = 56;
    let base = layout::IMAGE_BASE;
    let segs: [(u64, u32, u64, u64); 2] = [(base, 5, 64, 64), (base + 0x1000, 6, 16, 0x2000)];
    let mut f = vec![0u8; 64 + segs.len() * PHDR];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
    f[18..20].copy_from_slice(&183u16.to_le_bytes()); // AArch64
    f[24..32].copy_from_slice(&base.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
    f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    for (i, (vaddr, flags, filesz, memsz)) in segs.iter().enumerate() {
        let ph = 64 + i * PHDR;
        let off = f.len() as u64;
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&filesz.to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        f.extend(std::iter::repeat_n(0xd5, *filesz as usize));
    }
    f
}

fn desc(name: &str) -> PartitionDesc {
    PartitionDesc {
        name: PartitionDesc::name_field(name).unwrap(),
        memory_tier: MemoryTier::Warm,
        deadline_urgency: 50,
        cut_pressure: 30,
        default_tier: 2,
        wasm_pages: 1,
        fuel_per_slice: 0,
        recovery: RecoveryDesc::DEFAULT,
        witness_key_fingerprint: None,
        dormant_after_ms: 0,
    }
}

/// A capability for `kind` with every right at P1.
fn cap(kind: ObjectKind, object: u32) -> CapDesc {
    CapDesc {
        kind,
        rights: Rights::all(),
        tiers: [1; 7],
        object,
        quota: 0,
        expires_at: 0,
        window_start: 0,
        window_len: 0,
        resource_digest: [0; 16],
    }
}

/// Two partitions joined by a channel. The caller (partition 1) holds,
/// besides its state store and its channel end, capabilities naming its
/// peer, a memory region and its own witness log.
fn boot() -> Hypervisor<FakeArch> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime_image());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 50, ..BootConfig::DEFAULT }.to_bytes());
    for name in ["caller", "peer"] {
        let i = w.partition(&desc(name));
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
        if name == "caller" {
            for c in [cap(ObjectKind::Partition, 2), cap(ObjectKind::Region, 0), cap(ObjectKind::WitnessLog, 1)] {
                w.entry(EntryKind::Capability, i, &c.to_bytes());
            }
        }
    }
    w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: 0, b: 1, capacity: 4 }.to_bytes());
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &w.finish()).expect("the test bundle boots")
}

/// The handles the caller starts with, from its boot-info page.
fn boot_handles(view: &GuestView<'_>) -> Vec<(u8, u64)> {
    let mut page = [0u8; 4096];
    view.read(layout::BOOTINFO_IPA, &mut page).unwrap();
    let info = BootInfo::read(&page).unwrap();
    (0..info.handle_count as usize).filter_map(|n| BootInfo::read_handle(&page, n)).map(|h| (h.kind, h.raw)).collect()
}

/// The argument registers of one attempt: `None` = all zero, `Some(n)` =
/// the `n`-th boot handle in `x1`, a buffer in the heap window and small
/// lengths in the others.
type Attempt = Option<usize>;

const HEAP: u64 = layout::HEAP_IPA;

/// What the caller's `hvc` answered in `x0`: seen by the guest when it
/// runs again, else (a call that does not return) the outcome of its
/// witness record, else 0 for a call the run stopped while it waited.
/// `None` when none of these showed.
fn answer(call: Hypercall, attempt: Attempt) -> (Option<i64>, usize) {
    let mut hv = boot();
    let seen: Rc<RefCell<(Option<i64>, usize)>> = Rc::default();
    let out = Rc::clone(&seen);
    let mut step = 0;
    hv.arch.set_guest(1, Box::new(move |v, m| {
        match step {
            0 => {
                // Touch the buffers first, so a call finds them mapped.
                if let Err(f) = m.write(HEAP, &[0x41; 0x200]) {
                    return f.0;
                }
                let handles = boot_handles(m);
                out.borrow_mut().1 = handles.len();
                let regs = match attempt {
                    None => [0; 6],
                    Some(n) => [handles.get(n).map_or(0, |h| h.1), HEAP, 8, HEAP + 0x100, 8, 0],
                };
                step = 1;
                v.regs.x[0] = u64::from(call.function_id());
                v.regs.x[1..7].copy_from_slice(&regs);
                FakeArch::hvc()
            }
            1 => {
                out.borrow_mut().0 = Some(v.regs.x[0] as i64);
                step = 2;
                v.regs.x[0] = u64::from(Hypercall::Exit.function_id());
                v.regs.x[1] = 0;
                FakeArch::hvc()
            }
            _ => panic!("the caller ran after its Exit"),
        }
    }));
    hv.arch.set_guest(2, Box::new(|v, _| {
        v.regs.x[0] = u64::from(Hypercall::Exit.function_id());
        v.regs.x[1] = 0;
        FakeArch::hvc()
    }));
    hv.run();
    let (returned, handles) = *seen.borrow();
    let recorded = || {
        hv.arch.console_text().lines().filter_map(Frame::parse).find_map(|f| match f {
            Frame::Record { log: 1, bytes } => {
                let rec = WitnessRecord::from_bytes(&bytes).unwrap();
                (rec.op == call as u16 && rec.flags & rvm_abi::witness::flags::KERNEL_EVENT == 0)
                    .then_some(i64::from(rec.outcome))
            }
            _ => None,
        })
    };
    // A call that waits (`ChannelWait` on the empty channel, its deadline
    // past the run's end) was taken, not refused: the run stopped it waiting.
    let parked = || hv.arch.console_text().contains("stopping caller (waiting for a message)").then_some(0);
    (returned.or_else(recorded).or_else(parked), handles)
}

/// Whether the kernel provides `call`: some attempt was answered with
/// anything but `NotSupported`.
fn provided(call: Hypercall) -> bool {
    let (first, handles) = answer(call, None);
    assert!(handles >= 5, "the caller holds its store, channel, peer, region and log handles ({handles})");
    let mut answers = vec![first];
    for n in 0..handles {
        answers.push(answer(call, Some(n)).0);
    }
    for a in &answers {
        assert!(a.is_some(), "no answer to `{}` was seen (neither in x0 nor in the witness log)", call.name());
    }
    answers.iter().any(|a| *a != Some(HvError::NotSupported.code()))
}

#[test]
fn the_calls_marked_reserved_are_the_calls_the_kernel_does_not_provide() {
    let documented: BTreeSet<&str> = table_rows()
        .into_iter()
        .filter(|r| r.reserved)
        .filter_map(|r| Hypercall::from_number(r.number).map(Hypercall::name))
        .collect();
    let observed: BTreeSet<&str> = Hypercall::ALL.iter().filter(|c| !provided(**c)).map(|c| c.name()).collect();
    assert_eq!(
        documented, observed,
        "docs/ABI.md marks {documented:?} reserved ({RESERVED}), but the kernel answers only NotSupported to {observed:?}"
    );
}
