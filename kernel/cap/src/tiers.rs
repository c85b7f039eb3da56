//! Proof tiers per right: which rights demand P2 or P3 checking.

use rvm_abi::rights::RIGHT_NAMES;
use rvm_abi::{ProofTier, Rights};

/// The proof tier of each right a capability holds, kept as two masks so the
/// tier of any set of rights is two bit tests: rights at P2 or above, and
/// rights at P3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TierMap {
    at_least_p2: Rights,
    p3: Rights,
}

impl TierMap {
    /// Every right at P1.
    pub const ALL_P1: TierMap = TierMap {
        at_least_p2: Rights::empty(),
        p3: Rights::empty(),
    };

    /// From a capability table's per-right tiers (in
    /// [`RIGHT_NAMES`] order, `0` = right not held). `None` unless every held
    /// right has a tier 1–3 and every other right has 0.
    pub fn from_table(rights: Rights, tiers: &[u8; 7]) -> Option<TierMap> {
        let mut map = TierMap::ALL_P1;
        for ((right, _), &raw) in RIGHT_NAMES.iter().zip(tiers.iter()) {
            if !rights.contains(*right) {
                if raw != 0 {
                    return None;
                }
                continue;
            }
            match ProofTier::from_u8(raw)? {
                ProofTier::P1 => {}
                ProofTier::P2 => map.at_least_p2 |= *right,
                ProofTier::P3 => {
                    map.at_least_p2 |= *right;
                    map.p3 |= *right;
                }
            }
        }
        Some(map)
    }

    /// One tier for every right.
    pub fn uniform(rights: Rights, tier: ProofTier) -> TierMap {
        match tier {
            ProofTier::P1 => TierMap::ALL_P1,
            ProofTier::P2 => TierMap {
                at_least_p2: rights,
                p3: Rights::empty(),
            },
            ProofTier::P3 => TierMap {
                at_least_p2: rights,
                p3: rights,
            },
        }
    }

    /// The strictest tier among `needed`.
    #[inline]
    pub fn tier_for(self, needed: Rights) -> ProofTier {
        if self.p3.intersects(needed) {
            ProofTier::P3
        } else if self.at_least_p2.intersects(needed) {
            ProofTier::P2
        } else {
            ProofTier::P1
        }
    }

    /// The same tiers, for a subset of the rights.
    pub fn restricted_to(self, rights: Rights) -> TierMap {
        TierMap {
            at_least_p2: self.at_least_p2 & rights,
            p3: self.p3 & rights,
        }
    }

    /// Back to the table form, for `rights`.
    pub fn to_table(self, rights: Rights) -> [u8; 7] {
        let mut out = [0u8; 7];
        for (slot, (right, _)) in out.iter_mut().zip(RIGHT_NAMES.iter()) {
            if rights.contains(*right) {
                *slot = self.tier_for(*right) as u8;
            }
        }
        out
    }

    /// Rights whose tier is P3.
    pub const fn p3_rights(self) -> Rights {
        self.p3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trip_and_strictest_wins() {
        let rights = Rights::READ | Rights::WRITE | Rights::GRANT;
        // RIGHT_NAMES order: READ, WRITE, GRANT, REVOKE, EXECUTE, PROVE, GRANT_ONCE
        let table = [1, 2, 3, 0, 0, 0, 0];
        let map = TierMap::from_table(rights, &table).unwrap();
        assert_eq!(map.to_table(rights), table);
        assert_eq!(map.tier_for(Rights::READ), ProofTier::P1);
        assert_eq!(map.tier_for(Rights::WRITE), ProofTier::P2);
        assert_eq!(map.tier_for(Rights::READ | Rights::WRITE), ProofTier::P2);
        assert_eq!(map.tier_for(Rights::READ | Rights::GRANT), ProofTier::P3);
        assert_eq!(map.tier_for(Rights::empty()), ProofTier::P1);
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        assert_eq!(
            TierMap::from_table(Rights::READ, &[0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            TierMap::from_table(Rights::READ, &[4, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            TierMap::from_table(Rights::READ, &[1, 1, 0, 0, 0, 0, 0]),
            None
        );
    }
}
