//! Fair share among runnable entities of one pCPU, by virtual runtime.
//!
//! Each entity (a vCPU, or a partition while partitions have one vCPU) has a
//! [`ShareWeight`]. Running `t` ns advances its virtual runtime by
//! `t · ShareWeight::REFERENCE / weight`, exactly: the division's remainder
//! is carried to the next charge, so no time is lost to rounding. The
//! scheduler runs the runnable entity with the least virtual runtime (the
//! lowest id on a tie). Over time each runnable entity gets CPU in
//! proportion to its weight; entities of equal weight get equal shares.
//!
//! An entity that wakes up (or joins) starts no earlier than the least
//! virtual runtime among those already runnable, so sleeping earns no
//! credit to monopolise the CPU later.

use alloc::vec::Vec;

use crate::priority::Priority;

/// Names a scheduled entity (the kernel's vCPU or partition index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchedEntity(pub u32);

/// An entity's share of the CPU relative to others; never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShareWeight(u32);

impl ShareWeight {
    /// The weight whose virtual runtime advances at wall-clock rate.
    pub const REFERENCE: ShareWeight = ShareWeight(1024);

    /// A weight of `w`; `None` for zero.
    pub const fn new(w: u32) -> Option<ShareWeight> {
        if w == 0 {
            None
        } else {
            Some(ShareWeight(w))
        }
    }

    /// The value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// How a [`Priority`] becomes a [`ShareWeight`]:
/// `weight = floor + span · priority / 10 000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightCurve {
    /// Weight at priority 0 (must be non-zero).
    pub floor: u32,
    /// Added at the highest priority.
    pub span: u32,
}

impl WeightCurve {
    /// From 1 024 at priority 0 to 8 192 at the highest: the most urgent
    /// partition gets at most eight times the least urgent's share, and the
    /// least urgent is never starved.
    pub const DEFAULT: WeightCurve = WeightCurve {
        floor: 1024,
        span: 7168,
    };

    /// The weight for `priority`.
    pub fn weight(&self, priority: Priority) -> ShareWeight {
        let extra = u64::from(self.span) * u64::from(priority.basis_points())
            / u64::from(Priority::MAX.basis_points());
        let w = u64::from(self.floor.max(1)).saturating_add(extra);
        ShareWeight(u32::try_from(w).unwrap_or(u32::MAX))
    }
}

impl Default for WeightCurve {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the fair-share table refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FairError {
    Duplicate(SchedEntity),
    Unknown(SchedEntity),
    Full { capacity: usize },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: SchedEntity,
    weight: ShareWeight,
    vruntime: u64,
    carry: u64,
    runnable: bool,
    ran_ns: u64,
}

/// The fair-share table of one pCPU.
#[derive(Clone, Debug)]
pub struct FairShare {
    entries: Vec<Entry>,
    capacity: usize,
}

impl FairShare {
    /// A table with room for `capacity` entities, allocated now.
    pub fn new(capacity: usize) -> FairShare {
        FairShare {
            entries: Vec::with_capacity(capacity),
            capacity,
        }
    }

    fn index(&self, id: SchedEntity) -> Result<usize, FairError> {
        self.entries
            .binary_search_by_key(&id, |e| e.id)
            .map_err(|_| FairError::Unknown(id))
    }

    /// The least virtual runtime among runnable entities (0 if none).
    fn floor(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.runnable)
            .map(|e| e.vruntime)
            .min()
            .unwrap_or(0)
    }

    /// Add `id` with `weight`.
    pub fn add(
        &mut self,
        id: SchedEntity,
        weight: ShareWeight,
        runnable: bool,
    ) -> Result<(), FairError> {
        let at = match self.entries.binary_search_by_key(&id, |e| e.id) {
            Ok(_) => return Err(FairError::Duplicate(id)),
            Err(_) if self.entries.len() >= self.capacity => {
                return Err(FairError::Full {
                    capacity: self.capacity,
                })
            }
            Err(at) => at,
        };
        let vruntime = self.floor();
        self.entries.insert(
            at,
            Entry {
                id,
                weight,
                vruntime,
                carry: 0,
                runnable,
                ran_ns: 0,
            },
        );
        Ok(())
    }

