//! The kernel's witness logs (crate `rvm-witness`): one chain per partition
//! plus the hypervisor's own, each streamed to the console UART as frames the
//! moment a record is appended, with signed checkpoints.
//!
//! The checkpoint signing key comes from the bundle's `WitnessKeySeed` entry
//! (the loader keeps one per `RVM_HOME`). A bundle without one gets a key
//! derived from the bundle's own digest: such checkpoints prove integrity but
//! not origin, and the boot banner says so.

use alloc::collections::BTreeMap;

use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome, WitnessOp, WitnessRecord};
use rvm_witness::{CheckpointSigner, LogConfig, LogId, WitnessLog};

use crate::arch::Arch;

/// A kernel-decision record about log `log`'s partition, stamped `now`.
pub(crate) fn event_record(log: u32, event: KernelEvent, outcome: Outcome, args: [u8; 16], now: u64) -> WitnessRecord {
    let mut rec = WitnessRecord::new(WitnessOp::Event(event), outcome, log);
    rec.args = args;
    rec.timestamp = now;
    rec
}

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
    /// A decision that could not be refused went unrecorded: the run stops.
    lost: bool,
    /// Decisions admitted so far (test hook: [`Witness::inject`]).
    #[cfg(test)]
    admissions: u64,
    #[cfg(test)]
    inject: Option<FailAt>,
    #[cfg(test)]
    fail_checkpoints: bool,
    /// Test hook: every record appended, as (admissions before it, log, op).
    #[cfg(test)]
    trace: alloc::vec::Vec<(u64, u32, u16)>,
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

/// Test hook: which admissions (unreserved appends and reservations,
/// counted from 0 across all logs) the witness refuses: `count` of them
/// from number `at` on (`u64::MAX`: a log that stays full).
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailAt {
    pub at: u64,
    pub count: u64,
}

#[cfg(test)]
impl FailAt {
    pub(crate) const fn once(at: u64) -> Self {
        Self { at, count: 1 }
    }
    pub(crate) const fn from(at: u64) -> Self {
        Self { at, count: u64::MAX }
    }
}

impl Witness {
    /// Test hook: every record appended, as (admissions before it, log, op).
    #[cfg(test)]
    pub(crate) fn trace(&self) -> &[(u64, u32, u16)] {
        &self.trace
    }

