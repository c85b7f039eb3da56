//! Identifier and time newtypes: a partition id is never confused with an
//! object id, and a timestamp never with an epoch or a nonce.

use rvm_abi::ObjectKind;

/// A partition, by the id the kernel gave it (the witness record's
/// `partition` field). Also the index of its capability table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

impl PartitionId {
    /// The table index, if it fits in `usize` (it always does on 32- and
    /// 64-bit targets, but the conversion is checked rather than assumed).
    pub(crate) fn slot(self) -> Option<usize> {
        usize::try_from(self.0).ok()
    }
}

/// The number of an object within its kind (channel index, partition index,
/// region number, ...). Meaningful only together with an [`ObjectKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub u32);

/// A kernel object: its kind and its id within that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub id: ObjectId,
}

impl ObjectRef {
    pub const fn new(kind: ObjectKind, id: u32) -> Self {
        Self {
            kind,
            id: ObjectId(id),
        }
    }
}

/// A reading of the kernel's monotonic clock, in nanoseconds since the
/// hypervisor booted (the same clock as a witness record's `timestamp`).
///
/// Expiries are absolute `Timestamp`s: a capability whose expiry is `t` is
/// usable while `now < t`. [`Timestamp::NEVER`] does not expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// An expiry that is never reached.
    pub const NEVER: Timestamp = Timestamp(u64::MAX);
    /// Nanoseconds per second.
    pub const NANOS_PER_SEC: u64 = 1_000_000_000;

    /// `now` has reached this expiry.
    pub const fn is_reached_at(self, now: Timestamp) -> bool {
        now.0 >= self.0
    }

    /// Convert an expiry given in Unix seconds (the capability table's form,
    /// `0` = never) to the kernel clock, given the Unix time in seconds at which
    /// the kernel clock read zero. An expiry at or before boot is already
    /// reached ([`Timestamp`]`(0)`); one too far away to represent never is.
    pub fn from_unix_expiry(expires_at_unix_secs: u64, boot_unix_secs: u64) -> Timestamp {
        if expires_at_unix_secs == 0 {
            return Timestamp::NEVER;
        }
        match expires_at_unix_secs.checked_sub(boot_unix_secs) {
            None | Some(0) => Timestamp(0),
            Some(secs) => secs
                .checked_mul(Self::NANOS_PER_SEC)
                .map_or(Timestamp::NEVER, Timestamp),
        }
    }
}

/// A quota accounting period. The kernel derives it from its clock (for
/// example `now / epoch_length`) and passes it in; a capability's usage is
/// reset when a later epoch is seen. An earlier epoch than one already seen
/// (a clock stepping backwards) counts against the later one, so going back
/// in time never refills a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

/// A replay-guard nonce. Each capability remembers the last nonce it
/// accepted; the next must be strictly greater. Nonces therefore start at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nonce(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_expiry_conversion() {
        assert_eq!(Timestamp::from_unix_expiry(0, 1_000), Timestamp::NEVER);
        assert_eq!(Timestamp::from_unix_expiry(999, 1_000), Timestamp(0));
        assert_eq!(Timestamp::from_unix_expiry(1_000, 1_000), Timestamp(0));
        assert_eq!(
            Timestamp::from_unix_expiry(1_002, 1_000),
            Timestamp(2_000_000_000)
        );
        assert_eq!(Timestamp::from_unix_expiry(u64::MAX, 0), Timestamp::NEVER);
    }

    #[test]
    fn expiry_is_reached_at_its_instant() {
        let t = Timestamp(10);
        assert!(!t.is_reached_at(Timestamp(9)));
        assert!(t.is_reached_at(Timestamp(10)));
        assert!(!Timestamp::NEVER.is_reached_at(Timestamp(u64::MAX - 1)));
    }
}
