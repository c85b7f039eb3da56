//! QEMU harness
