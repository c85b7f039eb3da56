//! The seven capability rights.

bitflags::bitflags! {
    /// Rights a capability carries. Derivation may only remove rights.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Rights: u8 {
        /// Read the object (region bytes, channel receive, store get, log query).
        const READ = 1 << 0;
        /// Change it (region write, channel send, store stage/commit).
        const WRITE = 1 << 1;
        /// Derive a capability for another partition with equal or fewer rights.
        const GRANT = 1 << 2;
        /// Revoke the capabilities derived from this one (the whole subtree).
        const REVOKE = 1 << 3;
        /// Start code: spawn a WASM module, run a partition.
        const EXECUTE = 1 << 4;
        /// Ask for a signed attestation of an object's state or the log head.
        const PROVE = 1 << 5;
        /// Derive exactly once; consumed by the first successful derive.
        const GRANT_ONCE = 1 << 6;
    }
}

/// The rights in bit order with their names as written in capability tables.
pub const RIGHT_NAMES: [(Rights, &str); 7] = [
    (Rights::READ, "READ"),
    (Rights::WRITE, "WRITE"),
    (Rights::GRANT, "GRANT"),
    (Rights::REVOKE, "REVOKE"),
    (Rights::EXECUTE, "EXECUTE"),
    (Rights::PROVE, "PROVE"),
    (Rights::GRANT_ONCE, "GRANT_ONCE"),
];

impl Rights {
    // `Rights::from_name` (exact upper-case name) comes from `bitflags`.

    /// The index (0..7) of a single right, for per-right tables.
    pub fn index(self) -> Option<usize> {
        RIGHT_NAMES.iter().position(|(r, _)| *r == self)
    }

    /// Iterate the single rights set in `self`, in bit order.
    pub fn each(self) -> impl Iterator<Item = (Rights, &'static str)> {
        RIGHT_NAMES.into_iter().filter(move |(r, _)| self.contains(*r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cover_all_bits() {
        let mut all = Rights::empty();
        for (i, (r, n)) in RIGHT_NAMES.iter().enumerate() {
            assert_eq!(Rights::from_name(n), Some(*r));
            assert_eq!(r.index(), Some(i));
            all |= *r;
        }
        assert_eq!(all, Rights::all());
        assert_eq!(Rights::from_name("read"), None);
        assert_eq!(Rights::from_name("ADMIN"), None);
    }
}
