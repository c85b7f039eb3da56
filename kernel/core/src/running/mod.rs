//! Running partitions: the vCPUs, guest exits, the per-CPU run queues, and
//! the kernel lock shared by the CPUs.
//!
//! * [`vcpu`] — a vCPU's saved registers.
//! * [`trap`] — guest exits decoded from the syndrome.
//! * [`sched`] — which partition runs next on a CPU.
//! * [`smp`] — the CPUs, the kernel lock, leases, deferred orders.

pub mod sched;
pub mod smp;
pub mod trap;
pub mod vcpu;
