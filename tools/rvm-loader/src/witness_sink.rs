//! Where witness frames from the console go.
//!
//! The loader demultiplexes the serial stream ([`crate::stream`]) and hands
//! every witness frame to a [`WitnessSink`]. A boot files them with
//! [`Filed`], which wraps `rvm_witness_host::Recorder`: every log of the run
//! lands in `$RVM_HOME/witness/<partition>.log`, with its signed checkpoints
//! in `<partition>.checkpoints` and the announced key in `<partition>.pub`
//! (the hypervisor's own log is `hypervisor`). An earlier run's files of
//! the same name are moved to `witness/archive/` first (the recorder's
//! rule, see `rvm_witness_host::log_folder`).
//!
//! # The witness key
//!
//! The hypervisor announces the checkpoint key with an `@K` frame before
//! any partition runs. [`Filed`] compares it with [`KeyPolicy`]:
//!
//! * a partition whose manifest pins `witness_key_fingerprint` to another
//!   key is a refusal ([`SinkError::Refused`]): the loader stops QEMU at
//!   once, so no agent of that boot runs on a device whose key its tenant
//!   did not accept, and nothing is filed;
//! * a key other than the one whose seed the loader put into the bundle
//!   (a board with its own device key, say) is only a warning: the logs
//!   are filed with the announced key and verify against it.
//!
//! The pins are also checked before boot, against the key whose seed goes
//! into the bundle (`commands::plan`): that refusal happens before QEMU
//! starts, with exit 2. The check here catches a device that does not use
//! the bundle's key.

use crate::home::Home;
use crate::model::{KeyFingerprint, PartitionName};
use rvm_abi::frame::Frame;
use rvm_abi::journal::JournalFrame;
use rvm_witness::Hash;
use rvm_witness_host::{FiledLog, Recorder};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which partition each log id belongs to (log 0 is the hypervisor's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogNames(pub Vec<(u32, PartitionName)>);

impl LogNames {
    pub fn name(&self, log: u32) -> Option<&PartitionName> {
        self.0.iter().find(|(id, _)| *id == log).map(|(_, n)| n)
    }

    /// Name log `log` (a partition created at run time, `@N`); whether it
    /// was new. Refused when the log has another name or another log has
    /// this one; naming a log again with its own name changes nothing.
    pub fn add(&mut self, log: u32, name: &PartitionName) -> Result<bool, String> {
        match self.0.iter().find(|(id, n)| *id == log || n == name) {
            Some((id, n)) if *id == log && n == name => Ok(false),
            Some((id, n)) if *id == log => Err(format!("log {log} is already named {n}")),
            Some((id, _)) => Err(format!("{name} already names log {id}")),
            None => {
                self.0.push((log, name.clone()));
                Ok(true)
            }
        }
    }

    /// Forget the name of log `log`.
    pub fn remove(&mut self, log: u32) {
        self.0.retain(|(id, _)| *id != log);
    }

    /// The same mapping for `rvm-witness-host` (which adds `hypervisor` for
    /// log 0).
    pub fn to_host(&self) -> Result<rvm_witness_host::LogNames, String> {
        rvm_witness_host::LogNames::from_pairs(self.0.iter().map(|(id, n)| (*id, n.as_str())))
            .map_err(|e| e.to_string())
    }
}

/// Why a sink did not take a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkError {
    /// The frame could not be filed (I/O): the run's evidence is incomplete.
    Store(String),
    /// The run must not go on (a pinned witness key does not match).
    Refused(String),
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Store(m) | SinkError::Refused(m) => f.write_str(m),
        }
    }
}

/// What a sink did with a run's frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkSummary {
    pub records: u64,
    pub checkpoints: u64,
    pub keys: u64,
    pub damaged: u64,
    /// Input-journal entries received (`@J`).
    pub journal_entries: u64,
    /// Whether the frames were written under `RVM_HOME/witness/`.
    pub filed: bool,
    /// Each log written.
    pub logs: Vec<FiledLog>,
    /// The fingerprint of the announced witness key, if one came.
    pub key_fingerprint: Option<KeyFingerprint>,
    /// Earlier runs' files moved to the archive.
    pub archived: Vec<PathBuf>,
    /// Things the operator should know (lost frames, unnamed logs, ...).
    pub warnings: Vec<String>,
    /// One line for the operator.
    pub note: String,
}

