//! Traffic as fixed-point weights.
//!
//! A [`Weight`] counts *traffic units* with [`Weight::FRACTION_BITS`]
//! fractional bits (Q48.16 in a `u64`). Fractions matter because decay
//! shrinks weights a little every epoch; integers keep every result identical
//! on every target (EL2 is built soft-float and never uses FP).

use core::fmt;

/// Traffic, in units of 2^-16 traffic unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u64);

impl Weight {
    /// Fractional bits of the fixed-point representation.
    pub const FRACTION_BITS: u32 = 16;
    /// No traffic.
    pub const ZERO: Weight = Weight(0);
    /// One traffic unit.
    pub const UNIT: Weight = Weight(1 << Self::FRACTION_BITS);
    /// The most one edge of the graph holds (2^32 units); accumulation
    /// saturates here. With at most [`MAX_NODES`](crate::mincut::MAX_NODES)
    /// agents per domain, a domain's total (at most 2 016 edges, < 2^59) stays
    /// inside what the cut solver accepts ([`CutGraph::MAX_TOTAL`]).
    ///
    /// [`CutGraph::MAX_TOTAL`]: crate::mincut::CutGraph::MAX_TOTAL
    pub const EDGE_MAX: Weight = Weight(1 << 48);

    /// A weight from its raw fixed-point value.
    pub const fn from_raw(raw: u64) -> Weight {
        Weight(raw)
    }

    /// The raw fixed-point value (units × 2^16).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `units` whole traffic units.
    pub const fn from_units(units: u32) -> Weight {
        Weight((units as u64) << Self::FRACTION_BITS)
    }

    /// Whole traffic units, rounded down.
    pub const fn whole_units(self) -> u64 {
        self.0 >> Self::FRACTION_BITS
    }

    /// Sum, saturating at `u64::MAX`.
    pub const fn saturating_add(self, other: Weight) -> Weight {
        Weight(self.0.saturating_add(other.0))
    }

    /// Sum, saturating at [`Weight::EDGE_MAX`]: how an edge accumulates.
    pub fn edge_add(self, other: Weight) -> Weight {
        Weight(self.0.saturating_add(other.0).min(Self::EDGE_MAX.0))
    }

    /// Whether there is no traffic at all.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Weight {
    /// Units with two decimals, rounded down (`12.50`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = self.0 & ((1 << Self::FRACTION_BITS) - 1);
        let hundredths = (frac * 100) >> Self::FRACTION_BITS;
        write!(f, "{}.{:02}", self.whole_units(), hundredths)
    }
}

/// What one delivered message adds to the edge between sender and receiver.
///
/// `cost(bytes) = per_message + per_kib × bytes / 1024`, rounded down to the
/// fixed-point resolution and capped at [`Weight::EDGE_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficPolicy {
    /// Weight of a message regardless of its size (chattiness).
    pub per_message: Weight,
    /// Weight of each KiB of payload (volume).
    pub per_kib: Weight,
}

impl TrafficPolicy {
    /// One unit per message plus one unit per KiB: a 4 KiB message (the
    /// channel maximum) weighs as much as five empty ones.
    pub const DEFAULT: TrafficPolicy = TrafficPolicy {
        per_message: Weight::UNIT,
        per_kib: Weight::UNIT,
    };

    /// The weight one message of `bytes` bytes adds.
    pub fn cost(&self, bytes: u32) -> Weight {
        let volume = u128::from(self.per_kib.raw()) * u128::from(bytes) / 1024;
        let volume = u64::try_from(volume).unwrap_or(u64::MAX);
        Weight(
            self.per_message
                .raw()
                .saturating_add(volume)
                .min(Weight::EDGE_MAX.raw()),
        )
    }
}

impl Default for TrafficPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn message_cost_counts_messages_and_volume() {
        let p = TrafficPolicy::DEFAULT;
        assert_eq!(p.cost(0), Weight::UNIT);
        assert_eq!(p.cost(1024), Weight::from_units(2));
        assert_eq!(p.cost(4096), Weight::from_units(5));
        // Half a KiB is half a unit of volume.
        assert_eq!(
            p.cost(512).raw(),
            Weight::UNIT.raw() + Weight::UNIT.raw() / 2
        );
        let heavy = TrafficPolicy {
            per_message: Weight::EDGE_MAX,
            per_kib: Weight::EDGE_MAX,
        };
        assert_eq!(heavy.cost(u32::MAX), Weight::EDGE_MAX);
    }

    #[test]
    fn edges_saturate_at_their_maximum() {
        let w = Weight::EDGE_MAX.edge_add(Weight::UNIT);
        assert_eq!(w, Weight::EDGE_MAX);
        assert_eq!(
            Weight::from_units(3).edge_add(Weight::UNIT),
            Weight::from_units(4)
        );
    }

    #[test]
    fn display_shows_units_and_hundredths() {
        assert_eq!(format!("{}", Weight::from_units(12)), "12.00");
        assert_eq!(
            format!("{}", Weight::from_raw((5 << 16) + (1 << 15))),
            "5.50"
        );
    }
}
