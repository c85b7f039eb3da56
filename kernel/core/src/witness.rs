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

/// All logs and the key that signs their checkpoints.
pub struct Witness {
    logs: BTreeMap<u32, WitnessLog>,
    signer: CheckpointSigner,
    config: LogConfig,
    derived_key: bool,
    /// A decision that could not be refused went unrecorded: the run stops.
    lost: bool,
    /// Decisions admitted so far (test hook: [`Witness::inject`]).
    #[cfg(test)]
    admissions: u64,
    #[cfg(test)]
    inject: Option<FailAt>,
    #[cfg(test)]
    fail_checkpoints: bool,
}

/// Room held in one log for a number of records (from [`Witness::hold`]):
/// appends within it cannot fail. Spend it with [`Witness::append_held`];
/// give back what is left with [`Witness::release`].
#[must_use = "a reservation holds log room until it is spent or released"]
#[derive(Debug)]
pub struct Reservation {
    log: u32,
    left: u32,
    /// Room the log held before (reservations nest, innermost first).
    base: usize,
}

impl Reservation {
    /// The log it holds room in.
    pub fn log(&self) -> u32 {
        self.log
    }

    /// Keep the held room for plain appends to the log (they take held
    /// slots first).
    pub fn keep(self) {}
}

/// Test hook: which admission (an unreserved append or a reservation,
/// counted from 0 across all logs) the witness refuses, and whether every
/// later one is refused too (a log that stays full).
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailAt {
    pub at: u64,
    pub sticky: bool,
}

