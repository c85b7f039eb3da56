//! Test plans: a few bytes of configuration that a test patches into a built
//! module, found by a marker, so one agent binary can play several roles in
//! integration tests without a host-to-device channel. The bytes are read
//! through an opaque reference, so the compiler keeps them in the module's
//! data and never folds the defaults into the code.

/// Length of the marker that precedes a plan's bytes.
pub const MARKER_LEN: usize = 16;

/// A marker, then `N` bytes of plan.
#[repr(C)]
pub struct Plan<const N: usize> {
    marker: [u8; MARKER_LEN],
    bytes: [u8; N],
}

impl<const N: usize> Plan<N> {
    /// A plan with its marker and default bytes.
    pub const fn new(marker: [u8; MARKER_LEN], defaults: [u8; N]) -> Self {
        Self {
            marker,
            bytes: defaults,
        }
    }

    /// The plan's bytes as they are in the module now. The read goes
    /// through an opaque reference, so the compiler cannot fold the
    /// defaults into the code and the bytes stay in the module's data.
    pub fn read(&self) -> [u8; N] {
        *core::hint::black_box(&self.bytes)
    }

    /// The marker (read the same way, so the static stays whole).
    pub fn marker(&self) -> [u8; MARKER_LEN] {
        *core::hint::black_box(&self.marker)
    }
}

/// Where the plan bytes following `marker` start in a built `module`, if
/// the marker is there and `len` bytes follow it (for the test that patches
/// them).
pub fn locate(module: &[u8], marker: &[u8; MARKER_LEN], len: usize) -> Option<usize> {
    let at = module.windows(MARKER_LEN).position(|w| w == marker)? + MARKER_LEN;
    (at + len <= module.len()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_found_after_its_marker() {
        static P: Plan<3> = Plan::new(*b"TEST-PLAN-MARK01", [1, 2, 3]);
        assert_eq!(P.read(), [1, 2, 3]);
        let mut module = std::vec![0u8; 8];
        module.extend_from_slice(&P.marker());
        module.extend_from_slice(&[1, 2, 3, 9]);
        assert_eq!(locate(&module, b"TEST-PLAN-MARK01", 3), Some(24));
        assert_eq!(locate(&module, b"TEST-PLAN-MARK02", 1), None);
        assert_eq!(locate(&module, b"TEST-PLAN-MARK01", 5), None);
    }
}
