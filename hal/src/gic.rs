//! GICv3: just enough to take the hypervisor timer's PPI at EL2, and to
//! wake another CPU with a software-generated interrupt (the kernel's kick,
//! [`KICK_SGI`]).
//!
//! Physical interrupts are routed to EL2 while a guest runs (HCR_EL2.IMO)
//! and stay masked while EL2 itself runs, so the kernel sees the timer only
//! as a guest exit.

use crate::mmio::Mmio;

const GICD_CTLR: usize = 0x0000;
const GICD_CTLR_ARE: u32 = 1 << 4;
const GICD_CTLR_ENABLE_G1: u32 = 1 << 1;
const GICD_CTLR_ENABLE_G0: u32 = 1 << 0;
const GICR_WAKER: usize = 0x0014;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_TYPER: usize = 0x0008;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_FRAME: usize = 0x20000;
const SGI_BASE: usize = 0x10000;
const GICR_IGROUPR0: usize = SGI_BASE + 0x0080;
const GICR_ISENABLER0: usize = SGI_BASE + 0x0100;
const GICR_IPRIORITYR: usize = SGI_BASE + 0x0400;

/// The distributor and this CPU's redistributor.
pub struct Gic {
    redist: Mmio,
}

/// INTID reported when no interrupt is pending.
pub const SPURIOUS: u32 = 1023;

/// The software-generated interrupt one CPU sends another to end its idle
/// wait (`rvm_kernel::arch::Arch::kick`).
pub const KICK_SGI: u32 = 0;

/// ICC_SGI1R_EL1 fields (GICv3 architecture specification, 12.11.1).
mod sgi1r {
    pub const TARGET_LIST_BITS: u64 = 16;
    pub const AFF1_SHIFT: u32 = 16;
    pub const INTID_SHIFT: u32 = 24;
    pub const AFF2_SHIFT: u32 = 32;
    pub const RS_SHIFT: u32 = 44;
    pub const AFF3_SHIFT: u32 = 48;
}

impl Gic {
    /// Bring up the distributor and the calling CPU's redistributor.
    ///
    /// # Safety
    /// `gicd` and `gicr` must be the GICv3 register blocks from the device
    /// tree, mapped as Device memory; only one CPU may run this at a time.
    pub unsafe fn init(gicd: usize, gicr: usize, mpidr: u64) -> Option<Self> {
        // SAFETY: forwarded from the caller.
        let dist = unsafe { Mmio::new(gicd) };
        dist.write32(GICD_CTLR, GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1 | GICD_CTLR_ENABLE_G0);
        // Find this CPU's redistributor by affinity.
        let aff = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
        let mut frame = gicr;
        let redist = loop {
            // SAFETY: `frame` walks the redistributor region frame by frame
            // until the frame marked last, all inside the DTB's GICR range.
            let r = unsafe { Mmio::new(frame) };
            let typer = u64::from(r.read32(GICR_TYPER)) | u64::from(r.read32(GICR_TYPER + 4)) << 32;
            if typer >> 32 == aff {
                break r;
            }
            if typer & GICR_TYPER_LAST != 0 {
                return None;
            }
            frame += GICR_FRAME;
        };
        let waker = redist.read32(GICR_WAKER);
        redist.write32(GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
        while redist.read32(GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP != 0 {
            core::hint::spin_loop();
        }
        // CPU interface: system-register access, all priorities, group 1 on.
        let sre = crate::sysreg_read!("icc_sre_el2");
        crate::sysreg_write!("icc_sre_el2", sre | 0b1001);
        crate::sysreg::isb();
        crate::sysreg_write!("icc_pmr_el1", 0xff);
        crate::sysreg_write!("icc_igrpen1_el1", 1);
        crate::sysreg::isb();
        Some(Self { redist })
    }

    /// Enable a private interrupt (PPI) as group 1 with middle priority.
    pub fn enable_ppi(&self, intid: u32) {
        if !(16..32).contains(&intid) {
            return;
        }
        self.enable_private(intid);
    }

    /// Enable a software-generated interrupt (SGI 0..16) on this CPU as
    /// group 1 with middle priority, so another CPU's [`Gic::send_sgi`]
    /// wakes it from `wfi`.
    pub fn enable_sgi(&self, intid: u32) {
        if !(0..16).contains(&intid) {
            return;
        }
        self.enable_private(intid);
    }

    fn enable_private(&self, intid: u32) {
        let bit = 1u32 << intid;
        self.redist.write32(GICR_IGROUPR0, self.redist.read32(GICR_IGROUPR0) | bit);
        let prio_reg = GICR_IPRIORITYR + (intid as usize & !3);
        let shift = (intid % 4) * 8;
        let v = self.redist.read32(prio_reg) & !(0xff << shift) | 0x80 << shift;
        self.redist.write32(prio_reg, v);
        self.redist.write32(GICR_ISENABLER0, bit);
    }

    /// Acknowledge the highest-priority pending interrupt.
    pub fn ack() -> u32 {
        (crate::sysreg_read!("icc_iar1_el1") & 0xff_ffff) as u32
    }

    /// Send group-1 SGI `intid` to the CPU whose affinity (MPIDR Aff3..Aff0,
    /// as the device tree's `cpu` nodes name it) is `mpidr`.
    pub fn send_sgi(intid: u32, mpidr: u64) {
        let aff0 = mpidr & 0xff;
        let value = (1u64 << (aff0 % sgi1r::TARGET_LIST_BITS))
            | ((mpidr >> 8) & 0xff) << sgi1r::AFF1_SHIFT
            | u64::from(intid & 0xf) << sgi1r::INTID_SHIFT
            | ((mpidr >> 16) & 0xff) << sgi1r::AFF2_SHIFT
            | (aff0 / sgi1r::TARGET_LIST_BITS) << sgi1r::RS_SHIFT
            | ((mpidr >> 32) & 0xff) << sgi1r::AFF3_SHIFT;
        // The kernel's writes (the woken partition's state) are visible
        // before the target can act on the interrupt.
        crate::sysreg::dsb_ishst();
        crate::sysreg_write!("icc_sgi1r_el1", value);
        crate::sysreg::isb();
    }

    /// Signal the end of an acknowledged interrupt.
    pub fn eoi(intid: u32) {
        crate::sysreg_write!("icc_eoir1_el1", u64::from(intid));
    }
}
