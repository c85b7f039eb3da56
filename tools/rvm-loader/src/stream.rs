//! The serial stream of a run: split into lines, console text told apart
//! from witness frames (`rvm_abi::frame`), frames handed to the witness
//! sink, the partitions' lifecycle followed from the kernel-event records so
//! the operator sees progress, and the hypervisor's exit status taken from
//! its exit frame (`@X`, a whole line: guests' lines all start `[name] `).

use crate::home::RunState;
use crate::model::PartitionName;
use crate::witness_sink::{LogNames, SinkError, WitnessSink};
use rvm_abi::frame::{ExitFrame, Frame};
use rvm_abi::journal::{self, JournalFrame};
use rvm_abi::witness::{KernelEvent, WitnessOp, WitnessRecord, HYPERVISOR_LOG};
use rvm_witness_host::log_folder::HYPERVISOR_NAME;
use rvm_witness_host::show::decode_line;
use std::collections::BTreeMap;

/// Longest console line kept; the rest of a longer line is dropped. An
/// input-journal line (`@J`) may be up to [`journal::MAX_LINE_LEN`].
pub const CONSOLE_LINE_MAX: usize = 4096;

/// How a journal line starts.
const JOURNAL_PREFIX: &[u8] = b"@J ";

/// How a name line starts: `@N <log> <name>`, the console form of
/// `rvm_abi::control::Outgoing::Name` (a partition created at run time).
const NAME_PREFIX: &str = "@N ";

/// The log and partition name of an `@N` line; `None` when it does not
/// read (the hypervisor's own log 0 is never named this way).
fn parse_name_line(line: &str) -> Option<(u32, PartitionName)> {
    let mut parts = line.strip_prefix(NAME_PREFIX)?.split(' ');
    let log: u32 = parts.next()?.parse().ok()?;
    let name = PartitionName::new(parts.next()?).ok()?;
    (log != HYPERVISOR_LOG && parts.next().is_none()).then_some((log, name))
}

/// Splits a byte stream into lines (`\n`, with an optional `\r` before it).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The current line passed the limit; bytes are dropped until `\n`.
    cut: bool,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], out: &mut dyn FnMut(String)) {
        for &b in bytes {
            if b == b'\n' {
                self.emit(out);
            } else if self.buf.len() < CONSOLE_LINE_MAX
                || (self.buf.starts_with(JOURNAL_PREFIX) && self.buf.len() < journal::MAX_LINE_LEN)
            {
                self.buf.push(b);
            } else {
                self.cut = true;
            }
        }
    }

    /// The stream ended: emit a last unterminated line.
    pub fn finish(&mut self, out: &mut dyn FnMut(String)) {
        if !self.buf.is_empty() || self.cut {
            self.emit(out);
        }
    }

    fn emit(&mut self, out: &mut dyn FnMut(String)) {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut {
            line.push_str(" [line cut]");
        }
        self.buf.clear();
        self.cut = false;
        out(line);
    }
}

/// Console text made safe for a terminal: control characters other than
/// tab are shown escaped, so a guest cannot move the cursor or forge output.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Something the session wants shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    /// A console line from the device.
    Console(String),
    /// The loader's own progress note.
    Progress(String),
    /// One witness frame, decoded compactly (only with [`Session::live`]).
    Witness(String),
}

/// One run's stream handling.
pub struct Session<'a> {
    names: LogNames,
    sink: &'a mut dyn WitnessSink,
    states: BTreeMap<u32, RunState>,
    sink_error: Option<SinkError>,
    exit: Option<u32>,
    /// Show every witness frame as a [`Shown::Witness`] line.
    pub live: bool,
    pub frames: u64,
    pub damaged: u64,
}

impl<'a> Session<'a> {
    pub fn new(names: LogNames, sink: &'a mut dyn WitnessSink) -> Self {
        Self {
            names,
            sink,
            states: BTreeMap::new(),
            sink_error: None,
            exit: None,
            live: false,
            frames: 0,
            damaged: 0,
        }
    }

    fn label(&self, partition: u32) -> String {
        match self.names.name(partition) {
            Some(n) => n.to_string(),
            None if partition == HYPERVISOR_LOG => HYPERVISOR_NAME.to_string(),
            None => format!("partition {partition}"),
        }
    }

