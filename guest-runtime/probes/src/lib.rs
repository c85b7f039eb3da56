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
