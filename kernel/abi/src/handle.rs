//! Capability handles: what a guest holds instead of a capability.

/// An index into the calling partition's capability table plus the slot's
/// generation. Packed into one register as `generation << 16 | index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CapHandle {
    pub index: u16,
    pub generation: u32,
}

impl CapHandle {
    /// Handle value that never names a capability.
    pub const NONE: u64 = u64::MAX;

    pub const fn new(index: u16, generation: u32) -> Self {
        Self { index, generation }
    }

    /// The register form.
    pub const fn to_raw(self) -> u64 {
        ((self.generation as u64) << 16) | self.index as u64
    }

    /// Decode a register; `None` if bits above the 48-bit form are set.
    pub fn from_raw(raw: u64) -> Option<Self> {
        if raw >> 48 != 0 {
            return None;
        }
        let index = u16::try_from(raw & 0xffff).ok()?;
        let generation = u32::try_from(raw >> 16).ok()?;
        Some(Self { index, generation })
    }

    /// The 32-bit form written into witness records.
    pub fn witness_id(self) -> u32 {
        (self.generation << 16) | u32::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        let h = CapHandle::new(7, 0xdead_beef);
        assert_eq!(CapHandle::from_raw(h.to_raw()), Some(h));
        assert_eq!(CapHandle::from_raw(1 << 48), None);
    }
}
