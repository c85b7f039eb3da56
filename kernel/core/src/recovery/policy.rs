//! The recovery policy (docs/DESIGN.md section 7): which class of response a fault
//! gets, as small named types decided without touching the machine.
//!
//! | class | triggers | response (applied by `crate::recovery::fault`) |
//! |---|---|---|
//! | F1 restart | WASM trap, runtime panic, failed restore | fresh runtime from the pristine image; committed state kept |
//! | F2 rollback | the [`Escalation::limit`]-th F1 fault within the window; a failed state validation | restore the last snapshot (memory and committed state as of that turn boundary) |
//! | F3 fence | stage-2 violation or any other hardware fault; hypercall abuse; the limit-th F2 within the window | vCPU stopped, capabilities suspended, memory kept |
//! | F4 evict | a fence not cleared within the fence timeout; an operator order | capabilities revoked, memory scrubbed and returned, final record |
//!
//! Escalation never skips a class: a fault of the F1 class becomes an F2 only
//! when the window already holds `limit - 1` restarts, and an F2 becomes an
//! F3 only when the window already holds `limit - 1` rollbacks. The faults
//! that demand more go straight to their class: a hardware fault or abuse is
//! fenced at once (the partition's code, not its agent, misbehaved), and an
//! operator's eviction of a running partition fences it first.

use alloc::collections::VecDeque;

use rvm_abi::bundle::RecoveryDesc;
use rvm_abi::HvError;

/// One of the four responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecoveryClass {
    /// F1: restart the guest runtime from the pristine image.
    Restart,
    /// F2: roll the guest back to its last snapshot.
    Rollback,
    /// F3: fence the partition.
    Fence,
    /// F4: evict the partition.
    Evict,
}

impl RecoveryClass {
    /// `F1` .. `F4`.
    pub const fn label(self) -> &'static str {
        match self {
            RecoveryClass::Restart => "F1",
            RecoveryClass::Rollback => "F2",
            RecoveryClass::Fence => "F3",
            RecoveryClass::Evict => "F4",
        }
    }

    /// What the response does, in a few words.
    pub const fn action(self) -> &'static str {
        match self {
            RecoveryClass::Restart => "restarted",
            RecoveryClass::Rollback => "rolled back",
            RecoveryClass::Fence => "fenced",
            RecoveryClass::Evict => "evicted",
        }
    }
}

/// What happened, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The agent trapped (the runtime exited with `exit::TRAP`).
    Trap,
    /// The guest runtime panicked or took an exception at EL1.
    RuntimePanic,
    /// The runtime could not restore the snapshot it was handed.
    RestoreFailed,
    /// A state validation failed (nothing was committed).
    FailedValidation,
    /// A stage-2 abort outside the demand-paged heap.
    Stage2Violation,
    /// An undefined instruction, an SMC or another exception from EL1.
    HardwareFault,
    /// [`AbusePolicy::limit`] invalid calls within its window.
    HypercallAbuse,
    /// The fence stood longer than the fence timeout.
    FenceTimeout,
    /// The operator ordered an eviction.
    OperatorEvict,
}

impl Trigger {
    /// The class this trigger asks for before any escalation.
    pub const fn base_class(self) -> RecoveryClass {
        match self {
            Trigger::Trap | Trigger::RuntimePanic | Trigger::RestoreFailed => RecoveryClass::Restart,
            Trigger::FailedValidation => RecoveryClass::Rollback,
            Trigger::Stage2Violation | Trigger::HardwareFault | Trigger::HypercallAbuse => RecoveryClass::Fence,
            Trigger::FenceTimeout | Trigger::OperatorEvict => RecoveryClass::Evict,
        }
    }

