//! Exponential decay of traffic, in integer arithmetic.
//!
//! **The rule.** Time is cut into epochs of [`DecayPolicy::epoch_ns`]
//! nanoseconds (epoch `e` = `now_ns / epoch_ns`). When the graph moves from
//! epoch `e0` to `e1 > e0`, every edge weight `w` becomes
//! `floor(w × f / 2^16)` with `f = retention^(e1 - e0)`, where `retention` is
//! a Q16 fraction ([`Retention`]) and the power is taken by squaring, rounding
//! down after every multiplication ([`Retention::pow`]). Traffic recorded
//! during an epoch counts fully until the epoch ends. Edges that reach zero
//! are dropped.
//!
//! Rounding down at each step makes the result depend only on the sequence
//! of (record, advance) calls and their times — never on the target — so a
//! replayed run reproduces every decision bit for bit.

/// Fraction of a weight kept over one epoch, in 1/65536 (`Q16`).
/// `Retention::ONE` keeps everything; `0` forgets everything at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Retention(u32);

impl Retention {
    /// Fractional bits.
    pub const FRACTION_BITS: u32 = 16;
    /// Keep everything (no decay).
    pub const ONE: Retention = Retention(1 << Self::FRACTION_BITS);
    /// One half.
    pub const HALF: Retention = Retention(1 << (Self::FRACTION_BITS - 1));

    /// A retention of `q16 / 65536`; `None` above one.
    pub const fn new(q16: u32) -> Option<Retention> {
        if q16 <= Self::ONE.0 {
            Some(Retention(q16))
        } else {
            None
        }
    }

    /// The Q16 value.
    pub const fn q16(self) -> u32 {
        self.0
    }

    /// `self^n`, by squaring, rounding down after every multiplication.
    /// Monotonic in `self` and non-increasing in `n`.
    pub const fn pow(self, mut n: u64) -> Retention {
        let mut result: u64 = Self::ONE.0 as u64;
        let mut base: u64 = self.0 as u64;
        while n > 0 && result > 0 {
            if n & 1 == 1 {
                result = (result * base) >> Self::FRACTION_BITS;
            }
            base = (base * base) >> Self::FRACTION_BITS;
            n >>= 1;
        }
        // Both factors are at most 2^16, so the result is too.
        Retention(result as u32)
    }

    /// The smallest retention whose `epochs`-th power (as
    /// [`pow`](Self::pow) computes it) still keeps at least half: traffic
    /// halves after `epochs` epochs, to the Q16 grid. Half-lives too long
    /// for the grid (tens of thousands of epochs) get the slowest decay
    /// short of none, 65535/65536. `None` for zero epochs.
    pub const fn for_half_life(epochs: u32) -> Option<Retention> {
        if epochs == 0 {
            return None;
        }
        // Binary search for the smallest r in [0, ONE) with r^epochs >= HALF
        // (the predicate is monotonic in r).
        let (mut lo, mut hi) = (0u32, Self::ONE.0 - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if Retention(mid).pow(epochs as u64).0 >= Self::HALF.0 {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(Retention(lo))
    }

    /// `floor(raw × self / 2^16)`.
    pub const fn apply(self, raw: u64) -> u64 {
        ((raw as u128 * self.0 as u128) >> Self::FRACTION_BITS) as u64
    }
}

/// How traffic is forgotten: epoch length and what survives one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecayPolicy {
    epoch_ns: u64,
    retention: Retention,
}

impl DecayPolicy {
    /// Epochs of 100 ms with a half-life of 10 epochs (one second): a burst
    /// of traffic stops mattering after a few seconds, and a steady stream
    /// reaches ≈ 14.9 epochs' worth of its per-epoch weight
    /// (1 / (1 − 2^-1/10)).
    pub const DEFAULT: DecayPolicy = match DecayPolicy::half_life(100_000_000, 10) {
        Some(p) => p,
        None => panic!("default decay policy is valid"),
    };