    /// Remove `id`.
    pub fn remove(&mut self, id: SchedEntity) -> Result<(), FairError> {
        let at = self.index(id)?;
        self.entries.remove(at);
        Ok(())
    }

    /// Change `id`'s weight (its priority changed); from now on.
    pub fn set_weight(&mut self, id: SchedEntity, weight: ShareWeight) -> Result<(), FairError> {
        let at = self.index(id)?;
        let e = &mut self.entries[at];
        e.weight = weight;
        e.carry = 0;
        Ok(())
    }

    /// Mark `id` runnable or not. Waking up moves its virtual runtime up to
    /// the least among the runnable ones.
    pub fn set_runnable(&mut self, id: SchedEntity, runnable: bool) -> Result<(), FairError> {
        let at = self.index(id)?;
        if runnable && !self.entries[at].runnable {
            let floor = self.floor();
            let e = &mut self.entries[at];
            e.vruntime = e.vruntime.max(floor);
        }
        self.entries[at].runnable = runnable;
        Ok(())
    }

    /// `id` ran for `ran_ns`.
    pub fn charge(&mut self, id: SchedEntity, ran_ns: u64) -> Result<(), FairError> {
        let at = self.index(id)?;
        let e = &mut self.entries[at];
        let scaled =
            u128::from(ran_ns) * u128::from(ShareWeight::REFERENCE.0) + u128::from(e.carry);
        let weight = u128::from(e.weight.0);
        let advance = u64::try_from(scaled / weight).unwrap_or(u64::MAX);
        // The remainder is below the weight, a u32.
        e.carry = u64::try_from(scaled % weight).unwrap_or(0);
        e.vruntime = e.vruntime.saturating_add(advance);
        e.ran_ns = e.ran_ns.saturating_add(ran_ns);
        Ok(())
    }

    /// The runnable entity to run next: least virtual runtime, lowest id.
    pub fn pick(&self) -> Option<SchedEntity> {
        self.entries
            .iter()
            .filter(|e| e.runnable)
            .min_by_key(|e| (e.vruntime, e.id))
            .map(|e| e.id)
    }

    /// `id`'s virtual runtime.
    pub fn vruntime(&self, id: SchedEntity) -> Option<u64> {
        self.index(id).ok().map(|i| self.entries[i].vruntime)
    }