    /// The compact live line of a frame.
    fn live_line(&self, frame: &Frame) -> Option<String> {
        match frame {
            Frame::Record { log, bytes } => {
                let l = decode_line(0, bytes, &rvm_witness::Hash::ZERO, |p| self.label(p));
                let kind = if l.kernel_event { "event" } else { "call " };
                let cap = l.cap.map_or(String::new(), |c| format!(" cap {c:#x}"));
                Some(format!(
                    "  witness {:<16} #{:<4} {kind} {:<20} {:<2} {}{cap}",
                    self.label(*log),
                    l.seq,
                    l.op,
                    if l.tier == "-" { "" } else { l.tier.as_str() },
                    l.outcome
                ))
            }
            Frame::Checkpoint { log, size, .. } => Some(format!(
                "  witness {:<16} signed checkpoint at size {size}",
                self.label(*log)
            )),
            Frame::Key { public } => Some(format!(
                "  witness key {}",
                crate::model::KeyFingerprint(rvm_witness::Hash::of(public).0)
            )),
        }
    }

    /// Handle one line.
    pub fn line(&mut self, line: &str, show: &mut dyn FnMut(Shown)) {
        if ExitFrame::is_exit_line(line) {
            match ExitFrame::parse(line) {
                Some(f) if self.exit.is_none() => {
                    self.exit = Some(f.code);
                    show(Shown::Progress(format!(
                        "the hypervisor is powering off: exit status {}",
                        f.code
                    )));
                }
                // Only the hypervisor starts lines; the first exit frame is
                // its word on the run.
                Some(_) => {}
                None => {
                    self.damaged += 1;
                    show(Shown::Progress(
                        "damaged exit frame on the console (ignored)".into(),
                    ));
                }
            }
            return;
        }
        if journal::is_journal_line(line) {
            self.journal_line(line, show);
            return;
        }
        if line.starts_with(NAME_PREFIX) {
            self.name_line(line, show);
            return;
        }
        if !Frame::is_frame_line(line) {
            show(Shown::Console(printable(line)));
            return;
        }
        let Some(frame) = Frame::parse(line) else {
            self.damaged += 1;
            self.sink.damaged(line);
            show(Shown::Progress(
                "damaged witness frame on the console (passed to the witness store as damaged)"
                    .into(),
            ));
            return;
        };
        self.frames += 1;
        if let Err(e) = self.sink.frame(&frame) {
            if self.sink_error.is_none() {
                show(Shown::Progress(match &e {
                    SinkError::Store(m) => format!("witness store: {m}: stopping the run"),
                    SinkError::Refused(m) => m.clone(),
                }));
                self.sink_error = Some(e);
            }
            return;
        }
        if self.live {
            if let Some(l) = self.live_line(&frame) {
                show(Shown::Witness(l));
            }
        }
        if let Frame::Record { bytes, .. } = frame {
            self.follow(&bytes, show);
        }
    }

    /// A name line (`@N <log> <name>`): the log of a partition created at
    /// run time is known by its name from now on, and the sink files it
    /// under that name. A name the sink cannot take is shown, and the run
    /// goes on (its records are still filed, under the log's number).
    fn name_line(&mut self, line: &str, show: &mut dyn FnMut(Shown)) {
        let Some((log, name)) = parse_name_line(line) else {
            self.damaged += 1;
            self.sink.damaged(line);
            show(Shown::Progress("damaged name frame on the console (ignored)".into()));
            return;
        };
        let added = match self.names.add(log, &name) {
            Ok(added) => added,
            Err(e) => {
                show(Shown::Progress(format!("the hypervisor named log {log} {name}, but {e} (ignored)")));
                return;
            }
        };
        if let Err(e) = self.sink.name(log, &name) {
            if added {
                self.names.remove(log);
            }
            show(Shown::Progress(format!("{e} (ignored)")));
            return;
        }
        if added {
            show(Shown::Progress(format!("{name}: admitted as partition {log}")));
        }
    }

    /// An input-journal line: to the sink, or counted as damaged.
    fn journal_line(&mut self, line: &str, show: &mut dyn FnMut(Shown)) {
        let Some(frame) = JournalFrame::parse(line) else {
            self.damaged += 1;
            self.sink.damaged(line);
            show(Shown::Progress(
                "damaged journal frame on the console (not filed)".into(),
            ));
            return;
        };
        self.frames += 1;
        if let Err(e) = self.sink.journal(&frame, line) {
            if self.sink_error.is_none() {
                show(Shown::Progress(match &e {
                    SinkError::Store(m) => format!("witness store: {m}: stopping the run"),
                    SinkError::Refused(m) => m.clone(),
                }));
                self.sink_error = Some(e);
            }
        }
    }