impl Witness {
    pub fn new(seed: Option<[u8; 32]>, checkpoint_every: u32, fallback: [u8; 32]) -> Self {
        let derived_key = seed.is_none();
        let signer = CheckpointSigner::from_seed(&seed.unwrap_or(fallback));
        let mut config = LogConfig::default();
        config.checkpoints = rvm_witness::CheckpointPolicy {
            every: core::num::NonZeroU64::new(u64::from(checkpoint_every)),
            ..rvm_witness::CheckpointPolicy::default()
        };
        Self {
            logs: BTreeMap::new(),
            signer,
            config,
            derived_key,
            lost: false,
            #[cfg(test)]
            admissions: 0,
            #[cfg(test)]
            inject: None,
            #[cfg(test)]
            fail_checkpoints: false,
        }
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

    /// Log `id`, created on first use, with a checkpoint it still owes
    /// (an earlier signing that failed) settled if it can be now.
    fn open(&mut self, id: u32) -> Result<&mut WitnessLog, HvError> {
        let checkpoints_fail = self.checkpoints_fail();
        if !self.logs.contains_key(&id) {
            let l = WitnessLog::new(LogId(id), self.config).map_err(|_| HvError::WitnessUnavailable)?;
            self.logs.insert(id, l);
        }
        let signer = &self.signer;
        let log = self.logs.get_mut(&id).ok_or(HvError::WitnessUnavailable)?;
        if log.owes_checkpoint() && !checkpoints_fail {
            let _ = log.checkpoint(signer);
        }
        Ok(log)
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn checkpoints_fail(&self) -> bool {
        false
    }

    #[cfg(test)]
    fn checkpoints_fail(&self) -> bool {
        self.fail_checkpoints
    }

    /// Test hook: count one admission (an unreserved append or a
    /// reservation) and say whether the injected failure refuses it.
    #[cfg(test)]
    fn injected_refusal(&mut self) -> bool {
        let n = self.admissions;
        self.admissions += 1;
        self.inject.is_some_and(|f| n == f.at || (f.sticky && n > f.at))
    }

    /// Make sure the next append to log `id` cannot fail (see
    /// `WitnessLog::reserve`): for operations applied before their record.
    /// The slot is held until that append.
    pub fn reserve(&mut self, id: u32) -> Result<(), HvError> {
        self.hold(id, 1).map(|r| r.keep())
    }

    /// Hold room for `n` records in log `id`: the next `n` appends to it
    /// cannot fail (ring slots, sequence numbers, memory for the checkpoints
    /// they may announce, all taken now). The fail-closed pattern for every
    /// kernel decision: hold, then change state, then append — on `Err`
    /// nothing was held and the change must not happen.
    pub fn hold(&mut self, id: u32, n: u32) -> Result<Reservation, HvError> {
        let count = usize::try_from(n).map_err(|_| HvError::WitnessUnavailable)?;
        #[cfg(test)]
        if self.injected_refusal() {
            return Err(HvError::WitnessUnavailable);
        }
        let log = self.open(id)?;
        let base = log.held();
        log.reserve(count).map_err(HvError::from)?;
        Ok(Reservation { log: id, left: n, base })
    }

    /// Give back what is left of `r` (an operation that wrote fewer records
    /// than it held room for, or spent part of it through plain appends).
    pub fn release(&mut self, r: Reservation) {
        if let Some(log) = self.logs.get_mut(&r.log) {
            log.unreserve(log.held().saturating_sub(r.base));
        }
    }

    /// Append `rec` to log `id` and stream it (and any checkpoint now due).
    /// Exactly two outcomes: `Ok` — the record is in the chain (and its
    /// frame is streamed now or with the next drain); `Err` — nothing was
    /// appended and the operation the record describes must not happen. A
    /// checkpoint that cannot be signed after the record went in does not
    /// turn the answer into `Err`: the log then owes it and refuses further
    /// records until it is signed. An append to a log with room held (see
    /// [`Witness::hold`]) takes one held slot and cannot fail.
    pub fn append(&mut self, arch: &mut dyn Arch, id: u32, rec: WitnessRecord) -> Result<u64, HvError> {
        #[cfg(test)]
        if !self.logs.get(&id).is_some_and(|l| l.held() > 0) && self.injected_refusal() {
            return Err(HvError::WitnessUnavailable);
        }
        let checkpoints_fail = self.checkpoints_fail();
        let signer = &self.signer;
        let log = match self.logs.get_mut(&id) {
            Some(l) => l,
            None => {
                let l = WitnessLog::new(LogId(id), self.config).map_err(|_| HvError::WitnessUnavailable)?;
                self.logs.entry(id).or_insert(l)
            }
        };
        if log.owes_checkpoint() && !checkpoints_fail {
            let _ = log.checkpoint(signer);
        }
        let appended = log.append(rec).map_err(HvError::from)?;
        if appended.checkpoint_due && !checkpoints_fail {
            // Cannot fail right after a due append (memory was reserved); if
            // it did, the log owes the checkpoint and refuses what follows.
            let _ = log.checkpoint(signer);
        }
        while let Some(out) = log.drain_next() {
            arch.console_write(out.to_frame(LogId(id)).encode().as_bytes());
        }
        Ok(appended.seq)
    }

    /// Append `rec` with room held by `r` (one of its slots): cannot fail.
    pub fn append_held(&mut self, arch: &mut dyn Arch, r: &mut Reservation, rec: WitnessRecord) -> u64 {
        debug_assert!(r.left > 0, "a reservation used past its size");
        r.left = r.left.saturating_sub(1);
        // `hold` made this append unable to fail; a malformed record (a
        // kernel bug) is the only way left, and it marks the witness lost so
        // the hypervisor stops instead of going on unwitnessed.
        match self.append(arch, r.log, rec) {
            Ok(seq) => seq,
            Err(_) => {
                self.lost = true;
                self.records(r.log)
            }
        }
    }

    /// Whether a record the kernel could not refuse was not written
    /// anywhere: the hypervisor must stop.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Mark the witness lost (see [`Witness::lost`]).
    pub(crate) fn set_lost(&mut self) {
        self.lost = true;
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

    /// Test hook: refuse admissions as `fail` says.
    #[cfg(test)]
    pub(crate) fn inject(&mut self, fail: Option<FailAt>) {
        self.inject = fail;
    }

    /// Test hook: admissions so far.
    #[cfg(test)]
    pub(crate) fn admissions(&self) -> u64 {
        self.admissions
    }

    /// Test hook: every checkpoint signing fails.
    #[cfg(test)]
    pub(crate) fn fail_checkpoints(&mut self, fail: bool) {
        self.fail_checkpoints = fail;
    }
}