    /// A short description for the console.
    pub const fn describe(self) -> &'static str {
        match self {
            Trigger::Trap => "agent trapped",
            Trigger::RuntimePanic => "guest runtime panicked",
            Trigger::RestoreFailed => "snapshot restore failed",
            Trigger::FailedValidation => "state validation failed",
            Trigger::Stage2Violation => "stage-2 violation",
            Trigger::HardwareFault => "hardware fault",
            Trigger::HypercallAbuse => "hypercall abuse",
            Trigger::FenceTimeout => "fence timed out",
            Trigger::OperatorEvict => "operator order",
        }
    }

    /// The code recorded in the recovery step's witness record
    /// ([`rvm_abi::recovery::trigger`]).
    pub const fn code(self) -> u8 {
        use rvm_abi::recovery::trigger as t;
        match self {
            Trigger::Trap => t::TRAP,
            Trigger::RuntimePanic => t::RUNTIME_PANIC,
            Trigger::RestoreFailed => t::RESTORE_FAILED,
            Trigger::FailedValidation => t::FAILED_VALIDATION,
            Trigger::Stage2Violation => t::STAGE2_VIOLATION,
            Trigger::HardwareFault => t::HARDWARE_FAULT,
            Trigger::HypercallAbuse => t::HYPERCALL_ABUSE,
            Trigger::FenceTimeout => t::FENCE_TIMEOUT,
            Trigger::OperatorEvict => t::OPERATOR,
        }
    }
}

/// "`limit` events within `window_ns`": the threshold of one escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalation {
    /// The event that makes `limit` within the window escalates (≥ 1).
    pub limit: u8,
    /// Length of the sliding window.
    pub window_ns: u64,
}

/// How many invalid hypercalls make abuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbusePolicy {
    /// Denials that count, within `window_ns`, that fence the partition;
    /// `None` = never (a partition that fuzzes the interface on purpose).
    pub limit: Option<u16>,
    pub window_ns: u64,
}

impl AbusePolicy {
    /// 16 invalid calls within one second.
    pub const DEFAULT: AbusePolicy = AbusePolicy { limit: Some(16), window_ns: 1_000_000_000 };

    /// The policy of a bundle's `abuse_limit` (0 = default, `ABUSE_NEVER` = off).
    pub const fn from_limit(limit: u16) -> Self {
        match limit {
            0 => Self::DEFAULT,
            RecoveryDesc::ABUSE_NEVER => AbusePolicy { limit: None, ..Self::DEFAULT },
            n => AbusePolicy { limit: Some(n), ..Self::DEFAULT },
        }
    }

    /// Whether a denial with `error` counts: every refusal does (an unknown
    /// call, a bad argument, buffer or handle, missing rights or proof, a
    /// spent quota, ...), except flow control an honest agent meets in normal
    /// operation (`WouldBlock`, `Full`), a failed validation (its own
    /// response, [`ValidationResponse`]), a log that could not take the
    /// record (not the caller's doing) and `Abuse` itself.
    pub const fn counts(error: HvError) -> bool {
        !matches!(
            error,
            HvError::WouldBlock | HvError::Full | HvError::ValidationFailed | HvError::WitnessUnavailable | HvError::Abuse
        )
    }
}

/// What a failed state validation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationResponse {
    /// Deny the call and roll the partition back (F2): the working state
    /// that produced an invalid write is not trusted to continue.
    Rollback,
    /// Deny the call only; the agent sees `ValidationFailed`.
    ReportOnly,
}

/// A partition's recovery thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// F1 → F2.
    pub restarts: Escalation,
    /// F2 → F3.
    pub rollbacks: Escalation,
    /// F3 → F4; `None` = only on the operator's order.
    pub fence_timeout_ns: Option<u64>,
    /// Hypercall abuse → F3.
    pub abuse: AbusePolicy,
    /// A failed state validation.
    pub on_failed_validation: ValidationResponse,
}

const NS_PER_MS: u64 = 1_000_000;

impl RecoveryPolicy {
    /// The defaults of [`RecoveryDesc::DEFAULT`].
    pub const DEFAULT: RecoveryPolicy = RecoveryPolicy::from_desc(&RecoveryDesc::DEFAULT);

