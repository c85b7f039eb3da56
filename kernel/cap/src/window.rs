//! Byte windows: the part of an object a capability may touch (P2).

/// An inclusive range of byte offsets `first..=last` within an object.
///
/// Inclusive bounds let the whole 64-bit offset space be one window
/// ([`ByteWindow::WHOLE`]) without overflow; an empty window cannot be
/// represented, because a capability that can touch nothing is not issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteWindow {
    first: u64,
    last: u64,
}

/// A byte access an operation makes: `len` bytes from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub offset: u64,
    pub len: u64,
}

impl ByteWindow {
    /// Every offset.
    pub const WHOLE: ByteWindow = ByteWindow {
        first: 0,
        last: u64::MAX,
    };

    /// `len` bytes from `start`; `None` if `len` is 0 or the end overflows.
    pub fn new(start: u64, len: u64) -> Option<Self> {
        let last = start.checked_add(len.checked_sub(1)?)?;
        Some(Self { first: start, last })
    }

    /// The window as a capability table writes it: `len == 0` means from
    /// `start` to the end of the object.
    pub fn from_table(start: u64, len: u64) -> Option<Self> {
        if len == 0 {
            Some(Self {
                first: start,
                last: u64::MAX,
            })
        } else {
            Self::new(start, len)
        }
    }

    /// First offset inside the window.
    pub const fn first(self) -> u64 {
        self.first
    }

    /// Last offset inside the window (inclusive).
    pub const fn last(self) -> u64 {
        self.last
    }

    /// `other` lies entirely inside `self`.
    pub const fn contains(self, other: ByteWindow) -> bool {
        other.first >= self.first && other.last <= self.last
    }

    /// The access lies entirely inside the window. A zero-length access is
    /// admitted when its offset lies inside. Overflow-safe: an access whose
    /// end wraps is never admitted.
    pub fn admits(self, access: Access) -> bool {
        if access.offset < self.first || access.offset > self.last {
            return false;
        }
        match access.len.checked_sub(1) {
            None => true,
            Some(extra) => match access.offset.checked_add(extra) {
                Some(end) => end <= self.last,
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction() {
        assert_eq!(ByteWindow::new(0, 0), None);
        assert_eq!(ByteWindow::new(u64::MAX, 2), None);
        let w = ByteWindow::new(u64::MAX, 1).unwrap();
        assert_eq!((w.first(), w.last()), (u64::MAX, u64::MAX));
        assert_eq!(ByteWindow::from_table(0, 0), Some(ByteWindow::WHOLE));
        assert_eq!(ByteWindow::from_table(16, 0).unwrap().last(), u64::MAX);
        assert_eq!(ByteWindow::from_table(16, 16).unwrap().last(), 31);
    }

    #[test]
    fn admits_edges_and_wrapping() {
        let w = ByteWindow::new(100, 50).unwrap(); // 100..=149
        assert!(w.admits(Access {
            offset: 100,
            len: 50
        }));
        assert!(w.admits(Access {
            offset: 149,
            len: 1
        }));
        assert!(w.admits(Access {
            offset: 120,
            len: 0
        }));
        assert!(!w.admits(Access {
            offset: 100,
            len: 51
        }));
        assert!(!w.admits(Access { offset: 99, len: 1 }));
        assert!(!w.admits(Access {
            offset: 150,
            len: 0
        }));
        assert!(!w.admits(Access {
            offset: 120,
            len: u64::MAX
        }));
        let whole = ByteWindow::WHOLE;
        assert!(whole.admits(Access {
            offset: 0,
            len: u64::MAX
        }));
        assert!(whole.admits(Access {
            offset: 1,
            len: u64::MAX
        }));
        assert!(!whole.admits(Access {
            offset: 2,
            len: u64::MAX
        }));
    }

    #[test]
    fn containment() {
        let outer = ByteWindow::new(10, 100).unwrap();
        assert!(outer.contains(ByteWindow::new(10, 100).unwrap()));
        assert!(outer.contains(ByteWindow::new(50, 10).unwrap()));
        assert!(!outer.contains(ByteWindow::new(9, 10).unwrap()));
        assert!(!outer.contains(ByteWindow::new(100, 11).unwrap()));
        assert!(ByteWindow::WHOLE.contains(outer));
        assert!(!outer.contains(ByteWindow::WHOLE));
    }
}
