//! RVM's hardware layer: every `unsafe` that touches AArch64 hardware at EL2.
//!
//! Each module owns one mechanism; [`machine::Machine`] ties them together
//! as the kernel's [`rvm_kernel::Arch`]. Every `unsafe` block carries a
//! `// SAFETY:` comment saying why it is sound.
#![no_std]

extern crate alloc;

pub mod control;
pub mod cpu;
pub mod dtb;
pub mod el2map;
pub mod gic;
pub mod machine;
pub mod pmu;
pub mod power;
pub mod sha2ce;
pub mod sysreg;
pub mod timer;
pub mod uart;
pub mod vectors;