    /// CPU time charged to `id` so far.
    pub fn ran_ns(&self, id: SchedEntity) -> Option<u64> {
        self.index(id).ok().map(|i| self.entries[i].ran_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SLICE_NS: u64 = 1_000_000;

    /// Run the table for `rounds` picks; each slice lasts `slice(i, round)`.
    fn simulate(
        fs: &mut FairShare,
        rounds: usize,
        mut slice: impl FnMut(SchedEntity, usize) -> u64,
    ) {
        for round in 0..rounds {
            let id = fs.pick().unwrap();
            fs.charge(id, slice(id, round)).unwrap();
        }
    }

    fn shares(fs: &FairShare, ids: &[SchedEntity]) -> Vec<f64> {
        let total: u64 = ids.iter().map(|&i| fs.ran_ns(i).unwrap()).sum();
        ids.iter()
            .map(|&i| fs.ran_ns(i).unwrap() as f64 / total as f64)
            .collect()
    }

    #[test]
    fn the_weight_curve_maps_priorities() {
        let c = WeightCurve::DEFAULT;
        assert_eq!(c.weight(Priority::default()).get(), 1024);
        assert_eq!(c.weight(Priority::MAX).get(), 8192);
        assert_eq!(ShareWeight::new(0), None);
        let zero_floor = WeightCurve { floor: 0, span: 0 };
        assert_eq!(zero_floor.weight(Priority::MAX).get(), 1);
    }

    #[test]
    fn charging_is_exact_over_many_small_slices() {
        let mut fs = FairShare::new(2);
        let a = SchedEntity(1);
        fs.add(a, ShareWeight::new(3000).unwrap(), true).unwrap();
        for _ in 0..3000 {
            fs.charge(a, 1).unwrap();
        }
        // 3000 ns · 1024 / 3000 = 1024, with nothing lost to rounding.
        assert_eq!(fs.vruntime(a), Some(1024));
        assert_eq!(fs.ran_ns(a), Some(3000));
    }

    #[test]
    fn errors_name_the_entity() {
        let mut fs = FairShare::new(1);
        let (a, b) = (SchedEntity(1), SchedEntity(2));
        fs.add(a, ShareWeight::REFERENCE, true).unwrap();
        assert_eq!(
            fs.add(a, ShareWeight::REFERENCE, true),
            Err(FairError::Duplicate(a))
        );
        assert_eq!(
            fs.add(b, ShareWeight::REFERENCE, true),
            Err(FairError::Full { capacity: 1 })
        );
        assert_eq!(fs.charge(b, 1), Err(FairError::Unknown(b)));
        fs.remove(a).unwrap();
        assert_eq!(fs.pick(), None);
    }

    #[test]
    fn a_sleeper_gets_no_credit_for_its_sleep() {
        let mut fs = FairShare::new(2);
        let (a, b) = (SchedEntity(1), SchedEntity(2));
        fs.add(a, ShareWeight::REFERENCE, true).unwrap();
        fs.add(b, ShareWeight::REFERENCE, false).unwrap();
        simulate(&mut fs, 100, |_, _| SLICE_NS);
        assert_eq!(fs.ran_ns(a), Some(100 * SLICE_NS));
        fs.set_runnable(b, true).unwrap();
        assert_eq!(fs.vruntime(b), fs.vruntime(a));
        // From now on they alternate instead of b running 100 slices in a row.
        simulate(&mut fs, 10, |_, _| SLICE_NS);
        assert_eq!(fs.ran_ns(b), Some(5 * SLICE_NS));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Equal-priority partitions whose slices end early at random (they
        /// yield, or block) each get their share of the CPU within 5 %.
        #[test]
        fn equal_weights_share_within_five_percent(
            n in 2usize..=6,
            lengths in proptest::collection::vec(1u64..=SLICE_NS, 64),
        ) {
            let mut fs = FairShare::new(8);
            let ids: Vec<_> = (0..n).map(|i| SchedEntity(i as u32)).collect();
            for &id in &ids {
                fs.add(id, ShareWeight::REFERENCE, true).unwrap();
            }
            simulate(&mut fs, 4000, |id, round| lengths[(round * 7 + id.0 as usize * 13) % lengths.len()]);
            let fair = 1.0 / n as f64;
            for s in shares(&fs, &ids) {
                prop_assert!((s - fair).abs() <= 0.05 * fair, "share {} vs {}", s, fair);
            }
        }

        /// Weights 2:1 get CPU 2:1, within 5 %.
        #[test]
        fn shares_follow_weights(lengths in proptest::collection::vec(1u64..=SLICE_NS, 64)) {
            let mut fs = FairShare::new(2);
            let (a, b) = (SchedEntity(1), SchedEntity(2));
            fs.add(a, ShareWeight::new(2048).unwrap(), true).unwrap();
            fs.add(b, ShareWeight::new(1024).unwrap(), true).unwrap();
            simulate(&mut fs, 3000, |id, round| lengths[(round + id.0 as usize * 5) % lengths.len()]);
            let s = shares(&fs, &[a, b]);
            prop_assert!((s[0] / s[1] - 2.0).abs() <= 0.1, "{:?}", s);
        }
    }
}