    /// Epochs of `epoch_ns` keeping `retention` each. `None` if `epoch_ns`
    /// is zero.
    pub const fn new(epoch_ns: u64, retention: Retention) -> Option<DecayPolicy> {
        if epoch_ns == 0 {
            return None;
        }
        Some(DecayPolicy {
            epoch_ns,
            retention,
        })
    }

    /// Epochs of `epoch_ns` with weights halving every `epochs` epochs.
    pub const fn half_life(epoch_ns: u64, epochs: u32) -> Option<DecayPolicy> {
        match Retention::for_half_life(epochs) {
            Some(r) => DecayPolicy::new(epoch_ns, r),
            None => None,
        }
    }

    /// Length of one epoch.
    pub const fn epoch_ns(&self) -> u64 {
        self.epoch_ns
    }

    /// What survives one epoch.
    pub const fn retention(&self) -> Retention {
        self.retention
    }

    /// The epoch `now_ns` falls in.
    pub const fn epoch_of(&self, now_ns: u64) -> u64 {
        now_ns / self.epoch_ns
    }

    /// The factor applied when `epochs` epochs pass at once.
    pub const fn factor(&self, epochs: u64) -> Retention {
        self.retention.pow(epochs)
    }
}

impl Default for DecayPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn half_life_halves_within_rounding() {
        for epochs in [1u32, 2, 3, 10, 100, 1000] {
            let r = Retention::for_half_life(epochs).unwrap();
            let kept = r.pow(u64::from(epochs)).q16();
            assert!(kept >= Retention::HALF.q16(), "{epochs}: {kept}");
            // One step less in the Q16 grid would keep less than half.
            let less = Retention::new(r.q16() - 1)
                .unwrap()
                .pow(u64::from(epochs))
                .q16();
            assert!(less < Retention::HALF.q16(), "{epochs}: {less}");
            assert!(r < Retention::ONE);
        }
        assert_eq!(Retention::for_half_life(1), Some(Retention::HALF));
        assert_eq!(Retention::for_half_life(0), None);
    }

    #[test]
    fn default_policy_values_are_the_documented_ones() {
        let p = DecayPolicy::DEFAULT;
        assert_eq!(p.epoch_ns(), 100_000_000);
        // 2^(-1/10) = 0.93303...; in Q16, 61147.
        let r = p.retention().q16();
        assert!((61_140..=61_150).contains(&r), "{r}");
        assert_eq!(p.epoch_of(250_000_000), 2);
        // Ten epochs halve, twenty quarter (within rounding).
        let half = p.factor(10).apply(1 << 32);
        assert!((1 << 31..(1 << 31) + (1 << 20)).contains(&half), "{half}");
        let quarter = p.factor(20).apply(1 << 32);
        assert!(quarter.abs_diff(1 << 30) < 1 << 20, "{quarter}");
    }

    #[test]
    fn degenerate_policies_are_refused_and_extremes_behave() {
        assert_eq!(DecayPolicy::new(0, Retention::HALF), None);
        assert_eq!(Retention::new(65_537), None);
        assert_eq!(Retention::ONE.pow(1_000_000), Retention::ONE);
        assert_eq!(Retention::new(0).unwrap().pow(1).q16(), 0);
        assert_eq!(Retention::HALF.pow(0), Retention::ONE);
        assert_eq!(Retention::HALF.pow(17).q16(), 0);
        assert_eq!(Retention::HALF.pow(u64::MAX).q16(), 0);
    }

    proptest! {
        #[test]
        fn pow_is_monotonic(a in 0u32..=65_536, b in 0u32..=65_536, n in 0u64..200) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (lo, hi) = (Retention::new(lo).unwrap(), Retention::new(hi).unwrap());
            prop_assert!(lo.pow(n) <= hi.pow(n));
            prop_assert!(hi.pow(n + 1) <= hi.pow(n));
        }

        #[test]
        fn applying_never_grows_a_weight(raw in any::<u64>(), q in 0u32..=65_536) {
            let r = Retention::new(q).unwrap();
            prop_assert!(r.apply(raw) <= raw);
            if q == 65_536 { prop_assert_eq!(r.apply(raw), raw); }
        }
    }
}
