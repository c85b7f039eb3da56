//! Per-epoch quotas: how many calls and bytes a capability may use in one
//! accounting epoch (P2).

use crate::ids::Epoch;

/// A capability's allowance per epoch. `u32::MAX` calls or `u64::MAX` bytes
/// means unlimited (a usage counter saturates there, so it can never exceed
/// it). Derivation may only lower either figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    pub calls: u32,
    pub bytes: u64,
}

impl Quota {
    /// No limit on calls or bytes.
    pub const UNLIMITED: Quota = Quota {
        calls: u32::MAX,
        bytes: u64::MAX,
    };

    /// The capability table's form: a calls-per-epoch figure, `0` = unlimited;
    /// the table sets no byte limit.
    pub const fn from_table(calls_per_epoch: u32) -> Quota {
        if calls_per_epoch == 0 {
            Quota::UNLIMITED
        } else {
            Quota {
                calls: calls_per_epoch,
                bytes: u64::MAX,
            }
        }
    }

    /// Both figures are at most `parent`'s.
    pub const fn within(self, parent: Quota) -> bool {
        self.calls <= parent.calls && self.bytes <= parent.bytes
    }
}

/// What a capability has used in its current epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Usage {
    pub epoch: Epoch,
    pub calls: u32,
    pub bytes: u64,
}

impl Usage {
    /// Fresh usage starting in `epoch`.
    pub const fn starting(epoch: Epoch) -> Usage {
        Usage {
            epoch,
            calls: 0,
            bytes: 0,
        }
    }

    /// The usage after one more call of `bytes` bytes in `epoch`, or `None`
    /// if that would exceed `quota`. Does not change `self`: the caller
    /// stores the result only once the whole operation is allowed.
    pub fn charge(self, quota: Quota, epoch: Epoch, bytes: u64) -> Option<Usage> {
        let base = if epoch > self.epoch {
            Usage::starting(epoch)
        } else {
            self
        };
        let calls = base.calls.saturating_add(1);
        let bytes = base.bytes.saturating_add(bytes);
        let calls_ok = quota.calls == u32::MAX || calls <= quota.calls;
        let bytes_ok = quota.bytes == u64::MAX || bytes <= quota.bytes;
        (calls_ok && bytes_ok).then_some(Usage {
            epoch: base.epoch,
            calls,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_run_out_and_refill_in_a_later_epoch() {
        let q = Quota {
            calls: 2,
            bytes: u64::MAX,
        };
        let u = Usage::starting(Epoch(5));
        let u = u.charge(q, Epoch(5), 0).unwrap();
        let u = u.charge(q, Epoch(5), 0).unwrap();
        assert_eq!(u.charge(q, Epoch(5), 0), None);
        // An earlier epoch (clock stepped back) counts against the later one.
        assert_eq!(u.charge(q, Epoch(4), 0), None);
        let u = u.charge(q, Epoch(6), 0).unwrap();
        assert_eq!((u.epoch, u.calls), (Epoch(6), 1));
    }

    #[test]
    fn bytes_run_out_without_overflow() {
        let q = Quota {
            calls: u32::MAX,
            bytes: 100,
        };
        let u = Usage::starting(Epoch(0)).charge(q, Epoch(0), 60).unwrap();
        assert_eq!(u.charge(q, Epoch(0), 41), None);
        assert_eq!(u.charge(q, Epoch(0), u64::MAX), None);
        assert!(u.charge(q, Epoch(0), 40).is_some());
    }

    #[test]
    fn unlimited_never_runs_out() {
        let mut u = Usage {
            epoch: Epoch(0),
            calls: u32::MAX - 1,
            bytes: u64::MAX - 1,
        };
        for _ in 0..3 {
            u = u.charge(Quota::UNLIMITED, Epoch(0), u64::MAX).unwrap();
        }
        assert_eq!(Quota::from_table(0), Quota::UNLIMITED);
        assert_eq!(Quota::from_table(7).calls, 7);
    }
}