    fn follow(&mut self, bytes: &[u8; rvm_abi::witness::RECORD_LEN], show: &mut dyn FnMut(Shown)) {
        let Ok(r) = WitnessRecord::from_bytes(bytes) else {
            return;
        };
        let Some(WitnessOp::Event(e)) = WitnessOp::from_code(r.op) else {
            return;
        };
        if r.partition == HYPERVISOR_LOG {
            return;
        }
        let state = match e {
            KernelEvent::PartitionCreate | KernelEvent::PartitionLoad => RunState::Booting,
            KernelEvent::PartitionStart | KernelEvent::Unfence => RunState::Running,
            KernelEvent::PartitionExit => RunState::Exited,
            KernelEvent::PartitionRefused => RunState::Refused,
            KernelEvent::RecoverRestart => RunState::Restarted,
            KernelEvent::RecoverRollback => RunState::RolledBack,
            KernelEvent::RecoverFence => RunState::Fenced,
            KernelEvent::RecoverEvict => RunState::Evicted,
            KernelEvent::Fault => {
                show(Shown::Progress(format!(
                    "{}: fault",
                    self.label(r.partition)
                )));
                return;
            }
            _ => return,
        };
        if self.states.insert(r.partition, state) != Some(state) {
            show(Shown::Progress(format!(
                "{}: {}",
                self.label(r.partition),
                state.name()
            )));
        }
    }

    /// Which partition each log belongs to: those booted, then those
    /// created at run time in the order the hypervisor named them.
    pub fn names(&self) -> &LogNames {
        &self.names
    }

    /// The last state seen for each partition id.
    pub fn states(&self) -> &BTreeMap<u32, RunState> {
        &self.states
    }

    /// The hypervisor's exit status: the code of the first exit frame, if
    /// one came. A run without one did not finish.
    pub fn exit_status(&self) -> Option<u32> {
        self.exit
    }

    /// The first error the sink reported, if any: the run must stop.
    pub fn sink_error(&self) -> Option<&SinkError> {
        self.sink_error.as_ref()
    }

