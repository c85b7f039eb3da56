//! Raw EL1 test guests for the isolation tests. Each is a complete EL1
//! image (same entry, link script and segment contract as the runtime, no
//! WASM) that prints one line saying what it is about to do and then does
//! it. A bad access must end in a stage-2 abort taken by the hypervisor; if
//! the access returns instead, the probe says so and exits with
//! [`EXIT_NOT_ISOLATED`].
#![no_std]
#![forbid(unsafe_code)]

use rvm_abi::bootinfo::layout;
use rvm_el1::arch;
use rvm_el1::el1_println as println;

/// An IPA in the range the layout never maps (`0 .. IMAGE_BASE`).
pub const UNMAPPED_IPA: u64 = 0x1000;
/// The PL011 UART's physical address on QEMU `virt`: a device the partition
/// holds no capability for, and below `IMAGE_BASE`, so never mapped.
pub const DEVICE_PA: u64 = 0x0900_0000;
/// Where the hypervisor is linked (its physical load address under QEMU):
/// as an IPA it lies in the image window but past any probe's image, so
/// only an identity map of hypervisor memory would make it reachable.
pub const HYPERVISOR_PA: u64 = 0x4020_0000;

const _: () = assert!(UNMAPPED_IPA < layout::IMAGE_BASE && DEVICE_PA < layout::IMAGE_BASE);
const _: () = assert!(HYPERVISOR_PA > layout::IMAGE_BASE && HYPERVISOR_PA < layout::IMAGE_LIMIT);

/// Exit code of a probe whose bad access did not fault.
pub const EXIT_NOT_ISOLATED: i32 = 0x0bad;
/// Exit code of a probe that refused to run because its target would be
/// its own memory.
pub const EXIT_BAD_TARGET: i32 = 0x0bae;

/// Exit with `code` as a finished run.
pub fn finish(code: i32) -> ! {
    arch::exit(u64::from_ne_bytes(i64::from(code).to_ne_bytes()))
}

/// The access at `ipa` returned: isolation failed.
pub fn not_isolated(probe: &str, ipa: u64) -> ! {
    println!("probe {probe}: FAILED: the access to {ipa:#x} did not fault");
    finish(EXIT_NOT_ISOLATED)
}

/// Refuse to probe an IPA inside this image.
pub fn require_outside_image(probe: &str, ipa: u64) {
    if ipa < arch::image_end() {
        println!(
            "probe {probe}: target {ipa:#x} is inside this image (ends {:#x}); not probing",
            arch::image_end()
        );
        finish(EXIT_BAD_TARGET);
    }
}

/// What a probe starts with: its boot-info page, its capability handles, and
/// the input bytes the test put in the bundle.
///
/// A partition that runs a raw image instead of the runtime may still carry
/// a module entry in the bundle; the hypervisor maps it read-only at the
/// module IPA like any module. The test-only probes use it as their input
/// (seeds, signatures made on the host), not as WASM.
pub struct Start {
    pub info: rvm_abi::bootinfo::BootInfo,
    page: &'static [u8],
    input: &'static [u8],
}

impl Start {
    /// Read the boot-info page at `boot_info` (the entry's `x0`).
    pub fn read(boot_info: u64) -> Option<Start> {
        let page = arch::boot_page(boot_info)?;
        let info = rvm_abi::bootinfo::BootInfo::read(page)?;
        let input = if info.wasm_len == 0 { &[][..] } else { arch::wasm_module(info.wasm_ipa, info.wasm_len)? };
        Some(Start { info, page, input })
    }

    /// The input bytes (empty if the bundle gave none).
    pub fn input(&self) -> &'static [u8] {
        self.input
    }

    /// The `n`-th handle the partition started with (install order: its
    /// state store, the bundle's capability entries, then one per channel).
    pub fn handle(&self, n: usize) -> Option<rvm_abi::bootinfo::HandleInfo> {
        let count = usize::try_from(self.info.handle_count).ok()?;
        (n < count).then(|| rvm_abi::bootinfo::BootInfo::read_handle(self.page, n)).flatten()
    }

    /// Number of handles listed.
    pub fn handle_count(&self) -> usize {
        usize::try_from(self.info.handle_count).unwrap_or(0)
    }

    /// The first handle naming an object of `kind`.
    pub fn first_of(&self, kind: rvm_abi::ObjectKind) -> Option<u64> {
        (0..self.handle_count()).filter_map(|n| self.handle(n)).find(|h| h.kind == kind as u8).map(|h| h.raw)
    }
}

/// Start, or say why not and exit with [`EXIT_BAD_TARGET`].
pub fn start(probe: &str, boot_info: u64) -> Start {
    match Start::read(boot_info) {
        Some(s) => s,
        None => {
            println!("probe {probe}: no boot-info page or input at {boot_info:#x}");
            finish(EXIT_BAD_TARGET)
        }
    }
}

/// Little-endian `u64` at `at` in `bytes`, if there.
pub fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

/// The message a probe sends its peer when it is done (16 bytes, so no
/// fuzzed message of another length can be mistaken for it).
pub const DONE_MESSAGE: [u8; 16] = *b"RVM-PROBE-DONE\0\0";
