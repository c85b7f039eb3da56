//! What `status` says about coherence domains: a partition's agents and the
//! last cut decision its filed witness log records (`SplitDecided`,
//! `MergeDecided`, or a carried-out `Split` / `Merge`), with the cut value
//! and internal traffic the record's `args` carry (bytes 0–7 and 8–15, raw
//! Q48.16 weights, little-endian).

use std::path::Path;

use rvm_abi::witness::{KernelEvent, RECORD_LEN};
use rvm_abi::{WitnessOp, WitnessRecord};

/// A cut decision as a witness record states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutDecision {
    pub event: KernelEvent,
    /// The record's sequence number in its log.
    pub seq: u64,
    /// Kernel clock, ns.
    pub timestamp_ns: u64,
    /// Raw Q48.16 weights.
    pub cut: u64,
    pub internal: u64,
}

impl CutDecision {
    /// The decision a record states, if it is one.
    pub fn from_record(r: &WitnessRecord) -> Option<Self> {
        let event = match WitnessOp::from_code(r.op)? {
            WitnessOp::Event(
                e @ (KernelEvent::Split
                | KernelEvent::Merge
                | KernelEvent::SplitDecided
                | KernelEvent::MergeDecided),
            ) => e,
            _ => return None,
        };
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r.args[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Some(Self {
            event,
            seq: r.seq,
            timestamp_ns: r.timestamp,
            cut: word(0),
            internal: word(8),
        })
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        let what = match self.event {
            KernelEvent::SplitDecided => "split decided (a decision; its move, if carried out, follows as `split`)",
            KernelEvent::MergeDecided => "merge decided (a decision; its move, if carried out, follows as `merge`)",
            KernelEvent::Split => "split carried out (an agent moved to a new partition)",
            _ => "merge carried out (an agent moved into the other partition; the emptied one was retired)",
        };
        format!(
            "{what} at record {} ({:.3} s): cut {} of internal traffic {}",
            self.seq,
            self.timestamp_ns as f64 / 1e9,
            units(self.cut),
            units(self.internal)
        )
    }
}

/// A Q48.16 weight as units with two decimals (truncated, as the kernel prints it).
fn units(raw: u64) -> String {
    format!("{}.{:02}", raw >> 16, ((raw & 0xffff) * 100) >> 16)
}

/// The last cut decision in the records of a filed log (raw 64-byte records).
pub fn last_decision(log: &[u8]) -> Option<CutDecision> {
    log.chunks_exact(RECORD_LEN)
        .rev()
        .filter_map(|c| WitnessRecord::from_bytes(c.try_into().ok()?).ok())
        .find_map(|r| CutDecision::from_record(&r))
}

/// The last cut decision in the log file at `path` (`None`: no file, or no decision).
pub fn last_decision_in(path: &Path) -> Option<CutDecision> {
    std::fs::read(path).ok().as_deref().and_then(last_decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::Outcome;

    fn record(seq: u64, op: WitnessOp, args: [u8; 16]) -> [u8; RECORD_LEN] {
        let mut r = WitnessRecord::new(op, Outcome::Done, 1);
        r.seq = seq;
        r.timestamp = 1_500_000_000;
        r.args = args;
        r.to_bytes()
    }

    #[test]
    fn a_carried_out_merge_is_described_as_a_move() {
        let mut args = [0u8; 16];
        args[..8].copy_from_slice(&(40u64 << 16).to_le_bytes());
        let log = record(0, WitnessOp::Event(KernelEvent::Merge), args);
        let d = last_decision(&log).expect("a merge");
        assert_eq!(d.event, KernelEvent::Merge);
        assert!(
            d.describe().starts_with("merge carried out (an agent moved into the other partition; the emptied one was retired) at record 0"),
            "{}",
            d.describe()
        );
    }

    #[test]
    fn the_last_decision_is_found_and_its_cut_read_back() {
        let mut args = [0u8; 16];
        args[..8].copy_from_slice(&((3u64 << 16) | 0x8000).to_le_bytes());
        args[8..].copy_from_slice(&(120u64 << 16).to_le_bytes());
        let mut log = Vec::new();
        log.extend(record(
            0,
            WitnessOp::Event(KernelEvent::PartitionCreate),
            [9; 16],
        ));
        log.extend(record(
            1,
            WitnessOp::Event(KernelEvent::MergeDecided),
            [0; 16],
        ));
        log.extend(record(
            2,
            WitnessOp::Call(rvm_abi::Hypercall::ChannelSend),
            [7; 16],
        ));
        log.extend(record(3, WitnessOp::Event(KernelEvent::SplitDecided), args));
        log.extend(record(
            4,
            WitnessOp::Event(KernelEvent::PartitionExit),
            [0; 16],
        ));
        let d = last_decision(&log).expect("a decision");
        assert_eq!(
            (d.event, d.seq, d.cut, d.internal),
            (KernelEvent::SplitDecided, 3, (3 << 16) | 0x8000, 120 << 16)
        );
        assert_eq!(
            d.describe(),
            "split decided (a decision; its move, if carried out, follows as `split`) at record 3 (1.500 s): cut 3.50 of internal traffic 120.00"
        );
        assert_eq!(last_decision(&log[..RECORD_LEN]), None);
    }
}
