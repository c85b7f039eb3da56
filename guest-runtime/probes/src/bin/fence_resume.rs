//! Probe for operator orders: on its first start it hands the hypervisor a
//! 16-byte snapshot, then writes hypervisor memory (a stage-2 abort: the
//! partition is fenced, F3). Unfenced by the operator, it is recreated from
//! its pristine image with that snapshot mapped in its restore window; it
//! checks the image and finishes with code 0.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::bootinfo::RestoreInfo;
use rvm_abi::Hypercall;
use rvm_el1::arch::{self, probe, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, not_isolated, require_outside_image, start, HYPERVISOR_PA};

rvm_el1::el1_main!(main);

/// What the first start snapshots and a resumed start expects back.
const MARKER: [u8; 16] = *b"fence-resume-ck1";
/// Exit code of a resumed start whose snapshot image differs.
const EXIT_WRONG_IMAGE: i32 = 0x0bb0;
/// Exit code when the snapshot is refused.
const EXIT_NO_SNAPSHOT: i32 = 0x0bb1;

fn main(boot_info: u64) -> ! {
    let s = start("fence-resume", boot_info);
    let restore = arch::boot_page(boot_info).and_then(RestoreInfo::read).filter(RestoreInfo::is_restore);
    match restore {
        None => {
            require_outside_image("fence-resume", HYPERVISOR_PA);
            let marker = MARKER;
            let id = match arch::hypercall(Hypercall::Snapshot, &mut [Arg::In(&marker)]) {
                Ok([id, _, _]) => id,
                Err(e) => {
                    println!("probe fence-resume: snapshot refused: {}", e.name());
                    finish(EXIT_NO_SNAPSHOT)
                }
            };
            println!(
                "probe fence-resume: start {} took snapshot {id}; writing hypervisor memory at {HYPERVISOR_PA:#x}",
                s.info.restarts
            );
            probe::write_u64(HYPERVISOR_PA, 0xdead_beef_dead_beef);
            not_isolated("fence-resume", HYPERVISOR_PA)
        }
        Some(r) => {
            let intact = arch::with_snapshot_image(r.image_ipa, r.image_len, |image| image == MARKER).unwrap_or(false);
            println!(
                "probe fence-resume: start {} resumed from snapshot {} ({} bytes, {})",
                s.info.restarts,
                r.snapshot_id,
                r.image_len,
                if intact { "intact" } else { "DIFFERENT" }
            );
            finish(if intact { 0 } else { EXIT_WRONG_IMAGE })
        }
    }
}