/// Receives a run's witness frames, in arrival order.
pub trait WitnessSink {
    /// A frame that decoded.
    fn frame(&mut self, frame: &Frame) -> Result<(), SinkError>;
    /// A line that starts like a frame but does not decode (damaged in transit).
    fn damaged(&mut self, line: &str);
    /// An input-journal entry (`@J`), with its line as it arrived.
    fn journal(&mut self, frame: &JournalFrame, line: &str) -> Result<(), SinkError> {
        let _ = (frame, line);
        Ok(())
    }
    /// Log `log` belongs to partition `name`, created while the hypervisor
    /// runs (`@N`, before that log's first frame).
    fn name(&mut self, log: u32, name: &PartitionName) -> Result<(), SinkError> {
        let _ = (log, name);
        Ok(())
    }
    /// The run is over.
    fn finish(&mut self) -> Result<SinkSummary, String>;
}

/// A sink that counts and files nothing (for tests of the stream handling).
#[derive(Debug, Default)]
pub struct NotFiled {
    summary: SinkSummary,
}

impl WitnessSink for NotFiled {
    fn frame(&mut self, frame: &Frame) -> Result<(), SinkError> {
        match frame {
            Frame::Record { .. } => self.summary.records += 1,
            Frame::Checkpoint { .. } => self.summary.checkpoints += 1,
            Frame::Key { .. } => self.summary.keys += 1,
        }
        Ok(())
    }

    fn damaged(&mut self, _line: &str) {
        self.summary.damaged += 1;
    }

    fn journal(&mut self, _frame: &JournalFrame, _line: &str) -> Result<(), SinkError> {
        self.summary.journal_entries += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkSummary, String> {
        let mut s = self.summary.clone();
        s.filed = false;
        s.note = format!(
            "{} records, {} checkpoints received; not filed",
            s.records, s.checkpoints
        );
        Ok(s)
    }
}

/// What the announced witness key must be.
#[derive(Clone, Debug, Default)]
pub struct KeyPolicy {
    /// The public key whose seed the loader put into the bundle.
    pub bundle_key: Option<[u8; 32]>,
    /// Partitions whose manifest pins `witness_key_fingerprint`.
    pub pins: Vec<(PartitionName, KeyFingerprint)>,
}

impl KeyPolicy {
    /// Judge an announced key: `Err` if a pin refuses it, else the warnings.
    pub fn judge(&self, public: &[u8; 32]) -> Result<Vec<String>, String> {
        let fp = KeyFingerprint(Hash::of(public).0);
        let refused: Vec<String> = self
            .pins
            .iter()
            .filter(|(_, pin)| *pin != fp)
            .map(|(n, pin)| format!("partition {n} pins {pin}"))
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "the hypervisor announced witness key {fp}, but {}: the run was stopped before its agents ran, and nothing was filed",
                refused.join(", ")
            ));
        }
        let mut warnings = Vec::new();
        if let Some(b) = self.bundle_key {
            if b != *public {
                warnings.push(format!(
                    "the hypervisor announced witness key {fp}, not this RVM_HOME's key {} whose seed is in the bundle; the logs are filed with the announced key",
                    KeyFingerprint(Hash::of(&b).0)
                ));
            }
        }
        Ok(warnings)
    }
}

/// The sink of a real boot: files every frame with `rvm_witness_host::Recorder`.
pub struct Filed {
    recorder: Option<Recorder>,
    /// Journal lines by log, filed beside the logs when the run ends.
    journals: BTreeMap<u32, Vec<String>>,
    policy: KeyPolicy,
    refused: Option<String>,
    counts: SinkSummary,
    /// Logs that continue an earlier boot's (their journals go on too).
    continued: std::collections::BTreeSet<u32>,
}

impl Filed {
    /// A sink filing under `home`'s witness directory (created if needed);
    /// the logs in `resumes` (log id, name, where) continue their files.
    pub fn open(
        home: &Home,
        names: &LogNames,
        policy: KeyPolicy,
        resumes: &[(u32, String, rvm_witness_host::ResumePoint)],
    ) -> Result<Self, String> {
        let mut recorder = Recorder::new(home.root(), names.to_host()?).map_err(|e| e.to_string())?;
        for (id, name, point) in resumes {
            recorder.resume(*id, name, point).map_err(|e| format!("{name}.log cannot continue: {e}"))?;
        }
        let continued = resumes.iter().map(|(id, _, _)| *id).collect();
        Ok(Self {
            recorder: Some(recorder),
            journals: BTreeMap::new(),
            policy,
            refused: None,
            counts: SinkSummary::default(),
            continued,
        })
    }

    fn recorder(&mut self) -> Result<&mut Recorder, SinkError> {
        self.recorder
            .as_mut()
            .ok_or_else(|| SinkError::Store("the witness store is closed".into()))
    }
}

