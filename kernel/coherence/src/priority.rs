//! Scheduler priority: a blend of a partition's deadline urgency and its cut
//! pressure (docs/DESIGN.md section 8).
//!
//! **Formula.** With urgency `u` and cut pressure `c` in hundredths
//! (`0..=100`) and the policy's weights `wu`, `wc`:
//!
//! ```text
//! priority = floor(100 · (wu·u + wc·c) / (wu + wc))      in basis points, 0..=10 000
//! ```
//!
//! The manifest's `cut_pressure` is how much the partition's scheduling
//! should follow its coherence: with a *live* pressure `p` (the share of the
//! partition's traffic that crosses its boundary, from
//! [`DomainReport::live_pressure`](crate::evaluator::DomainReport::live_pressure))
//! the pressure blended is `c = floor(cut_pressure · p / 100)`; a partition
//! that others wait on gets the CPU sooner, as far as its manifest allows.
//! Without a live value the manifest's figure is used as is.

use rvm_abi::bundle::PartitionDesc;

/// A share in hundredths, `0..=100`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hundredths(u8);

impl Hundredths {
    /// Zero.
    pub const ZERO: Hundredths = Hundredths(0);
    /// One hundred hundredths.
    pub const FULL: Hundredths = Hundredths(100);

    /// `value` hundredths; `None` above 100.
    pub const fn new(value: u8) -> Option<Hundredths> {
        if value <= 100 {
            Some(Hundredths(value))
        } else {
            None
        }
    }

    /// `value` hundredths, capped at 100.
    pub const fn saturating(value: u8) -> Hundredths {
        Hundredths(if value > 100 { 100 } else { value })
    }

    /// The value.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// `self × other`, in hundredths, rounded down.
    pub const fn scale(self, other: Hundredths) -> Hundredths {
        // Both at most 100: the product is at most 10 000, the quotient 100.
        Hundredths(((self.0 as u16 * other.0 as u16) / 100) as u8)
    }
}

/// The weights of the blend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlendPolicy {
    urgency_weight: u8,
    pressure_weight: u8,
}

impl BlendPolicy {
    /// Deadline urgency counts three times as much as cut pressure: a
    /// deadline is a promise to the agent's user, coherence an optimisation.
    pub const DEFAULT: BlendPolicy = BlendPolicy {
        urgency_weight: 3,
        pressure_weight: 1,
    };

    /// Weights `urgency` and `pressure`; `None` if both are zero.
    pub const fn new(urgency: u8, pressure: u8) -> Option<BlendPolicy> {
        if urgency == 0 && pressure == 0 {
            None
        } else {
            Some(BlendPolicy {
                urgency_weight: urgency,
                pressure_weight: pressure,
            })
        }
    }
}

impl Default for BlendPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A scheduling priority in basis points (`0..=10 000`); higher runs sooner
/// or longer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(u16);

impl Priority {
    /// The highest priority.
    pub const MAX: Priority = Priority(10_000);

    /// The value in basis points.
    pub const fn basis_points(self) -> u16 {
        self.0
    }

    /// The blend of `urgency` and `pressure` (module documentation).
    pub const fn blend(urgency: Hundredths, pressure: Hundredths, policy: BlendPolicy) -> Priority {
        let (wu, wc) = (policy.urgency_weight as u32, policy.pressure_weight as u32);
        let mix = wu * urgency.0 as u32 + wc * pressure.0 as u32;
        // At most 100 · 100 · (wu + wc) / (wu + wc) = 10 000.
        Priority((100 * mix / (wu + wc)) as u16)
    }

    /// A partition's priority from its manifest, with the live cut pressure
    /// if the coherence evaluator has one.
    pub fn of_partition(
        desc: &PartitionDesc,
        live: Option<Hundredths>,
        policy: BlendPolicy,
    ) -> Priority {
        let manifest = Hundredths::saturating(desc.cut_pressure);
        let pressure = live.map_or(manifest, |p| manifest.scale(p));
        Priority::blend(
            Hundredths::saturating(desc.deadline_urgency),
            pressure,
            policy,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rvm_abi::bundle::{MemoryTier, RecoveryDesc};

    fn h(v: u8) -> Hundredths {
        Hundredths::new(v).unwrap()
    }

    #[test]
    fn blend_follows_the_formula() {
        let p = BlendPolicy::DEFAULT;
        assert_eq!(Priority::blend(h(100), h(100), p), Priority::MAX);
        assert_eq!(Priority::blend(h(0), h(0), p).basis_points(), 0);
        // 100 · (3·50 + 1·30) / 4 = 4500.
        assert_eq!(Priority::blend(h(50), h(30), p).basis_points(), 4500);
        // Rounded down: 100 · (3·1 + 0) / 4 = 75; 100 · (0 + 1) / 4 = 25.
        assert_eq!(Priority::blend(h(1), h(0), p).basis_points(), 75);
        assert_eq!(Priority::blend(h(0), h(1), p).basis_points(), 25);
        // Urgency alone.
        let only_urgency = BlendPolicy::new(1, 0).unwrap();
        assert_eq!(
            Priority::blend(h(42), h(99), only_urgency).basis_points(),
            4200
        );
        assert_eq!(BlendPolicy::new(0, 0), None);
        assert_eq!(Hundredths::new(101), None);
        assert_eq!(Hundredths::saturating(200), Hundredths::FULL);
    }

    #[test]
    fn a_partitions_priority_uses_its_manifest_and_live_pressure() {
        let desc = PartitionDesc {
            name: [0; 32],
            memory_tier: MemoryTier::Warm,
            deadline_urgency: 50,
            cut_pressure: 30,
            default_tier: 1,
            wasm_pages: 1,
            fuel_per_slice: 0,
            recovery: RecoveryDesc::DEFAULT,
            witness_key_fingerprint: None,
            dormant_after_ms: 0,
        };
        let p = BlendPolicy::DEFAULT;
        assert_eq!(Priority::of_partition(&desc, None, p).basis_points(), 4500);
        // Half its traffic crosses: pressure 30 · 50 / 100 = 15.
        assert_eq!(
            Priority::of_partition(&desc, Some(h(50)), p).basis_points(),
            100 * (150 + 15) / 4
        );
        // No traffic crosses: urgency alone counts.
        assert_eq!(
            Priority::of_partition(&desc, Some(h(0)), p).basis_points(),
            3750
        );
    }

    proptest! {
        #[test]
        fn blend_is_bounded_and_monotonic(u in 0u8..=100, c in 0u8..=100, du in 0u8..=5, wu in 0u8..=9, wc in 1u8..=9) {
            let policy = BlendPolicy::new(wu, wc).unwrap();
            let p = Priority::blend(h(u), h(c), policy);
            prop_assert!(p <= Priority::MAX);
            let more = Hundredths::saturating(u.saturating_add(du));
            prop_assert!(Priority::blend(more, h(c), policy) >= p);
            // Between the two inputs, as a weighted mean must be.
            let (lo, hi) = (u.min(c), u.max(c));
            prop_assert!(p.basis_points() >= u16::from(lo) * 100);
            prop_assert!(p.basis_points() <= u16::from(hi) * 100);
        }
    }
}
