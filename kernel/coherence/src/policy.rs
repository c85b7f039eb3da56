//! When a domain splits and when two domains merge.
//!
//! With `W` the traffic inside a domain, `λ` the value of its minimum cut,
//! `X` the traffic between two domains and `I` the sum of their internal
//! traffic (all decayed [`Weight`]s):
//!
//! * **split** when `λ < s · W` and `W ≥ min_internal`: the weakest way to
//!   cut the domain carries less than a share `s` of what the domain says
//!   internally;
//! * **merge** when `X ≥ m · I`, `X ≥ min_cross` and the merged domain would
//!   have at most `max_agents` agents: the two partitions talk to each other
//!   at least a share `m` as much as they talk inside.
//!
//! **Hysteresis**, so that a domain does not flap:
//!
//! 1. *Disjoint bands.* [`CoherencePolicy::validate`] requires
//!    `s < m / (1 + m)`. Then a domain just split along a cut cannot meet
//!    the merge condition for the same two halves (its cross traffic `λ` is
//!    below `s·W`, and merging needs `λ ≥ m·(W − λ)`, i.e. `λ ≥ W·m/(1+m)`),
//!    and two domains just merged cannot meet the split condition along the
//!    line they merged on (`X < s·(I + X)` contradicts `X ≥ m·I`).
//! 2. *Hold.* A condition must be seen at every evaluation for `hold_ns`
//!    before it becomes a decision; one evaluation that does not see it
//!    starts the count again.
//! 3. *Cooldown.* After a split or merge is applied, the domains it made are
//!    left alone for `cooldown_ns`.
//! 4. *Floors.* `min_internal` and `min_cross` keep noise from deciding
//!    anything.

use crate::mincut::{WorkBudget, MAX_NODES};
use crate::weight::Weight;

/// A ratio in thousandths: `Permille(250)` is one quarter. May exceed 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permille(pub u32);

impl Permille {
    /// Denominator.
    pub const SCALE: u32 = 1000;

    /// `value < self × base`, exactly.
    pub fn value_below(self, value: Weight, base: Weight) -> bool {
        u128::from(value.raw()) * u128::from(Self::SCALE)
            < u128::from(self.0) * u128::from(base.raw())
    }

    /// `value ≥ self × base`, exactly.
    pub fn value_reaches(self, value: Weight, base: Weight) -> bool {
        !self.value_below(value, base)
    }
}

/// When a domain splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// `s`: split when the minimum cut is below this share of the domain's
    /// internal traffic.
    pub max_cut_share: Permille,
    /// Domains with less internal traffic are not cut at all.
    pub min_internal: Weight,
    /// How long the condition must hold before a decision.
    pub hold_ns: u64,
}

impl SplitPolicy {
    /// Split when the weakest cut carries less than 10 % of the domain's
    /// traffic, the domain has at least 32 units of traffic, for 500 ms.
    pub const DEFAULT: SplitPolicy = SplitPolicy {
        max_cut_share: Permille(100),
        min_internal: Weight::from_units(32),
        hold_ns: 500_000_000,
    };
}

/// When two domains merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergePolicy {
    /// `m`: merge when the traffic between two domains is at least this
    /// share of their internal traffic together.
    pub min_cross_share: Permille,
    /// Pairs with less traffic between them never merge.
    pub min_cross: Weight,
    /// How long the condition must hold before a decision.
    pub hold_ns: u64,
    /// Largest domain a merge may produce (at most [`MAX_NODES`], so every
    /// domain stays cuttable).
    pub max_agents: usize,
}

impl MergePolicy {
    /// Merge when two partitions exchange at least half as much as they say
    /// inside, at least 32 units, for 500 ms, into at most 16 agents.
    pub const DEFAULT: MergePolicy = MergePolicy {
        min_cross_share: Permille(500),
        min_cross: Weight::from_units(32),
        hold_ns: 500_000_000,
        max_agents: 16,
    };
}

/// The whole coherence policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoherencePolicy {
    /// `None`: domains never split.
    pub split: Option<SplitPolicy>,
    /// `None`: domains never merge.
    pub merge: Option<MergePolicy>,
    /// How long the domains a decision made are left alone.
    pub cooldown_ns: u64,
    /// Work allowed for one domain's minimum cut.
    pub cut_budget: WorkBudget,
}