impl WitnessSink for Filed {
    fn frame(&mut self, frame: &Frame) -> Result<(), SinkError> {
        if let Some(r) = &self.refused {
            return Err(SinkError::Refused(r.clone()));
        }
        match frame {
            Frame::Key { public } => {
                self.counts.keys += 1;
                match self.policy.judge(public) {
                    Ok(w) => self.counts.warnings.extend(w),
                    Err(r) => {
                        self.refused = Some(r.clone());
                        return Err(SinkError::Refused(r));
                    }
                }
            }
            Frame::Record { .. } => self.counts.records += 1,
            Frame::Checkpoint { .. } => self.counts.checkpoints += 1,
        }
        self.recorder()?
            .frame(frame)
            .map_err(|e| SinkError::Store(e.to_string()))
    }

    fn name(&mut self, log: u32, name: &PartitionName) -> Result<(), SinkError> {
        if let Some(r) = &self.refused {
            return Err(SinkError::Refused(r.clone()));
        }
        self.recorder()?.name(log, name.as_str()).map_err(|e| {
            let m = format!("witness: {e}; log {log}'s records are filed under another name");
            self.counts.warnings.push(m.clone());
            SinkError::Store(m)
        })
    }

    fn damaged(&mut self, line: &str) {
        self.counts.damaged += 1;
        if let Some(r) = self.recorder.as_mut() {
            r.damaged(line);
        }
    }

    fn journal(&mut self, frame: &JournalFrame, line: &str) -> Result<(), SinkError> {
        if let Some(r) = &self.refused {
            return Err(SinkError::Refused(r.clone()));
        }
        self.counts.journal_entries += 1;
        self.journals
            .entry(frame.log)
            .or_default()
            .push(line.to_string());
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkSummary, String> {
        let recorder = self
            .recorder
            .take()
            .ok_or_else(|| "the witness store was already closed".to_string())?;
        let filed = recorder.finish().map_err(|e| e.to_string())?;
        let mut journal_warnings = Vec::new();
        let mut journal_archived = Vec::new();
        for l in &filed.logs {
            let lines = self.journals.remove(&l.log).unwrap_or_default();
            match file_journal(&l.path, &filed.archived, &lines, self.continued.contains(&l.log)) {
                Ok(moved) => journal_archived.extend(moved),
                Err(e) => journal_warnings.push(format!("journal of {} not filed: {e}", l.name)),
            }
        }
        for log in self.journals.keys() {
            journal_warnings.push(format!(
                "journal entries of log {log}, which filed no records, were dropped"
            ));
        }
        let mut s = self.counts.clone();
        s.warnings.extend(journal_warnings);
        s.archived.extend(journal_archived);
        s.filed = !filed.logs.is_empty();
        s.key_fingerprint = filed.key_fingerprint.map(|h| KeyFingerprint(h.0));
        s.archived = filed.archived;
        s.warnings.extend(filed.warnings);
        s.logs = filed.logs;
        let per_log: Vec<String> = s
            .logs
            .iter()
            .map(|l| {
                format!(
                    "{}.log {} records, {} checkpoints",
                    l.name, l.records, l.checkpoints
                )
            })
            .collect();
        s.note = if let Some(r) = &self.refused {
            format!("witness: nothing filed: {r}")
        } else if s.logs.is_empty() {
            "witness: no records arrived; nothing filed".to_string()
        } else {
            let journal = match s.journal_entries {
                0 => String::new(),
                n => format!(", {n} journal entries"),
            };
            format!(
                "witness: filed {} records, {} checkpoints{journal} in {}: {}",
                s.records,
                s.checkpoints,
                s.logs
                    .first()
                    .and_then(|l| l.path.parent())
                    .map_or_else(String::new, |d| d.display().to_string()),
                per_log.join("; ")
            )
        };
        Ok(s)
    }
}

/// Where a log's input journal lives: beside it, `<name>.journal`.
pub fn journal_path(log_path: &Path) -> PathBuf {
    log_path.with_extension(JOURNAL_EXTENSION)
}

/// File extension of a journal (the `@J` lines of one log, as they arrived).
pub const JOURNAL_EXTENSION: &str = "journal";

/// File `lines` as the journal beside `log_path` (temporary file, then
/// rename). An earlier run's journal there goes to the archive under the
/// number its log was archived with (found in `archived`), so a journal
/// never sits beside a log of another run. Returns what was archived.
fn file_journal(
    log_path: &Path,
    archived: &[PathBuf],
    lines: &[String],
    continued: bool,
) -> Result<Vec<PathBuf>, String> {
    let path = journal_path(log_path);
    let mut moved = Vec::new();
    // A log that continued an earlier boot's keeps one journal too: this
    // run's entries go after the earlier ones (they name their records).
    let earlier = if continued {
        match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    } else {
        String::new()
    };
    if path.exists() && !continued {
        let stem = log_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let archived_log = archived.iter().find(|a| {
            a.extension().is_some_and(|e| e == "log")
                && a.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.rsplit_once('.').is_some_and(|(n, _)| n == stem))
        });
        let to = match archived_log {
            Some(a) => a.with_extension(JOURNAL_EXTENSION),
            None => log_path.with_extension("journal.old"),
        };
        std::fs::rename(&path, &to)
            .map_err(|e| format!("{}: move to {}: {e}", path.display(), to.display()))?;
        moved.push(to);
    }
    if lines.is_empty() {
        return Ok(moved);
    }
    let mut text = earlier;
    text.reserve(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    crate::home::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| e.to_string())?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::witness::{KernelEvent, Outcome, WitnessOp, WitnessRecord};

