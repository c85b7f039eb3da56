//! Running partitions: the vCPUs, guest exits, the per-CPU run queues, and
//! the kernel lock shared by the CPUs.
//!
//! * [`vcpu`] — a vCPU's saved registers.
//! * [`trap`] — guest exits decoded from the syndrome.
//! * [`sched`] — which partition runs next on a CPU.
//! * [`cpus`] — what the kernel keeps per CPU: who runs where, deferred
//!   orders, the end of the run.
//! * [`smp`] — the run loop on each CPU, the kernel lock, leases.

pub mod cpus;
pub mod sched;
pub mod smp;
pub mod trap;
pub mod vcpu;
