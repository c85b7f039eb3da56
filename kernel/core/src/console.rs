//! Console output: guest text is line-buffered per partition and printed as
//! `[name] text`, so a guest can never start a line of its own (and so can
//! never forge a witness frame or the exit frame); control characters are
//! replaced, `\r` dropped, `\n` ends the guest's line. Every line, a
//! guest's or the hypervisor's, goes to the UART in one write, so no output
//! from elsewhere (another CPU's panic, say) can land inside it and leave
//! the rest of a guest's line at the start of one.
//!
//! # Output credits
//!
//! The console is shared, so each partition has a share of it
//! ([`OutputCredit`]): byte buckets refilled with time. Guest text beyond
//! [`TEXT_RATE`] (after a burst of [`TEXT_BURST`]) is not taken:
//! `ConsoleWrite` reads (and witnesses) only the bytes within the credit,
//! answers how many it took, and drops and counts the rest; the first drop
//! is noted in a line of the hypervisor, and the run summary says how many
//! bytes were dropped. Witness frames are the audit trail and are never
//! dropped:
//! each record a partition's calls produce is charged [`RECORD_FRAME_COST`]
//! to its frame bucket ([`FRAME_RATE`], [`FRAME_BURST`]); a partition in
//! debt is not picked to run until the bucket refilled (back-pressure on the
//! producer, not its neighbours). Snapshots are charged the same way
//! ([`SNAPSHOT_RATE`], [`SNAPSHOT_BURST`]): a snapshot storm holds
//! back the partition that storms. The machine buffers console output and
//! sends it with the kernel lock released ([`Arch::console_write`]).

use crate::arch::Arch;

/// Print a hypervisor line: `rvm: ...`, in one write (a line longer than
/// [`HYP_LINE_MAX`] goes out in pieces of that size; all of it is the
/// hypervisor's own text).
pub fn hyp_line(arch: &mut dyn Arch, args: core::fmt::Arguments<'_>) {
    let mut w = LineWriter {
        arch,
        buf: [0; HYP_LINE_MAX],
        len: 0,
    };
    let _ = core::fmt::write(&mut w, format_args!("rvm: {}\n", args));
    w.flush();
}

/// The longest hypervisor line written in one piece.
pub const HYP_LINE_MAX: usize = 512;

struct LineWriter<'a> {
    arch: &'a mut dyn Arch,
    buf: [u8; HYP_LINE_MAX],
    len: usize,
}

