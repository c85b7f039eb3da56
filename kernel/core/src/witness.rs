//! The kernel's witness logs (crate `rvm-witness`): one chain per partition
//! plus the hypervisor's own, each streamed to the console UART as frames the
//! moment a record is appended, with signed checkpoints.
//!
//! The checkpoint signing key comes from the bundle's `WitnessKeySeed` entry
//! (the loader keeps one per `RVM_HOME`). A bundle without one gets a key
//! derived from the bundle's own digest: such checkpoints prove integrity but
//! not origin, and the boot banner says so.

use alloc::collections::BTreeMap;

use rvm_abi::{HvError, WitnessRecord};
use rvm_witness::{CheckpointSigner, LogConfig, LogId, WitnessLog};

use crate::arch::Arch;

/// Zero every secret `bundle` carries (the [`EntryKind::WitnessKeySeed`]
/// entry's bytes) in place, once the hypervisor has booted from it, so the
/// initrd no longer holds the witness key. Returns how many bytes were
/// zeroed (0 for a bundle without a seed, or one that does not parse).
/// The rest of the bundle is left as it was.
///
/// [`EntryKind::WitnessKeySeed`]: rvm_abi::bundle::EntryKind::WitnessKeySeed
pub fn scrub_bundle_secrets(bundle: &mut [u8]) -> usize {
    use rvm_abi::bundle::{Bundle, EntryKind};
    let mut ranges: alloc::vec::Vec<core::ops::Range<usize>> = alloc::vec::Vec::new();
    {
        let Ok(parsed) = Bundle::parse(bundle) else { return 0 };
        let base = bundle.as_ptr() as usize;
        for e in parsed.entries().filter(|e| e.kind == EntryKind::WitnessKeySeed) {
            // The entry's data is a sub-slice of `bundle`: its offset is the
            // distance between the two starts.
            let start = e.data.as_ptr() as usize - base;
            ranges.push(start..start + e.data.len());
        }
    }
    let mut zeroed = 0;
    for r in ranges {
        if let Some(bytes) = bundle.get_mut(r) {
            bytes.fill(0);
            // Keep the stores: the zeros must reach memory even though
            // nothing in this program reads them again.
            core::hint::black_box(&mut *bytes);
            zeroed += bytes.len();
        }
    }
    zeroed
}

/// All logs and the key that signs their checkpoints.
pub struct Witness {
    logs: BTreeMap<u32, WitnessLog>,
    signer: CheckpointSigner,
    config: LogConfig,
    derived_key: bool,
}

impl Witness {
    /// `seed` is borrowed from the bundle and not copied; the signer keeps
    /// the only copy the hypervisor needs.
    pub fn new(seed: Option<&[u8; 32]>, checkpoint_every: u32, fallback: [u8; 32]) -> Self {
        let derived_key = seed.is_none();
        let signer = CheckpointSigner::from_seed(seed.unwrap_or(&fallback));
        let mut config = LogConfig::default();
        config.checkpoints = rvm_witness::CheckpointPolicy {
            every: core::num::NonZeroU64::new(u64::from(checkpoint_every)),
            ..rvm_witness::CheckpointPolicy::default()
        };
        Self { logs: BTreeMap::new(), signer, config, derived_key }
    }

    /// Print the signing key's frame and fingerprint.
    pub fn announce_key(&self, arch: &mut dyn Arch) {
        let key = self.signer.public_key();
        crate::console::hyp_line(
            arch,
            format_args!(
                "witness key fingerprint {}{}",
                key.fingerprint(),
                if self.derived_key { " (derived from the bundle: not secret)" } else { "" }
            ),
        );
        arch.console_write(key.frame().encode().as_bytes());
    }

    /// The public key's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.signer.public_key().fingerprint().0
    }

    /// Make sure the next append to log `id` cannot fail (see
    /// `WitnessLog::reserve_next`): for operations applied before their record.
    pub fn reserve(&mut self, id: u32) -> Result<(), HvError> {
        if !self.logs.contains_key(&id) {
            let l = WitnessLog::new(LogId(id), self.config).map_err(|_| HvError::WitnessUnavailable)?;
            self.logs.insert(id, l);
        }
        let log = self.logs.get_mut(&id).ok_or(HvError::WitnessUnavailable)?;
        log.reserve_next().map_err(HvError::from)
    }

    /// Append `rec` to log `id` and stream it (and any checkpoint now due).
    /// Fail-closed: `Err` means nothing was recorded and the operation the
    /// record describes must not happen.
    pub fn append(&mut self, arch: &mut dyn Arch, id: u32, rec: WitnessRecord) -> Result<u64, HvError> {
        let signer = &self.signer;
        let log = match self.logs.get_mut(&id) {
            Some(l) => l,
            None => {
                let l = WitnessLog::new(LogId(id), self.config).map_err(|_| HvError::WitnessUnavailable)?;
                self.logs.entry(id).or_insert(l)
            }
        };
        let appended = log.append(rec).map_err(HvError::from)?;
        if appended.checkpoint_due {
            log.checkpoint(signer).map_err(HvError::from)?;
        }
        while let Some(out) = log.drain_next() {
            arch.console_write(out.to_frame(LogId(id)).encode().as_bytes());
        }
        Ok(appended.seq)
    }

    /// Sign every log's head (at shutdown) and stream the checkpoints.
    pub fn checkpoint_all(&mut self, arch: &mut dyn Arch) {
        let signer = &self.signer;
        for (id, log) in self.logs.iter_mut() {
            if log.size() == 0 {
                continue;
            }
            if log.checkpoint(signer).is_ok() {
                while let Some(out) = log.drain_next() {
                    arch.console_write(out.to_frame(LogId(*id)).encode().as_bytes());
                }
            }
        }
    }

    /// Records in log `id`.
    pub fn records(&self, id: u32) -> u64 {
        self.logs.get(&id).map_or(0, WitnessLog::size)
    }

    /// The chain head of log `id` after its last record, if the log exists.
    pub fn head(&self, id: u32) -> Option<[u8; 32]> {
        self.logs.get(&id).map(|l| l.head().0)
    }

    /// Sign `message` with the hypervisor's key (the checkpoint key): the
    /// `Prove` attestations. Their messages begin with a NUL-containing
    /// binary tag, so none can be mistaken for a checkpoint note (text).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signer.sign(message)
    }

    /// The hypervisor's public key (announced in the `@K` frame).
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key().0
    }
}