impl CoherencePolicy {
    /// The split and merge defaults, a 2 s cooldown, and a cut budget that
    /// decides any domain of up to [`MAX_NODES`] agents.
    pub const DEFAULT: CoherencePolicy = CoherencePolicy {
        split: Some(SplitPolicy::DEFAULT),
        merge: Some(MergePolicy::DEFAULT),
        cooldown_ns: 2_000_000_000,
        cut_budget: WorkBudget::worst_case(MAX_NODES),
    };

    /// Check the policy's internal consistency (see the module
    /// documentation for why the bands must be disjoint).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(m) = self.merge {
            if !(2..=MAX_NODES).contains(&m.max_agents) {
                return Err(PolicyError::MergeSize {
                    max_agents: m.max_agents,
                });
            }
        }
        if let (Some(s), Some(m)) = (self.split, self.merge) {
            // s < m / (1 + m), in thousandths: s·(1000 + m) < 1000·m.
            let lhs = u64::from(s.max_cut_share.0)
                * (u64::from(Permille::SCALE) + u64::from(m.min_cross_share.0));
            let rhs = u64::from(Permille::SCALE) * u64::from(m.min_cross_share.0);
            if lhs >= rhs {
                return Err(PolicyError::BandsOverlap {
                    split: s.max_cut_share,
                    merge: m.min_cross_share,
                });
            }
        }
        Ok(())
    }
}

impl Default for CoherencePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a policy was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// `split < merge / (1 + merge)` does not hold: a split could be undone
    /// by a merge at once (or the reverse).
    BandsOverlap { split: Permille, merge: Permille },
    /// A merge limit outside `2..=MAX_NODES`.
    MergeSize { max_agents: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_consistent() {
        assert_eq!(CoherencePolicy::DEFAULT.validate(), Ok(()));
    }

    #[test]
    fn overlapping_bands_are_refused_at_the_exact_boundary() {
        let with = |s: u32, m: u32| CoherencePolicy {
            split: Some(SplitPolicy {
                max_cut_share: Permille(s),
                ..SplitPolicy::DEFAULT
            }),
            merge: Some(MergePolicy {
                min_cross_share: Permille(m),
                ..MergePolicy::DEFAULT
            }),
            ..CoherencePolicy::DEFAULT
        };
        // m = 1 (1000 ‰): s must stay below one half.
        assert_eq!(with(499, 1000).validate(), Ok(()));
        assert_eq!(
            with(500, 1000).validate(),
            Err(PolicyError::BandsOverlap {
                split: Permille(500),
                merge: Permille(1000)
            })
        );
        // m = 0 merges on any traffic: no split share is safe.
        assert!(with(1, 0).validate().is_err());
        // Either side disabled: nothing to overlap.
        let no_merge = CoherencePolicy {
            merge: None,
            ..with(900, 0)
        };
        assert_eq!(no_merge.validate(), Ok(()));
    }

    #[test]
    fn merge_size_must_fit_the_solver() {
        let p = |n| CoherencePolicy {
            merge: Some(MergePolicy {
                max_agents: n,
                ..MergePolicy::DEFAULT
            }),
            ..CoherencePolicy::DEFAULT
        };
        assert_eq!(p(64).validate(), Ok(()));
        assert_eq!(
            p(65).validate(),
            Err(PolicyError::MergeSize { max_agents: 65 })
        );
        assert_eq!(
            p(1).validate(),
            Err(PolicyError::MergeSize { max_agents: 1 })
        );
    }

    #[test]
    fn ratios_compare_exactly() {
        let (ten, hundred) = (Weight::from_units(10), Weight::from_units(100));
        assert!(!Permille(100).value_below(ten, hundred));
        assert!(Permille(101).value_below(ten, hundred));
        assert!(Permille(100).value_reaches(ten, hundred));
        assert!(!Permille(101).value_reaches(ten, hundred));
        // Nothing exceeds a share of nothing.
        assert!(Permille(500).value_reaches(Weight::ZERO, Weight::ZERO));
        let big = Weight::from_raw(u64::MAX);
        assert!(Permille(u32::MAX).value_below(big, big));
    }
}