    /// `seed` is borrowed from the bundle and not copied; the signer keeps
    /// the only copy the hypervisor needs.
    pub fn new(seed: Option<&[u8; 32]>, checkpoint_every: u32, fallback: [u8; 32]) -> Self {
        let derived_key = seed.is_none();
        let signer = CheckpointSigner::from_seed(seed.unwrap_or(&fallback));
        let config = LogConfig {
            checkpoints: rvm_witness::CheckpointPolicy {
                every: core::num::NonZeroU64::new(u64::from(checkpoint_every)),
                ..rvm_witness::CheckpointPolicy::default()
            },
            ..LogConfig::default()
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
            #[cfg(test)]
            trace: alloc::vec::Vec::new(),
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
        arch.send_frame(&rvm_abi::control::Outgoing::Witness(&key.frame()));
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
        self.inject.is_some_and(|f| n >= f.at && n - f.at < f.count)
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
        if self.logs.get(&id).is_none_or(|l| l.held() == 0) && self.injected_refusal() {
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
        #[cfg(test)]
        self.trace.push((self.admissions, id, rec.op));
        if appended.checkpoint_due && !checkpoints_fail {
            // Cannot fail right after a due append (memory was reserved); if
            // it did, the log owes the checkpoint and refuses what follows.
            let _ = log.checkpoint(signer);
        }
        while let Some(out) = log.drain_next() {
            arch.send_frame(&rvm_abi::control::Outgoing::Witness(&out.to_frame(LogId(id))));
        }
        Ok(appended.seq)
    }

    /// Append `rec` with room held by `r` (one of its slots): cannot fail,
    /// short of a kernel bug — then `None`, and the witness is lost.
    pub fn append_held(&mut self, arch: &mut dyn Arch, r: &mut Reservation, rec: WitnessRecord) -> Option<u64> {
        debug_assert!(r.left > 0, "a reservation used past its size");
        r.left = r.left.saturating_sub(1);
        // `hold` made this append unable to fail; a malformed record (a
        // kernel bug) is the only way left, and it marks the witness lost so
        // the hypervisor stops instead of going on unwitnessed.
        match self.append(arch, r.log, rec) {
            Ok(seq) => Some(seq),
            Err(_) => {
                self.lost = true;
                None
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

    /// Sign log `id`'s head now and stream the checkpoint (a record that
    /// must be covered by a signature before the host acts on it). A log
    /// that cannot be signed owes the checkpoint and refuses what follows.
    pub fn checkpoint(&mut self, arch: &mut dyn Arch, id: u32) {
        if self.checkpoints_fail() {
            return;
        }
        let signer = &self.signer;
        let Some(log) = self.logs.get_mut(&id) else { return };
        if log.checkpoint(signer).is_ok() {
            while let Some(out) = log.drain_next() {
                arch.send_frame(&rvm_abi::control::Outgoing::Witness(&out.to_frame(LogId(id))));
            }
        }
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
                    arch.send_frame(&rvm_abi::control::Outgoing::Witness(&out.to_frame(LogId(*id))));
                }
            }
        }
    }

    /// Log `id` continues an earlier boot's, from `from` (that boot's last
    /// checkpoint of it, signed with this hypervisor's key, and its Merkle
    /// frontier). Only before the log's first record of this boot.
    pub fn resume(&mut self, id: u32, from: &rvm_abi::bundle::LogResume<'_>) -> Result<(), rvm_witness::ResumeError> {
        let key = self.signer.public_key();
        let checkpoint = rvm_witness::SignedCheckpoint {
            checkpoint: rvm_witness::Checkpoint {
                log: LogId(id),
                size: from.size,
                root: rvm_witness::Hash(from.root),
                head: rvm_witness::Hash(from.head),
            },
            key_id: key.key_id(),
            signature: from.signature,
        };
        let frontier: alloc::vec::Vec<rvm_witness::Hash> = from.frontier().map(rvm_witness::Hash).collect();
        if self.logs.contains_key(&id) {
            return Err(rvm_witness::ResumeError::OtherLog { found: LogId(id) });
        }
        let log = WitnessLog::resume(LogId(id), self.config, &checkpoint, &frontier, &key)?;
        self.logs.insert(id, log);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeArch;
    use rvm_abi::witness::{KernelEvent, Outcome, WitnessOp};
    use rvm_abi::frame::Frame;

    fn event(partition: u32) -> WitnessRecord {
        WitnessRecord::new(WitnessOp::Event(KernelEvent::Psci), Outcome::Done, partition)
    }

    /// Records of log `id` streamed to the console.
    fn streamed(arch: &FakeArch, id: u32) -> u64 {
        arch.console_text()
            .lines()
            .filter_map(Frame::parse)
            .filter(|f| matches!(f, Frame::Record { log, .. } if *log == id))
            .count() as u64
    }

    #[test]
    fn append_never_answers_err_once_the_record_is_in_the_chain() {
        // Every record announces a checkpoint, and signing fails: the record
        // is in the chain all the same, so the answer is `Ok`, and it is
        // streamed. What follows is refused (the checkpoint is owed) with
        // nothing appended, until the checkpoint can be signed.
        let mut arch = FakeArch::new();
        let mut w = Witness::new(Some(&[3; 32]), 1, [0; 32]);
        w.fail_checkpoints(true);
        let first = w.append(&mut arch, 4, event(4));
        assert_eq!((w.records(4), streamed(&arch, 4)), (1, 1), "the record entered the chain and was streamed");
        assert_eq!(first, Ok(0), "an append whose record is in the chain answers Ok");
        let head = w.head(4);
        assert_eq!(w.append(&mut arch, 4, event(4)), Err(HvError::WitnessUnavailable));
        assert!(w.hold(4, 1).is_err());
        assert_eq!((w.records(4), w.head(4)), (1, head), "a refusal appends nothing");
        w.fail_checkpoints(false);
        assert_eq!(w.append(&mut arch, 4, event(4)), Ok(1), "the owed checkpoint is signed first");
        assert_eq!(streamed(&arch, 4), 2);
    }

    #[test]
    fn every_answer_is_one_of_two_outcomes_under_random_failures() {
        // A small deterministic generator: appends, holds, releases, held
        // appends, failing admissions and failing checkpoints in any order.
        let mut arch = FakeArch::new();
        let mut w = Witness::new(Some(&[5; 32]), 3, [0; 32]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut held: Option<Reservation> = None;
        let (mut oks, mut errs, mut held_appends) = (0, 0, 0);
        for _ in 0..4000 {
            let r = next();
            // Held room is taken by the next appends to its log (the
            // operation that held it): plain appends go to the other log
            // while a reservation is out.
            let id = match &held {
                Some(h) if (r >> 12) % 4 < 2 => 3 - h.log(),
                _ => (r % 2) as u32 + 1,
            };
            // Signing cannot fail after a due append (the log reserved its
            // memory); the hook models it failing anyway, outside held room
            // (inside, it would be a bug: the witness is then lost, below).
            w.fail_checkpoints(held.is_none() && r & 0x30 == 0x30);
            w.inject(if r & 0x700 == 0x700 { Some(FailAt::once(w.admissions())) } else { None });
            let before = w.records(id);
            match (r >> 12) % 4 {
                0 | 1 => match w.append(&mut arch, id, event(id)) {
                    Ok(seq) => {
                        oks += 1;
                        assert_eq!((seq, w.records(id)), (before, before + 1));
                    }
                    Err(_) => {
                        errs += 1;
                        assert_eq!(w.records(id), before, "Err with a record in the chain");
                    }
                },
                2 => {
                    if let Some(r) = held.take() {
                        w.release(r);
                    }
                    held = w.hold(id, 2).ok();
                }
                _ => {
                    if let Some(mut r) = held.take() {
                        let log = r.log();
                        let before = w.records(log);
                        if r.left > 0 {
                            w.append_held(&mut arch, &mut r, event(log));
                            assert_eq!(w.records(log), before + 1, "a held append cannot fail");
                            held_appends += 1;
                        }
                        held = Some(r);
                    }
                }
            }
            assert!(!w.lost());
        }
        assert!(oks > 100 && errs > 100 && held_appends > 100, "{oks} {errs} {held_appends}");
    }

    #[test]
    fn held_room_survives_a_log_that_refuses_everything_else() {
        let mut arch = FakeArch::new();
        let mut w = Witness::new(Some(&[3; 32]), 2, [0; 32]);
        let mut r = w.hold(7, 3).unwrap();
        w.inject(Some(FailAt::from(w.admissions())));
        for n in 0..3 {
            assert_eq!(w.append_held(&mut arch, &mut r, event(7)), Some(n));
        }
        w.release(r);
        assert_eq!(w.append(&mut arch, 7, event(7)), Err(HvError::WitnessUnavailable));
        assert!(w.hold(7, 1).is_err());
        assert_eq!(w.records(7), 3);
        assert!(!w.lost());
    }

    #[test]
    fn a_held_append_that_fails_after_all_marks_the_witness_lost() {
        // Only a kernel bug gets here (a checkpoint that cannot be signed
        // although its memory was reserved): the hypervisor must stop.
        let mut arch = FakeArch::new();
        let mut w = Witness::new(Some(&[3; 32]), 1, [0; 32]);
        let mut r = w.hold(2, 2).unwrap();
        w.fail_checkpoints(true);
        w.append_held(&mut arch, &mut r, event(2));
        assert!(!w.lost());
        w.append_held(&mut arch, &mut r, event(2));
        assert!(w.lost(), "a held append that could not be written is not ignored");
    }
}
