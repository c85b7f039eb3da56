//! The loader's model of what the adapter's files say, after validation.
//! Everything here is safe to store, to print and to put in a bundle.

use rvm_abi::bundle::MemoryTier;
use rvm_abi::ident::{self, IdentError};
use rvm_abi::{ProofTier, Rights};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A partition name: a safe identifier ([`rvm_abi::ident::check`]); it
/// reaches file paths (`witness/<name>.log`), the console prefix and the device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartitionName(String);

impl PartitionName {
    pub fn new(s: &str) -> Result<Self, IdentError> {
        ident::check(s)?;
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PartitionName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::new(&s).map_err(|e| format!("partition name {e}"))
    }
}

impl From<PartitionName> for String {
    fn from(n: PartitionName) -> String {
        n.0
    }
}

impl fmt::Display for PartitionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A scheduler signal in hundredths, 0..=100 (the manifest's 0.00..1.00).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Hundredths(u8);

impl Hundredths {
    pub const MAX: u8 = 100;
    pub fn new(v: u8) -> Option<Self> {
        (v <= Self::MAX).then_some(Self(v))
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Hundredths {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Self::new(v).ok_or_else(|| format!("{v} hundredths is above 1.00"))
    }
}

impl From<Hundredths> for u8 {
    fn from(h: Hundredths) -> u8 {
        h.0
    }
}

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// SHA-256 of an Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyFingerprint(pub [u8; 32]);

impl KeyFingerprint {
    /// Accepts 64 hex digits, optionally prefixed `sha256:`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let mut out = [0u8; 32];
        rvm_abi::hex::decode(hex.as_bytes(), &mut out)?;
        Some(Self(out))
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        let hex = rvm_abi::hex::encode(&self.0, &mut buf).unwrap_or_default();
        write!(f, "sha256:{}", core::str::from_utf8(hex).unwrap_or("?"))
    }
}

impl TryFrom<String> for KeyFingerprint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| "not a SHA-256 fingerprint".to_string())
    }
}

impl From<KeyFingerprint> for String {
    fn from(k: KeyFingerprint) -> String {
        k.to_string()
    }
}

/// `serde` forms of ABI types, by their names in the adapter's files.
pub mod serde_abi {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub mod memory_tier {
        use super::*;
        pub fn serialize<S: Serializer>(t: &MemoryTier, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(t.name())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MemoryTier, D::Error> {
            let s = String::deserialize(d)?;
            MemoryTier::from_name(&s).ok_or_else(|| serde::de::Error::custom("unknown memory tier"))
        }
    }

    pub mod proof_tier {
        use super::*;
        pub fn serialize<S: Serializer>(t: &ProofTier, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(t.name())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ProofTier, D::Error> {
            let s = String::deserialize(d)?;
            ProofTier::from_name(&s).ok_or_else(|| serde::de::Error::custom("unknown proof tier"))
        }
    }

    pub mod rights {
        use super::*;
        pub fn serialize<S: Serializer>(r: &Rights, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(r.each().map(|(_, n)| n))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rights, D::Error> {
            let names = Vec::<String>::deserialize(d)?;
            let mut r = Rights::empty();
            for n in names {
                r |= Rights::from_name(&n)
                    .ok_or_else(|| serde::de::Error::custom("unknown right"))?;
            }
            Ok(r)
        }
    }
}

/// How the guest's lifecycle is run. The adapter emits only `managed`:
/// RVM starts, restarts (F1) and stops the guest itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Managed,
}

impl Lifecycle {
    pub fn from_name(s: &str) -> Option<Self> {
        (s == "managed").then_some(Lifecycle::Managed)
    }
    pub fn name(self) -> &'static str {
        "managed"
    }
}

/// An npm package reference (`[wasm_guest]` of the manifest or `guest` of
/// `wasm-guest.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPackage {
    pub package: String,
    pub version: String,
}

impl fmt::Display for GuestPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.package, self.version)
    }
}

/// Which emitter wrote the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum ManifestFormat {
    /// `rvm-partition.toml` of `@metaharness/host-rvm`.
    Adapter,
    /// `rvm.manifest.toml` of the scaffolder (`[harness]`).
    Scaffold { isolation: String, witness: String },
}

/// `[metadata]` of the manifest: carried for the operator (listings) and
/// kept with the registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub description: Option<String>,
    pub system_prompt: Option<String>,
}

/// A partition manifest, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub name: PartitionName,
    #[serde(with = "serde_abi::memory_tier")]
    pub memory_tier: MemoryTier,
    pub deadline_urgency: Hundredths,
    pub cut_pressure: Hundredths,
    pub witness_key_fingerprint: Option<KeyFingerprint>,
    /// `partition.dormant_after_ms`: a `Warm` partition that waited this
    /// long for a message may go dormant; 0 = never.
    #[serde(default)]
    pub dormant_after_ms: u32,
    /// `[wasm_guest]`: the guest the manifest expects.
    pub wasm_guest: Option<(GuestPackage, Lifecycle)>,
    pub metadata: Metadata,
    pub format: ManifestFormat,
}

/// A capability token, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(with = "serde_abi::rights")]
    pub rights: Rights,
    /// The tier every right of the token runs at.
    #[serde(with = "serde_abi::proof_tier")]
    pub proof_tier: ProofTier,
    /// The named resource; `None` = the token is not scoped to one.
    pub resource: Option<String>,
    /// Unix seconds; 0 = never.
    pub expires_at: u64,
}

/// Recovery response of a failure class (docs/DESIGN.md section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureClass {
    F1,
    F2,
    F3,
    F4,
}

impl FailureClass {
    pub const ALL: [FailureClass; 4] = [
        FailureClass::F1,
        FailureClass::F2,
        FailureClass::F3,
        FailureClass::F4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailureClass::F1 => "F1",
            FailureClass::F2 => "F2",
            FailureClass::F3 => "F3",
            FailureClass::F4 => "F4",
        }
    }

    /// The only response RVM gives to this class.
    pub fn response(self) -> &'static str {
        match self {
            FailureClass::F1 => "restart-guest",
            FailureClass::F2 => "rollback-to-checkpoint",
            FailureClass::F3 => "partition-fence",
            FailureClass::F4 => "partition-evict",
        }
    }
}

/// `companion` of `wasm-guest.json`: informational only, never deployed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Companion {
    pub package: Option<String>,
    pub version: Option<String>,
    pub wasm_addon: Option<String>,
    pub recommended: Option<bool>,
    pub reason: Option<String>,
}

/// `wasm-guest.json`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRef {
    pub partition: PartitionName,
    pub guest: GuestPackage,
    /// Path of the entry file inside the package (relative, no `..`).
    pub entrypoint: String,
    pub companion: Option<Companion>,
    pub lifecycle: Lifecycle,
    #[serde(with = "serde_abi::proof_tier")]
    pub proof_tier_default: ProofTier,
    /// `failure_class_recovery`, checked to be the responses RVM gives.
    pub failure_class_recovery: Vec<(FailureClass, String)>,
}
