//! Address newtypes: a guest-physical address is never confused with a
//! host-physical one.

use core::fmt;

/// Size of a translation granule and of every frame RVM hands out.
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_SIZE` as a `usize`, for buffer lengths.
pub const PAGE_BYTES: usize = 4096;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident, $tag:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn new(v: u64) -> Self {
                Self(v)
            }
            pub const fn raw(self) -> u64 {
                self.0
            }
            pub const fn is_page_aligned(self) -> bool {
                self.0 % PAGE_SIZE == 0
            }
            pub const fn page_base(self) -> Self {
                Self(self.0 & !(PAGE_SIZE - 1))
            }
            pub const fn page_offset(self) -> u64 {
                self.0 % PAGE_SIZE
            }
            /// `self + bytes`, or `None` on overflow.
            pub fn checked_add(self, bytes: u64) -> Option<Self> {
                self.0.checked_add(bytes).map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($tag, "{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($tag, "{:#x}"), self.0)
            }
        }
    };
}

address!(
    /// A host-physical address (what stage-2 tables map to).
    PhysAddr,
    "pa:"
);
address!(
    /// An intermediate-physical address: what a partition believes is physical.
    Ipa,
    "ipa:"
);

/// Round `v` up to a multiple of the page size, or `None` on overflow.
pub fn page_round_up(v: u64) -> Option<u64> {
    v.checked_add(PAGE_SIZE - 1).map(|x| x & !(PAGE_SIZE - 1))
}

/// A half-open range of host-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: PhysAddr,
    pub end: PhysAddr,
}

impl PhysRange {
    pub fn new(start: PhysAddr, len: u64) -> Option<Self> {
        Some(Self { start, end: start.checked_add(len)? })
    }
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn contains(&self, pa: PhysAddr) -> bool {
        self.start <= pa && pa < self.end
    }
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_arithmetic() {
        let a = Ipa::new(0x4000_1234);
        assert_eq!(a.page_base(), Ipa::new(0x4000_1000));
        assert_eq!(a.page_offset(), 0x234);
        assert!(!a.is_page_aligned());
        assert_eq!(page_round_up(1), Some(PAGE_SIZE));
        assert_eq!(page_round_up(u64::MAX), None);
        assert_eq!(Ipa::new(u64::MAX).checked_add(1), None);
        let r = PhysRange::new(PhysAddr::new(0x1000), 0x2000).unwrap();
        assert!(r.contains(PhysAddr::new(0x2fff)) && !r.contains(PhysAddr::new(0x3000)));
    }
}
