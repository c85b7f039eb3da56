//! The tool desk's state: each partition's claims (the resource patterns
//! of its `Resource` capabilities, bound to their handles at load), and the
//! host's answer being read off the control channel.

use alloc::string::String;
use alloc::vec::Vec;

/// One claim of a partition: the handle of the `Resource` capability that
/// carries it and its pattern (`rvm_cap::claim`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimOf {
    pub raw: u64,
    pub pattern: String,
}

/// Why a partition's claims were not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// It names no capability of the partition, or one named twice.
    NoSuchCapability,
    /// Its capability is not a `Resource`, or the pattern does not hash to
    /// its resource digest.
    NotItsResource,
    /// The pattern is not a claim (`rvm_cap::claim::parse`).
    NotAClaim,
}

/// A `ToolAnswer` being read: whose, and its response so far.
#[derive(Debug)]
pub(crate) struct AnswerIn {
    pub log: u32,
    pub seq: u64,
    pub status: i32,
    /// Response bytes the frame carries.
    pub len: usize,
    /// What arrived of them; `None` when they could not be kept (no
    /// memory): the answer is then read to its end and taken as a failure.
    pub bytes: Option<Vec<u8>>,
    pub arrived: usize,
}

/// Claims by partition position, and the answer being read.
#[derive(Debug, Default)]
pub struct ToolDesk {
    claims: Vec<Vec<ClaimOf>>,
    answer: Option<AnswerIn>,
    /// Calls sent to the host, and answered by it, so far.
    sent: u64,
    answered: u64,
}

impl ToolDesk {
    /// Partition `idx`'s claims, in capability order.
    pub fn claims(&self, idx: usize) -> &[ClaimOf] {
        self.claims.get(idx).map_or(&[], Vec::as_slice)
    }

    /// Partition `idx` was (re)created with these claims.
    pub(crate) fn set_claims(&mut self, idx: usize, claims: Vec<ClaimOf>) {
        if self.claims.len() <= idx {
            self.claims.resize_with(idx + 1, Vec::new);
        }
        self.claims[idx] = claims;
    }

    /// An answer of `len` response bytes begins (one in progress before it
    /// is dropped: the stream carries one frame at a time).
    pub(crate) fn begin(&mut self, log: u32, seq: u64, status: i32, len: usize) {
        let mut bytes = Vec::new();
        let kept = bytes.try_reserve_exact(len).is_ok();
        self.answer = Some(AnswerIn { log, seq, status, len, bytes: kept.then_some(bytes), arrived: 0 });
    }

    /// The next response byte; the whole answer once it is complete.
    pub(crate) fn byte(&mut self, b: u8) -> Option<AnswerIn> {
        let a = self.answer.as_mut()?;
        if let Some(v) = a.bytes.as_mut() {
            v.push(b);
        }
        a.arrived += 1;
        if a.arrived >= a.len {
            return self.answer.take();
        }
        None
    }

    /// The answer that began, if it needs no bytes.
    pub(crate) fn take_if_complete(&mut self) -> Option<AnswerIn> {
        if self.answer.as_ref().is_some_and(|a| a.arrived >= a.len) {
            return self.answer.take();
        }
        None
    }

    pub(crate) fn note_sent(&mut self) {
        self.sent += 1;
    }

    pub(crate) fn note_answered(&mut self) {
        self.answered += 1;
    }

    /// Calls sent to the host and answered by it (or timed out) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.sent, self.answered)
    }
}