    /// The policy a bundle's recovery thresholds state. A zero limit or
    /// window means "the default"; a zero fence timeout means "until the
    /// operator acts".
    pub const fn from_desc(d: &RecoveryDesc) -> Self {
        let def = RecoveryDesc::DEFAULT;
        let window_ms = if d.window_ms == 0 { def.window_ms } else { d.window_ms };
        let window_ns = window_ms as u64 * NS_PER_MS;
        RecoveryPolicy {
            restarts: Escalation { limit: if d.f1_limit == 0 { def.f1_limit } else { d.f1_limit }, window_ns },
            rollbacks: Escalation { limit: if d.f2_limit == 0 { def.f2_limit } else { d.f2_limit }, window_ns },
            fence_timeout_ns: if d.fence_timeout_ms == 0 { None } else { Some(d.fence_timeout_ms as u64 * NS_PER_MS) },
            abuse: AbusePolicy::from_limit(d.abuse_limit),
            on_failed_validation: ValidationResponse::Rollback,
        }
    }
}

/// Times of recent events, oldest first, bounded by a limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventWindow {
    times: VecDeque<u64>,
}

impl EventWindow {
    /// Events within `window_ns` before `now`.
    pub fn count(&mut self, now: u64, window_ns: u64) -> usize {
        while self.times.front().is_some_and(|&t| now.saturating_sub(t) >= window_ns) {
            self.times.pop_front();
        }
        self.times.len()
    }

    /// Record an event at `now`, keeping at most `keep` entries.
    pub fn record(&mut self, now: u64, keep: usize) {
        self.times.push_back(now);
        while self.times.len() > keep.max(1) {
            self.times.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.times.clear();
    }
}

/// Totals shown in the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryCounts {
    pub restarts: u32,
    pub rollbacks: u32,
    pub fences: u32,
    pub unfences: u32,
}

/// One partition's recovery history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryState {
    pub policy: RecoveryPolicy,
    restarts: EventWindow,
    rollbacks: EventWindow,
    abuse: EventWindow,
    /// When the current fence began, if fenced.
    pub fenced_at: Option<u64>,
    pub counts: RecoveryCounts,
}

impl RecoveryState {
    pub fn new(policy: RecoveryPolicy) -> Self {
        Self {
            policy,
            restarts: EventWindow::default(),
            rollbacks: EventWindow::default(),
            abuse: EventWindow::default(),
            fenced_at: None,
            counts: RecoveryCounts::default(),
        }
    }

    /// The class `trigger` gets at `now`, escalated by the history, without
    /// recording anything (see [`RecoveryState::record`]).
    pub fn decide(&mut self, trigger: Trigger, now: u64) -> RecoveryClass {
        let mut class = trigger.base_class();
        if class == RecoveryClass::Restart {
            let e = self.policy.restarts;
            if self.restarts.count(now, e.window_ns) + 1 >= usize::from(e.limit) {
                class = RecoveryClass::Rollback;
            }
        }
        if class == RecoveryClass::Rollback {
            let e = self.policy.rollbacks;
            if self.rollbacks.count(now, e.window_ns) + 1 >= usize::from(e.limit) {
                class = RecoveryClass::Fence;
            }
        }
        class
    }

    /// Record that `class` was applied at `now`. A rollback starts the F1
    /// count afresh (the faults it answered are spent); a fence or an
    /// unfence starts both afresh.
    pub fn record(&mut self, class: RecoveryClass, now: u64) {
        match class {
            RecoveryClass::Restart => {
                self.restarts.record(now, usize::from(self.policy.restarts.limit));
                self.counts.restarts += 1;
            }
            RecoveryClass::Rollback => {
                self.restarts.clear();
                self.rollbacks.record(now, usize::from(self.policy.rollbacks.limit));
                self.counts.rollbacks += 1;
            }
            RecoveryClass::Fence => {
                self.fenced_at = Some(now);
                self.counts.fences += 1;
            }
            RecoveryClass::Evict => self.fenced_at = None,
        }
    }

