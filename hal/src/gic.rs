//! GICv3: just enough to take the hypervisor timer's PPI at EL2, and to
//! wake another CPU with a software-generated interrupt (the kernel's kick,
//! [`KICK_SGI`]).
//!
//! Physical interrupts are routed to EL2 while a guest runs (HCR_EL2.IMO)
//! and stay masked while EL2 itself runs, so the kernel sees the timer only
//! as a guest exit.

use aarch64_cpu::registers::ICC_SRE_EL2;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    GICD_CTLR [
        /// Affinity routing.
        ARE OFFSET(4) NUMBITS(1) [],
        ENABLE_G1 OFFSET(1) NUMBITS(1) [],
        ENABLE_G0 OFFSET(0) NUMBITS(1) []
    ],
    GICR_WAKER [
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    GICR_TYPER [
        /// The affinity (Aff3.Aff2.Aff1.Aff0) of the CPU this frame serves.
        AFFINITY OFFSET(32) NUMBITS(32) [],
        /// The last frame of the redistributor region.
        LAST OFFSET(4) NUMBITS(1) []
    ]
}

register_structs! {
    /// The distributor registers the driver uses (GICv3 architecture
    /// specification, 12.9).
    Distributor {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => @END),
    },
    /// One CPU's redistributor: its RD frame and, 64 KiB on, its SGI frame
    /// (12.10 and 12.11), the registers the driver uses.
    Redistributor {
        (0x0000 => _rd_reserved0),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => _rd_reserved1),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _rd_reserved2),
        (0x1_0080 => igroupr0: ReadWrite<u32>),
        (0x1_0084 => _sgi_reserved0),
        (0x1_0100 => isenabler0: ReadWrite<u32>),
        (0x1_0104 => _sgi_reserved1),
        (0x1_0400 => ipriorityr: [ReadWrite<u32>; 8]),
        (0x1_0420 => @END),
    }
}

/// The distance between two CPUs' redistributors (RD and SGI frames).
const GICR_FRAME: usize = 0x20000;

/// The distributor and this CPU's redistributor.
///
/// The GIC's CPU interface (`ICC_*_EL1`) is reached through system
/// registers, and `aarch64-cpu` types only `ICC_SRE_EL2` of those used
/// here; the others are written raw (`sysreg`).
pub struct Gic {
    redist: &'static Redistributor,
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
        // SAFETY: the caller's contract: `gicd` is the mapped GICv3
        // distributor, and only this CPU touches it now.
        let dist = unsafe { &*(gicd as *const Distributor) };
        dist.ctlr.write(GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_G1::SET + GICD_CTLR::ENABLE_G0::SET);
        // Find this CPU's redistributor by affinity.
        let aff = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
        let mut frame = gicr;
        let redist = loop {
            // SAFETY: `frame` walks the redistributor region frame by frame
            // until the frame marked last, all inside the DTB's GICR range
            // (the caller's contract), mapped as Device memory.
            let r = unsafe { &*(frame as *const Redistributor) };
            let typer = r.typer.extract();
            if typer.read(GICR_TYPER::AFFINITY) == aff {
                break r;
            }
            if typer.is_set(GICR_TYPER::LAST) {
                return None;
            }
            frame += GICR_FRAME;
        };
        redist.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
        while redist.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP) {
            core::hint::spin_loop();
        }
        // CPU interface: system-register access, all priorities, group 1 on.
        ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
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
        self.redist.igroupr0.set(self.redist.igroupr0.get() | bit);
        let prio = &self.redist.ipriorityr[intid as usize / 4];
        let shift = (intid % 4) * 8;
        prio.set(prio.get() & !(0xff << shift) | 0x80 << shift);
        self.redist.isenabler0.set(bit);
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