    /// The control channel's stream broke (`why`): what came after cannot
    /// be filed, so the run stops as for a frame the sink refused.
    pub fn channel_broken(&mut self, why: &str) {
        self.sink_error.get_or_insert(SinkError::Store(format!("the control channel's stream broke: {why}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::witness_sink::NotFiled;
    use rvm_abi::witness::Outcome;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn splits_across_chunks() {
        assert_eq!(
            lines(&[b"ab", b"c\r\nd", b"e\n", b"tail"]),
            ["abc", "de", "tail"]
        );
        let long = vec![b'x'; CONSOLE_LINE_MAX + 10];
        let got = lines(&[&long, b"\nok\n"]);
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(" [line cut]") && got[0].len() == CONSOLE_LINE_MAX + 11);
        assert_eq!(lines(&[b"\xff\n"]), ["\u{fffd}"]);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("[a] \x1b[2Jhi\tx"), "[a] \\u{1b}[2Jhi\tx");
    }

    fn event(e: KernelEvent, partition: u32) -> String {
        let r = WitnessRecord::new(WitnessOp::Event(e), Outcome::Done, partition);
        let f = Frame::Record {
            log: partition,
            bytes: r.to_bytes(),
        };
        String::from_utf8(f.encode().as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn frames_go_to_the_sink_and_states_are_followed() {
        let mut sink = NotFiled::default();
        let names = LogNames(vec![
            (1, PartitionName::new("a").unwrap()),
            (2, PartitionName::new("b").unwrap()),
        ]);
        let mut shown = Vec::new();
        {
            let mut s = Session::new(names, &mut sink);
            for l in [
                "rvm: booting".to_string(),
                event(KernelEvent::PartitionStart, 1),
                event(KernelEvent::PartitionStart, 2),
                "[a] hello".to_string(),
                event(KernelEvent::Fault, 2),
                event(KernelEvent::RecoverFence, 2),
                "@W 1 00zz".to_string(),
                event(KernelEvent::PartitionExit, 1),
                "[a] @X 0".to_string(),
                "@X 3".to_string(),
                "@X 0".to_string(),
            ] {
                s.line(l.trim_end(), &mut |x| shown.push(x));
            }
            assert_eq!(s.states()[&1], RunState::Exited);
            assert_eq!(s.states()[&2], RunState::Fenced);
            assert_eq!((s.frames, s.damaged), (5, 1));
            // The hypervisor's exit frame, not the guest's line; the first.
            assert_eq!(s.exit_status(), Some(3));
        }
        let summary = crate::witness_sink::WitnessSink::finish(&mut sink).unwrap();
        assert_eq!(
            (summary.records, summary.damaged, summary.filed),
            (5, 1, false)
        );
        assert_eq!(summary.note, "5 records, 0 checkpoints received; not filed");
        assert_eq!(
            shown,
            [
                Shown::Console("rvm: booting".into()),
                Shown::Progress("a: running".into()),
                Shown::Progress("b: running".into()),
                Shown::Console("[a] hello".into()),
                Shown::Progress("b: fault".into()),
                Shown::Progress("b: fenced (F3)".into()),
                Shown::Progress(
                    "damaged witness frame on the console (passed to the witness store as damaged)"
                        .into()
                ),
                Shown::Progress("a: exited".into()),
                Shown::Console("[a] @X 0".into()),
                Shown::Progress("the hypervisor is powering off: exit status 3".into()),
            ]
        );
    }

    #[test]
    fn a_partition_named_at_run_time_has_its_records_filed_under_its_name() {
        use crate::witness_sink::{Filed, KeyPolicy};
        let root = std::env::temp_dir().join(format!("rvm-loader-session-name-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = crate::home::Home::new(&root);
        let n = |s: &str| PartitionName::new(s).unwrap();
        let names = LogNames(vec![(1, n("a"))]);
        let mut sink = Filed::open(&home, &names, KeyPolicy::default(), &[]).unwrap();
        let mut shown = Vec::new();
        {
            let mut s = Session::new(names, &mut sink);
            for l in [
                event(KernelEvent::PartitionStart, 1),
                "@N 2 tenant".to_string(),
                event(KernelEvent::PartitionCreate, 2),
                event(KernelEvent::PartitionStart, 2),
                // Another name for log 2, a taken name, lines that do not read.
                "@N 2 other".to_string(),
                "@N 3 a".to_string(),
                // A name the sink refuses (the hypervisor's log has it).
                "@N 4 hypervisor".to_string(),
                "@N 0 boss".to_string(),
                "@N x tenant".to_string(),
            ] {
                s.line(l.trim_end(), &mut |x| shown.push(x));
            }
            assert_eq!(s.names(), &LogNames(vec![(1, n("a")), (2, n("tenant"))]));
            assert_eq!(s.states()[&2], RunState::Running);
            assert_eq!(s.damaged, 2);
            assert!(s.sink_error().is_none(), "a name refused does not stop the run");
        }
        let summary = WitnessSink::finish(&mut sink).unwrap();
        let filed: Vec<(u32, &str)> = summary.logs.iter().map(|l| (l.log, l.name.as_str())).collect();
        assert_eq!(filed, [(1, "a"), (2, "tenant")]);
        let tenant = std::fs::metadata(home.witness_dir().join("tenant.log")).unwrap();
        assert_eq!(tenant.len(), 2 * rvm_abi::witness::RECORD_LEN as u64);
        assert!(shown.contains(&Shown::Progress("tenant: admitted as partition 2".into())), "{shown:?}");
        assert!(shown.contains(&Shown::Progress("tenant: running".into())), "{shown:?}");
        let refused: Vec<&Shown> = shown.iter().filter(|x| matches!(x, Shown::Progress(p) if p.ends_with("(ignored)"))).collect();
        assert_eq!(refused.len(), 5, "{shown:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn no_exit_frame_means_no_exit_status() {
        let mut sink = NotFiled::default();
        let mut s = Session::new(LogNames(Vec::new()), &mut sink);
        for l in [
            "rvm: powering off",
            "[a] @X 0",
            " @X 0",
            "@X 0 [line cut]",
            "@X",
        ] {
            s.line(l, &mut |_| {});
        }
        assert_eq!(s.exit_status(), None);
        assert_eq!(s.damaged, 1, "the cut frame");
    }
}
