//! Proof tiers: how much checking an operation gets.

/// The proof tier an operation runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ProofTier {
    /// Capability: handle live, generation matches, rights suffice.
    P1 = 1,
    /// Policy: P1 plus expiry, byte window, quota and replay nonce.
    P2 = 2,
    /// Proof: P2 plus the derivation chain to the root and a signature.
    P3 = 3,
}

impl ProofTier {
    pub const fn name(self) -> &'static str {
        match self {
            ProofTier::P1 => "P1",
            ProofTier::P2 => "P2",
            ProofTier::P3 => "P3",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "P1" => Some(ProofTier::P1),
            "P2" => Some(ProofTier::P2),
            "P3" => Some(ProofTier::P3),
            _ => None,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(ProofTier::P1),
            2 => Some(ProofTier::P2),
            3 => Some(ProofTier::P3),
            _ => None,
        }
    }
}