impl LineWriter<'_> {
    fn flush(&mut self) {
        if self.len > 0 {
            self.arch.console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl core::fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == HYP_LINE_MAX {
                self.flush();
            }
            let n = rest.len().min(HYP_LINE_MAX - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Printable form of a guest byte.
pub(crate) fn sanitize(b: u8) -> u8 {
    match b {
        b'\t' | 0x20..=0x7e => b,
        _ if b >= 0x80 => b, // UTF-8 continuation and lead bytes pass
        _ => b'?',
    }
}

/// Guest text a partition may print at once (bytes).
pub const TEXT_BURST: u64 = 16 << 10;
/// Guest text a partition may print per second (bytes), after the burst.
pub const TEXT_RATE: u64 = 32 << 10;
/// Witness frames a partition's calls may produce at once (bytes).
pub const FRAME_BURST: u64 = 64 << 10;
/// Witness frames a partition's calls may produce per second (bytes).
pub const FRAME_RATE: u64 = 512 << 10;
/// Snapshot bytes a partition may hand over at once (then it is held
/// back like a partition in debt for its frames: a snapshot storm costs
/// the storming partition its CPU, not the others the kernel lock).
pub const SNAPSHOT_BURST: u64 = 32 << 20;
/// Snapshot bytes a partition may hand over per second after the burst.
pub const SNAPSHOT_RATE: u64 = 16 << 20;
/// Bytes one record's `@W` frame takes at most: `@W`, a space, a 10-digit
/// log id, a space, 128 hex digits, the line end (`\r\n`).
pub const RECORD_FRAME_COST: u64 = 2 + 1 + 10 + 1 + 128 + 2;

/// A partition's share of the console ([module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputCredit {
    /// Text bytes it may still print.
    text: u64,
    /// Frame bytes it may still produce (negative: in debt).
    frames: i64,
    /// Snapshot bytes it may still hand over (negative: in debt).
    snapshots: i64,
    /// When the buckets were last refilled.
    at_ns: u64,
    /// Text bytes dropped over the run.
    pub dropped: u64,
    /// Whether text was dropped already (only the first drop is noted; the
    /// run summary counts them all).
    dropping: bool,
    /// Times the partition went into debt (for its frames or snapshots)
    /// and was held back.
    pub held: u64,
}

impl Default for OutputCredit {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputCredit {
    pub const fn new() -> Self {
        Self {
            text: TEXT_BURST,
            frames: FRAME_BURST as i64,
            snapshots: SNAPSHOT_BURST as i64,
            at_ns: 0,
            dropped: 0,
            dropping: false,
            held: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        let dt = now.saturating_sub(self.at_ns);
        if dt == 0 {
            return;
        }
        self.at_ns = now;
        let add = |rate: u64| {
            u64::try_from(u128::from(dt) * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
        };
        self.text = self.text.saturating_add(add(TEXT_RATE)).min(TEXT_BURST);
        let f = i64::try_from(add(FRAME_RATE)).unwrap_or(i64::MAX);
        self.frames = self.frames.saturating_add(f).min(FRAME_BURST as i64);
        let c = i64::try_from(add(SNAPSHOT_RATE)).unwrap_or(i64::MAX);
        self.snapshots = self
            .snapshots
            .saturating_add(c)
            .min(SNAPSHOT_BURST as i64);
    }

    /// How many of `len` text bytes may be printed at `now` (charged).
    pub fn take_text(&mut self, now: u64, len: usize) -> usize {
        self.refill(now);
        let n = u64::try_from(len).unwrap_or(u64::MAX).min(self.text);
        self.text -= n;
        usize::try_from(n).unwrap_or(0)
    }

    /// Charge one witness record's frame (never refused); counts the times
    /// the partition goes into debt.
    #[inline]
    pub fn charge_frame(&mut self, now: u64) {
        self.charge_frame_bytes(now, RECORD_FRAME_COST);
    }

    /// Charge `bytes` of frames for the host that a call made (a tool
    /// request); as [`OutputCredit::charge_frame`].
    #[inline]
    pub fn charge_frame_bytes(&mut self, now: u64, bytes: u64) {
        let before = self.frames;
        self.frames = self.frames.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        if self.frames < 0 {
            self.refill(now);
            if before >= 0 && self.frames < 0 {
                self.held += 1;
            }
        }
    }

    /// Charge a snapshot of `bytes` (never refused); counts the times
    /// the partition goes into debt.
    pub fn charge_snapshot(&mut self, now: u64, bytes: u64) {
        self.refill(now);
        let before = self.snapshots;
        self.snapshots = self
            .snapshots
            .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        if before >= 0 && self.snapshots < 0 {
            self.held += 1;
        }
    }

    /// `n` bytes of text were dropped over the credit; true for the first
    /// drop (which the hypervisor notes in a line).
    pub fn note_dropped(&mut self, n: usize) -> bool {
        self.dropped += n as u64;
        !core::mem::replace(&mut self.dropping, true)
    }

    /// Whether a bucket was overdrawn when last charged (cheap: no clock;
    /// [`OutputCredit::in_debt`] says whether it still is).
    #[inline]
    pub fn owes(&self) -> bool {
        self.frames < 0 || self.snapshots < 0
    }

    /// Whether the partition owes frame bytes at `now`: it is not picked to
    /// run until it does not.
    #[inline]
    pub fn in_debt(&self, now: u64) -> bool {
        if !self.owes() {
            return false;
        }
        let dt = u128::from(now.saturating_sub(self.at_ns));
        let owes = |bucket: i64, rate: u64| {
            let add = dt * u128::from(rate) / 1_000_000_000;
            i128::from(bucket) + i128::try_from(add).unwrap_or(i128::MAX) < 0
        };
        owes(self.frames, FRAME_RATE) || owes(self.snapshots, SNAPSHOT_RATE)
    }
}
