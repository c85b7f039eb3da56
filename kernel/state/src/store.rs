//! A partition's state store: writes are staged, validated, then committed
//! atomically — all staged items or none (docs/DESIGN.md section 7).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use rvm_abi::HvError;

/// Limits a store enforces at validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_key: usize,
    pub max_value: usize,
    /// Most items staged in one transaction.
    pub max_staged: usize,
    /// Most items committed in total.
    pub max_items: usize,
    /// Most bytes (keys + values) committed in total.
    pub max_bytes: usize,
}

impl StoreLimits {
    pub const DEFAULT: StoreLimits =
        StoreLimits { max_key: 64, max_value: 4096, max_staged: 64, max_items: 1024, max_bytes: 1 << 20 };
}

/// The committed items of a store at one moment (kept with a snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    items: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StoreSnapshot {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every item, in ascending key order.
    pub fn items(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.items.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

/// The committed items and the open transaction.
pub struct StateStore {
    limits: StoreLimits,
    committed: BTreeMap<Vec<u8>, Vec<u8>>,
    staged: Vec<(Vec<u8>, Vec<u8>)>,
    validated: bool,
    pub commits: u64,
}

impl StateStore {
    pub fn new(limits: StoreLimits) -> Self {
        Self { limits, committed: BTreeMap::new(), staged: Vec::new(), validated: false, commits: 0 }
    }

    /// Whether `stage(key, value)` would be accepted (no change made).
    pub fn check_stage(&self, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        if key.is_empty() || key.len() > self.limits.max_key || value.len() > self.limits.max_value {
            return Err(HvError::InvalidArgument);
        }
        if self.staged.len() >= self.limits.max_staged {
            return Err(HvError::Full);
        }
        Ok(())
    }

    /// Stage one item. Bounds are checked now too, so nothing unbounded is held.
    pub fn stage(&mut self, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        self.check_stage(key, value)?;
        self.staged.push((key.to_vec(), value.to_vec()));
        self.validated = false;
        Ok(())
    }

    /// Check the staged items against the limits as they would stand after
    /// commit. A failure discards the transaction: nothing is committed.
    pub fn validate(&mut self) -> Result<(), HvError> {
        let verdict = self.would_validate();
        if verdict.is_err() {
            self.staged.clear();
            self.validated = false;
            return verdict;
        }
        self.validated = true;
        Ok(())
    }

    /// What `validate` would answer, without changing anything.
    pub fn would_validate(&self) -> Result<(), HvError> {
        let mut items = self.committed.len();
        let mut bytes: usize = self.committed.iter().map(|(k, v)| k.len() + v.len()).sum();
        for (i, (k, v)) in self.staged.iter().enumerate() {
            let later_dup = self.staged[i + 1..].iter().any(|(k2, _)| k2 == k);
            if later_dup {
                continue;
            }
            match self.committed.get(k) {
                Some(old) => bytes = bytes - old.len() + v.len(),
                None => {
                    items += 1;
                    bytes += k.len() + v.len();
                }
            }
        }
        if items > self.limits.max_items || bytes > self.limits.max_bytes {
            return Err(HvError::ValidationFailed);
        }
        Ok(())
    }

    /// Commit every staged item at once (validating first if needed).
    /// Returns how many items were committed.
    pub fn commit(&mut self) -> Result<usize, HvError> {
        if !self.validated {
            self.validate()?;
        }
        let n = self.staged.len();
        for (k, v) in self.staged.drain(..) {
            self.committed.insert(k, v);
        }
        self.validated = false;
        self.commits += 1;
        Ok(n)
    }

    /// The digest of the committed set ([`crate::digest::committed`]).
    pub fn digest(&self) -> [u8; 32] {
        crate::digest::committed(self.committed.len() as u64, self.items())
    }

    /// Make the committed items exactly `items` (a set restored at boot);
    /// the open transaction is dropped.
    pub fn replace<'a>(&mut self, items: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
        self.committed = items.map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        self.abort();
    }

    /// Drop the open transaction (a restarted guest starts a new one).
    pub fn abort(&mut self) {
        self.staged.clear();
        self.validated = false;
    }

    /// A copy of the committed items, for a snapshot.
    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot { items: self.committed.clone() }
    }

    /// Make the committed items exactly those of `snapshot` (a rollback);
    /// the open transaction is dropped.
    pub fn restore(&mut self, snapshot: &StoreSnapshot) {
        self.committed = snapshot.items.clone();
        self.abort();
    }

    /// Every committed item, in ascending key order.
    pub fn items(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.committed.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.committed.get(key).map(Vec::as_slice)
    }

    pub fn committed_items(&self) -> usize {
        self.committed.len()
    }

    /// The open transaction's items, in staging order.
    pub fn staged(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
        self.staged.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn staged_items(&self) -> usize {
        self.staged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_all_or_nothing() {
        let limits = StoreLimits { max_items: 2, ..StoreLimits::DEFAULT };
        let mut s = StateStore::new(limits);
        s.stage(b"a", b"1").unwrap();
        s.stage(b"b", b"2").unwrap();
        assert_eq!(s.get(b"a"), None, "staged is not visible");
        assert_eq!(s.commit(), Ok(2));
        assert_eq!(s.get(b"b"), Some(&b"2"[..]));
        s.stage(b"a", b"3").unwrap();
        s.stage(b"c", b"4").unwrap();
        assert_eq!(s.commit(), Err(HvError::ValidationFailed));
        assert_eq!(s.get(b"a"), Some(&b"1"[..]), "a failed commit changes nothing");
        assert_eq!(s.get(b"c"), None);
        assert_eq!(s.staged_items(), 0);
        assert_eq!(s.stage(b"", b"x"), Err(HvError::InvalidArgument));
    }

    #[test]
    fn a_replaced_set_is_the_same_set() {
        let mut s = StateStore::new(StoreLimits::DEFAULT);
        let empty = s.digest();
        s.stage(b"b", b"1").unwrap();
        s.stage(b"a", b"2").unwrap();
        s.commit().unwrap();
        assert_ne!(s.digest(), empty);
        let mut t = StateStore::new(StoreLimits::DEFAULT);
        t.stage(b"x", b"staged, then dropped").unwrap();
        t.replace(s.items());
        assert_eq!(t.digest(), s.digest());
        assert_eq!(t.staged_items(), 0);
    }

    #[test]
    fn a_snapshot_restores_exactly_what_was_committed() {
        let mut s = StateStore::new(StoreLimits::DEFAULT);
        s.stage(b"a", b"1").unwrap();
        s.commit().unwrap();
        let snap = s.snapshot();
        s.stage(b"a", b"2").unwrap();
        s.stage(b"b", b"3").unwrap();
        s.commit().unwrap();
        s.stage(b"c", b"4").unwrap();
        s.restore(&snap);
        assert_eq!(s.get(b"a"), Some(&b"1"[..]));
        assert_eq!(s.get(b"b"), None, "a commit after the snapshot is gone");
        assert_eq!(s.staged_items(), 0, "and so is the open transaction");
        assert_eq!(s.items().collect::<Vec<_>>(), snap.items().collect::<Vec<_>>());
    }
}