    /// An operator cleared the fence at `now`: the history starts afresh.
    pub fn unfenced(&mut self) {
        self.fenced_at = None;
        self.restarts.clear();
        self.rollbacks.clear();
        self.abuse.clear();
        self.counts.unfences += 1;
    }

    /// Count a denied hypercall; true when it makes abuse.
    pub fn note_denial(&mut self, error: HvError, now: u64) -> bool {
        if !AbusePolicy::counts(error) {
            return false;
        }
        let a = self.policy.abuse;
        let Some(limit) = a.limit else { return false };
        self.abuse.record(now, usize::from(limit));
        self.abuse.count(now, a.window_ns) >= usize::from(limit)
    }

    /// Whether the fence has stood past the timeout at `now`.
    pub fn fence_expired(&self, now: u64) -> bool {
        match (self.fenced_at, self.policy.fence_timeout_ns) {
            (Some(at), Some(timeout)) => now.saturating_sub(at) >= timeout,
            _ => false,
        }
    }

    /// When the fence will expire, if it will.
    pub fn fence_deadline(&self) -> Option<u64> {
        Some(self.fenced_at?.saturating_add(self.policy.fence_timeout_ns?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn state() -> RecoveryState {
        RecoveryState::new(RecoveryPolicy::DEFAULT)
    }

    /// Decide and apply, as the kernel does.
    fn step(s: &mut RecoveryState, t: Trigger, now: u64) -> RecoveryClass {
        let c = s.decide(t, now);
        s.record(c, now);
        c
    }

    #[test]
    fn defaults_come_from_the_bundle_and_zero_means_default() {
        let p = RecoveryPolicy::DEFAULT;
        assert_eq!(p.restarts, Escalation { limit: 3, window_ns: 10_000 * MS });
        assert_eq!(p.rollbacks, Escalation { limit: 2, window_ns: 10_000 * MS });
        assert_eq!(p.fence_timeout_ns, None);
        let zero = RecoveryDesc { f1_limit: 0, f2_limit: 0, window_ms: 0, fence_timeout_ms: 0, abuse_limit: 0 };
        assert_eq!(RecoveryPolicy::from_desc(&zero), p);
        let custom = RecoveryDesc { f1_limit: 1, f2_limit: 4, window_ms: 50, fence_timeout_ms: 200, abuse_limit: 3 };
        let c = RecoveryPolicy::from_desc(&custom);
        assert_eq!(c.restarts, Escalation { limit: 1, window_ns: 50 * MS });
        assert_eq!(c.rollbacks.limit, 4);
        assert_eq!(c.fence_timeout_ns, Some(200 * MS));
        assert_eq!(c.abuse.limit, Some(3));
        let never = RecoveryDesc { abuse_limit: RecoveryDesc::ABUSE_NEVER, ..RecoveryDesc::DEFAULT };
        assert_eq!(RecoveryPolicy::from_desc(&never).abuse.limit, None);
    }

    #[test]
    fn the_third_trap_in_the_window_is_a_rollback() {
        let mut s = state();
        assert_eq!(step(&mut s, Trigger::Trap, 0), RecoveryClass::Restart);
        assert_eq!(step(&mut s, Trigger::RuntimePanic, MS), RecoveryClass::Restart);
        assert_eq!(step(&mut s, Trigger::Trap, 2 * MS), RecoveryClass::Rollback);
        // The rollback spent the restarts: the next trap is an F1 again.
        assert_eq!(step(&mut s, Trigger::Trap, 3 * MS), RecoveryClass::Restart);
        assert_eq!(s.counts, RecoveryCounts { restarts: 3, rollbacks: 1, fences: 0, unfences: 0 });
    }

    #[test]
    fn faults_outside_the_window_do_not_escalate() {
        let mut s = state();
        let w = s.policy.restarts.window_ns;
        for n in 0..10 {
            assert_eq!(step(&mut s, Trigger::Trap, n * w), RecoveryClass::Restart, "trap {n}");
        }
        // Two inside the window, the third just inside: F2.
        let t = 20 * w;
        step(&mut s, Trigger::Trap, t);
        step(&mut s, Trigger::Trap, t + 1);
        assert_eq!(s.decide(Trigger::Trap, t + w - 1), RecoveryClass::Rollback);
        // ... but at t + w the first has left the window.
        assert_eq!(s.decide(Trigger::Trap, t + w), RecoveryClass::Restart);
    }

    #[test]
    fn repeated_rollbacks_fence_and_never_skip_a_class() {
        let mut s = state();
        let mut seen = alloc::vec::Vec::new();
        for n in 0..6 {
            seen.push(step(&mut s, Trigger::Trap, n * MS));
        }
        use RecoveryClass::*;
        assert_eq!(seen, [Restart, Restart, Rollback, Restart, Restart, Fence]);
        assert_eq!(s.fenced_at, Some(5 * MS));
        // A failed validation asks for F2, and the second F2 in the window fences.
        let mut v = state();
        assert_eq!(step(&mut v, Trigger::FailedValidation, 0), Rollback);
        assert_eq!(step(&mut v, Trigger::FailedValidation, MS), Fence);
    }

    #[test]
    fn hardware_faults_and_abuse_fence_at_once() {
        for t in [Trigger::Stage2Violation, Trigger::HardwareFault, Trigger::HypercallAbuse] {
            assert_eq!(state().decide(t, 0), RecoveryClass::Fence, "{t:?}");
        }
        for t in [Trigger::FenceTimeout, Trigger::OperatorEvict] {
            assert_eq!(state().decide(t, 0), RecoveryClass::Evict, "{t:?}");
        }
    }

    #[test]
    fn abuse_counts_only_invalid_handles_and_buffers_within_its_window() {
        let mut s = state();
        let limit = u64::from(s.policy.abuse.limit.unwrap());
        for n in 0..100 {
            assert!(!s.note_denial(HvError::WouldBlock, n));
            assert!(!s.note_denial(HvError::ValidationFailed, n));
        }
        for n in 1..limit {
            assert!(!s.note_denial(HvError::BadHandle, n), "denial {n}");
        }
        assert!(s.note_denial(HvError::BadAddress, limit));
        // Spread over more than the window, the same number is no abuse.
        let mut slow = state();
        let gap = slow.policy.abuse.window_ns / (limit - 1) + 1;
        for n in 0..3 * limit {
            assert!(!slow.note_denial(HvError::BadHandle, n * gap), "denial {n}");
        }
        // A partition whose manifest turns abuse fencing off is never fenced for it.
        let desc = RecoveryDesc { abuse_limit: RecoveryDesc::ABUSE_NEVER, ..RecoveryDesc::DEFAULT };
        let mut off = RecoveryState::new(RecoveryPolicy::from_desc(&desc));
        for n in 0..10 * limit {
            assert!(!off.note_denial(HvError::BadHandle, n));
        }
    }

    #[test]
    fn a_fence_expires_only_with_a_timeout() {
        let mut s = state();
        step(&mut s, Trigger::Stage2Violation, 5);
        assert!(!s.fence_expired(u64::MAX), "no timeout: only the operator evicts");
        let desc = RecoveryDesc { fence_timeout_ms: 100, ..RecoveryDesc::DEFAULT };
        let mut t = RecoveryState::new(RecoveryPolicy::from_desc(&desc));
        step(&mut t, Trigger::Stage2Violation, 5);
        assert_eq!(t.fence_deadline(), Some(5 + 100 * MS));
        assert!(!t.fence_expired(4 + 100 * MS));
        assert!(t.fence_expired(5 + 100 * MS));
        t.unfenced();
        assert!(!t.fence_expired(u64::MAX));
        assert_eq!(t.counts.unfences, 1);
    }
}
