//! The run summary printed at shutdown.

use crate::arch::Arch;
use crate::console::hyp_line;
use crate::state::Hypervisor;

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub finished: u32,
    pub fenced: u32,
    pub refused: u32,
    /// Partitions still running when the budget ran out.
    pub stopped: u32,
    /// Partitions evicted (F4) during the run.
    pub evicted: u32,
    pub elapsed_ns: u64,
}


pub(crate) fn print_summary<A: Arch>(hv: &mut Hypervisor<A>, s: &RunSummary) {
    hyp_line(
        &mut hv.arch,
        format_args!(
            "run complete in {} ms: {} finished, {} fenced, {} refused, {} stopped, {} evicted",
            s.elapsed_ns / 1_000_000,
            s.finished,
            s.fenced,
            s.refused,
            s.stopped,
            s.evicted
        ),
    );
    for idx in 0..hv.partitions.len() {
        let p = &hv.partitions[idx];
        if p.is_vacant() {
            continue;
        }
        let line = alloc::format!(
            "  {:>2} {:<24} {:<9} exit {:<6} calls {:<5} denied {:<4} preempted {:<4} faults {} witness records {} cpu {} charged {} us",
            p.id().0,
            p.name(),
            p.state().name(),
            p.exit_code().map_or(alloc::string::String::from("-"), |c| alloc::format!("{c:#x}")),
            p.stats().hypercalls,
            p.stats().denied,
            p.stats().preemptions,
            p.stats().faults,
            hv.witness.records(p.id().0),
            hv.ran_on(idx),
            hv.sched.ran_ns(idx) / 1_000,
        );
        hv.arch.console_write(line.as_bytes());
        hv.arch.console_write(b"\n");
        if p.output().dropped != 0 || p.output().held != 0 {
            let line = alloc::format!(
                "     output: {} console bytes dropped over its credit, held back {} times for its witness frames or snapshots",
                p.output().dropped, p.output().held
            );
            hv.arch.console_write(line.as_bytes());
            hv.arch.console_write(b"\n");
        }
        let r = p.recovery().counts;
        if r != crate::recovery::policy::RecoveryCounts::default() || p.snapshot().is_some() {
            let line = alloc::format!(
                "     recovery: {} restarts (F1), {} rollbacks (F2), {} fences (F3), {} unfences; last snapshot {}; {} committed items",
                r.restarts,
                r.rollbacks,
                r.fences,
                r.unfences,
                p.snapshot().map_or(alloc::string::String::from("none"), |c| alloc::format!("{} ({} bytes)", c.id, c.len)),
                hv.stores[idx].committed_items(),
            );
            hv.arch.console_write(line.as_bytes());
            hv.arch.console_write(b"\n");
        }
    }
    for line in hv.cpu_lines() {
        hv.arch.console_write(line.as_bytes());
        hv.arch.console_write(b"\n");
    }
    for (n, c) in hv.channels.iter().enumerate() {
        let line = alloc::format!(
            "  channel {n}: {} -> {}: {} messages ({} bytes); {} -> {}: {} messages ({} bytes)",
            c.ends()[0].0, c.ends()[1].0, c.delivered()[0], c.bytes()[0], c.ends()[1].0, c.ends()[0].0, c.delivered()[1], c.bytes()[1]
        );
        hv.arch.console_write(line.as_bytes());
        hv.arch.console_write(b"\n");
    }
    let used = hv.frames.frames_in_use();
    hyp_line(&mut hv.arch, format_args!("frames in use: {} ({} KiB)", used, used * 4));
}