    fn tmp_home(tag: &str) -> Home {
        let p = std::env::temp_dir().join(format!("rvm-loader-sink-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Home::new(p)
    }

    fn names() -> LogNames {
        LogNames(vec![(1, PartitionName::new("tenant").unwrap())])
    }

    #[test]
    fn a_pinned_key_that_differs_refuses_the_run_and_files_nothing() {
        let home = tmp_home("pin");
        let announced = [7u8; 32];
        let pin = KeyFingerprint([1; 32]);
        let mut sink = Filed::open(
            &home,
            &names(),
            KeyPolicy {
                bundle_key: Some(announced),
                pins: vec![(PartitionName::new("tenant").unwrap(), pin)],
            },
            &[],
        )
        .unwrap();
        let e = sink.frame(&Frame::Key { public: announced }).unwrap_err();
        let SinkError::Refused(text) = e else {
            panic!("{e:?}")
        };
        assert!(
            text.contains(&format!("partition tenant pins {pin}")),
            "{text}"
        );
        // Later frames are refused too, and nothing lands on disk.
        let r = WitnessRecord::new(
            WitnessOp::Event(KernelEvent::PartitionStart),
            Outcome::Done,
            1,
        );
        assert!(sink
            .frame(&Frame::Record {
                log: 1,
                bytes: r.to_bytes()
            })
            .is_err());
        let s = sink.finish().unwrap();
        assert!(!s.filed && s.logs.is_empty(), "{s:?}");
        assert!(s.note.starts_with("witness: nothing filed"), "{}", s.note);
        assert!(!home.witness_dir().join("tenant.log").exists());
        let _ = std::fs::remove_dir_all(home.root());
    }

    #[test]
    fn a_matching_pin_passes_and_a_foreign_key_is_only_a_warning() {
        let key = [9u8; 32];
        let fp = KeyFingerprint(Hash::of(&key).0);
        let p = KeyPolicy {
            bundle_key: Some(key),
            pins: vec![(PartitionName::new("a").unwrap(), fp)],
        };
        assert_eq!(p.judge(&key), Ok(vec![]));
        let other = KeyPolicy {
            bundle_key: Some([3; 32]),
            pins: vec![],
        };
        let w = other.judge(&key).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains(&fp.to_string()), "{w:?}");
    }

    #[test]
    fn a_journal_is_filed_beside_its_log_and_an_old_one_follows_its_log_to_the_archive() {
        let home = tmp_home("journal");
        let dir = home.witness_dir();
        std::fs::create_dir_all(dir.join("archive")).unwrap();
        let log = dir.join("a.log");
        std::fs::write(journal_path(&log), "@J 1 s 0 00000000\n").unwrap();
        let archived = vec![dir.join("archive").join("a.1.log")];
        let lines = vec!["@J 1 s 3 00000000".to_string()];
        let moved = file_journal(&log, &archived, &lines, false).unwrap();
        assert_eq!(moved, vec![dir.join("archive").join("a.1.journal")]);
        assert_eq!(
            std::fs::read_to_string(&moved[0]).unwrap(),
            "@J 1 s 0 00000000\n"
        );
        assert_eq!(
            std::fs::read_to_string(journal_path(&log)).unwrap(),
            "@J 1 s 3 00000000\n"
        );
        // A run without a journal leaves none beside its log.
        let moved = file_journal(&log, &[dir.join("archive").join("a.2.log")], &[], false).unwrap();
        assert_eq!(moved, vec![dir.join("archive").join("a.2.journal")]);
        assert!(!journal_path(&log).exists());
        // A log that continued: its journal goes on in the same file.
        std::fs::write(journal_path(&log), "@J 1 s 0 00000000\n").unwrap();
        let moved = file_journal(&log, &[], &["@J 1 c 9 00".to_string()], true).unwrap();
        assert!(moved.is_empty());
        assert_eq!(std::fs::read_to_string(journal_path(&log)).unwrap(), "@J 1 s 0 00000000\n@J 1 c 9 00\n");
        let _ = std::fs::remove_dir_all(home.root());
    }
}
