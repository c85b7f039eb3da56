//! The witness log folder, `$RVM_HOME/witness/`, and the recorder that files
//! a run's frames there.
//!
//! For a log named `<name>` (a partition's name; the hypervisor's log is
//! `hypervisor`):
//!
//! * `<name>.log` — the raw 64-byte records back to back, in arrival order;
//! * `<name>.checkpoints` — signed notes (see `rvm_witness::checkpoint`),
//!   one after another;
//! * `<name>.pub` — the verifier key line,
//!   `rvm.witness+<key id>+<base64(0x01 ‖ key)>`, and a newline.
//!
//! Each boot starts its logs at seq 0, so a run files into fresh files: a
//! log that already exists from an earlier run is first moved, with its
//! checkpoints and key, to `archive/<name>.<n>.*` (n = 1, 2, ...).
//!
//! Writes never leave a half-written file behind: the key file is written
//! to a temporary file and renamed; every file is created with
//! `O_EXCL|O_NOFOLLOW` ([`crate::files`]), so nothing planted at a path is
//! opened or followed; the log and checkpoint files are
//! append-only, and every append is one write at the length the recorder
//! knows, undone (the file cut back to that length) if it fails. They are
//! synced to disk at every checkpoint and at the end of the run.

use crate::error::HostError;
use rvm_abi::frame::Frame;
use rvm_abi::witness::{WitnessRecord, HYPERVISOR_LOG, RECORD_LEN};
use rvm_witness::{LogId, PublicKey, SignedCheckpoint};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the hypervisor's own log.
pub const HYPERVISOR_NAME: &str = "hypervisor";
/// Record file suffix.
pub const LOG_SUFFIX: &str = ".log";
/// Checkpoint file suffix.
pub const CHECKPOINTS_SUFFIX: &str = ".checkpoints";
/// Public key file suffix.
pub const KEY_SUFFIX: &str = ".pub";
/// Where earlier runs' logs are moved.
pub const ARCHIVE_DIR: &str = "archive";

/// `$RVM_HOME/witness`.
pub fn witness_dir(home: &Path) -> PathBuf {
    home.join("witness")
}

/// `$RVM_HOME` if set and not empty, else `$HOME/.rvm`.
pub fn home_from_env() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("RVM_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".rvm"))
}

/// The three files of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFiles {
    /// The log's name (file stem).
    pub name: String,
    pub log: PathBuf,
    pub checkpoints: PathBuf,
    pub key: PathBuf,
}

impl LogFiles {
    /// The files of log `name` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            name: name.to_string(),
            log: dir.join(format!("{name}{LOG_SUFFIX}")),
            checkpoints: dir.join(format!("{name}{CHECKPOINTS_SUFFIX}")),
            key: dir.join(format!("{name}{KEY_SUFFIX}")),
        }
    }

    /// The files beside a `<name>.log` path.
    pub fn for_log_path(path: &Path) -> Result<Self, HostError> {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| HostError::NotALogPath(path.into()))?;
        let name = file
            .strip_suffix(LOG_SUFFIX)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| HostError::NotALogPath(path.into()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Ok(Self::in_dir(dir, name))
    }
}

/// Which name each log id is filed under. Log 0 is always `hypervisor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogNames {
    names: BTreeMap<u32, String>,
}

impl Default for LogNames {
    fn default() -> Self {
        Self::new()
    }
}

impl LogNames {
    /// Only the hypervisor's log.
    pub fn new() -> Self {
        let mut names = BTreeMap::new();
        names.insert(HYPERVISOR_LOG, HYPERVISOR_NAME.to_string());
        Self { names }
    }

    /// From (partition id, name) pairs, as the loader knows them.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (u32, &'a str)>,
    ) -> Result<Self, HostError> {
        let mut n = Self::new();
        for (id, name) in pairs {
            n.insert(id, name)?;
        }
        Ok(n)
    }

    /// Name log `id`. The name must be a safe identifier and not be taken
    /// by another log (`hypervisor` belongs to log 0).
    pub fn insert(&mut self, id: u32, name: &str) -> Result<(), HostError> {
        rvm_abi::ident::check(name).map_err(|reason| HostError::BadName {
            name: name.to_string(),
            reason,
        })?;
        if let Some((&other, _)) = self
            .names
            .iter()
            .find(|(&o, n)| o != id && n.as_str() == name)
        {
            return Err(HostError::NameTaken {
                name: name.to_string(),
                log: id,
                other,
            });
        }
        if id == HYPERVISOR_LOG && name != HYPERVISOR_NAME {
            return Err(HostError::NameTaken {
                name: HYPERVISOR_NAME.into(),
                log: id,
                other: id,
            });
        }
        self.names.insert(id, name.to_string());
        Ok(())
    }

    /// The name of log `id`, if known.
    pub fn get(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// The id named `name`, if any.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(&id, _)| id)
    }

    /// The name a log is filed under: its given name, or `log-<id>` for a
    /// log nobody named (so its records are still kept).
    pub fn file_name(&self, id: u32) -> String {
        match self.get(id) {
            Some(n) => n.to_string(),
            None => {
                let base = format!("log-{id}");
                if self.id_of(&base).is_some() {
                    format!("{base}.unnamed")
                } else {
                    base
                }
            }
        }
    }
}

/// Write `bytes` at the end of a file whose length is known to be `len`;
/// on failure the file is cut back to `len`.
fn append_exact(
    file: &mut File,
    path: &Path,
    len: &mut u64,
    bytes: &[u8],
) -> Result<(), HostError> {
    let res = file
        .seek(SeekFrom::Start(*len))
        .and_then(|_| file.write_all(bytes))
        .and_then(|_| file.flush());
    match res {
        Ok(()) => {
            *len += bytes.len() as u64;
            Ok(())
        }
        Err(e) => {
            // Best effort: the caller gets the write error either way.
            let _ = file.set_len(*len);
            Err(HostError::Io {
                path: path.into(),
                op: "append to",
                source: e,
            })
        }
    }
}

/// Write a whole small file through a temporary file (unpredictable name,
/// created with `O_EXCL|O_NOFOLLOW`) and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    crate::files::write_atomic(path, bytes, 0o644).map_err(|e| HostError::Io {
        path: path.into(),
        op: "write",
        source: e,
    })
}

/// The key file's text.
pub fn key_file_text(key: &PublicKey) -> String {
    format!("{}\n", key.to_verifier_key())
}

/// One log being filed.
struct OpenLog {
    files: LogFiles,
    log_file: File,
    log_len: u64,
    cp_file: File,
    cp_len: u64,
    key_written: bool,
    records: u64,
    checkpoints: u64,
}

/// What a run filed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecorderSummary {
    /// Each log written, by log id.
    pub logs: Vec<FiledLog>,
    /// Frame lines that arrived damaged.
    pub damaged: u64,
    /// `@K` frames seen.
    pub keys: u64,
    /// The key's fingerprint, if one was announced.
    pub key_fingerprint: Option<rvm_witness::Hash>,
    /// Earlier runs' files moved to the archive.
    pub archived: Vec<PathBuf>,
    /// Things the operator should know (lost frames, unnamed logs, ...).
    pub warnings: Vec<String>,
}

/// One filed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiledLog {
    pub log: u32,
    pub name: String,
    pub path: PathBuf,
    pub records: u64,
    pub checkpoints: u64,
}

/// Files a run's frames under `$RVM_HOME/witness/` as they arrive.
pub struct Recorder {
    dir: PathBuf,
    names: LogNames,
    key: Option<PublicKey>,
    logs: BTreeMap<u32, OpenLog>,
    /// Checkpoints that arrived before any key (their notes need its id).
    early_checkpoints: Vec<Frame>,
    summary: RecorderSummary,
}

impl Recorder {
    /// A recorder for one run. Creates `$home/witness/` if needed; touches
    /// no log until its first frame arrives.
    pub fn new(home: &Path, names: LogNames) -> Result<Self, HostError> {
        let dir = witness_dir(home);
        fs::create_dir_all(&dir).map_err(HostError::io(&dir, "create directory"))?;
        Ok(Self {
            dir,
            names,
            key: None,
            logs: BTreeMap::new(),
            early_checkpoints: Vec::new(),
            summary: RecorderSummary::default(),
        })
    }

    /// The directory logs are filed in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Name log `id` while the run goes on (a partition the hypervisor
    /// created at run time announces its log's name before the log's first
    /// frame). Refused when the log already has another name, when another
    /// log has this name, or when the log's files are already open (under
    /// the name it had then).
    pub fn name(&mut self, id: u32, name: &str) -> Result<(), HostError> {
        if let Some(current) = self.names.get(id).filter(|c| *c != name) {
            return Err(HostError::Renamed {
                log: id,
                name: name.to_string(),
                current: current.to_string(),
            });
        }
        if let Some(open) = self.logs.get(&id) {
            if open.files.name != name {
                return Err(HostError::NamedLate {
                    log: id,
                    name: name.to_string(),
                    filed_as: open.files.name.clone(),
                });
            }
        }
        self.names.insert(id, name)
    }

    /// Log `id`, filed as `name`, continues its file from `point` in this
    /// run ([`crate::resume`]): the new records go after the checkpoint's,
    /// in the same files. Records the file holds after that checkpoint
    /// (never signed) move to `archive/<name>.<n>.unsigned` first. Before
    /// the log's first frame of this run.
    pub fn resume(&mut self, id: u32, name: &str, point: &crate::resume::ResumePoint) -> Result<(), HostError> {
        self.name(id, name)?;
        if self.logs.contains_key(&id) {
            return Err(HostError::NamedLate { log: id, name: name.to_string(), filed_as: name.to_string() });
        }
        let files = LogFiles::in_dir(&self.dir, name);
        let keep = point.size * RECORD_LEN as u64;
        let open_rw = |p: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(p)
                .map_err(HostError::io(p, "open"))
        };
        let mut log_file = open_rw(&files.log)?;
        let len = log_file.metadata().map_err(HostError::io(&files.log, "stat"))?.len();
        if len > keep {
            let mut tail = Vec::new();
            log_file.seek(SeekFrom::Start(keep)).and_then(|_| log_file.read_to_end(&mut tail)).map_err(HostError::io(&files.log, "read"))?;
            let archive = self.archive_dir()?;
            let mut n = 1u32;
            while archive.join(format!("{name}.{n}.unsigned")).exists() {
                n += 1;
            }
            let to = archive.join(format!("{name}.{n}.unsigned"));
            crate::files::create_new(&to, 0o644).and_then(|mut f| f.write_all(&tail)).map_err(HostError::io(&to, "write"))?;
            log_file.set_len(keep).map_err(HostError::io(&files.log, "truncate"))?;
            log_file.sync_all().map_err(HostError::io(&files.log, "sync"))?;
            self.summary.warnings.push(format!(
                "{name}: {} records after its last checkpoint were never signed; they were moved to {} and the log continues from its checkpoint at {}",
                (len - keep) / RECORD_LEN as u64,
                to.display(),
                point.size
            ));
            self.summary.archived.push(to);
        }
        let cp_file = open_rw(&files.checkpoints)?;
        let cp_len = cp_file.metadata().map_err(HostError::io(&files.checkpoints, "stat"))?.len();
        let key_written = files.key.exists();
        self.logs.insert(
            id,
            OpenLog { files, log_file, log_len: keep, cp_file, cp_len, key_written, records: point.size, checkpoints: 0 },
        );
        Ok(())
    }

    /// File one decoded frame.
    pub fn frame(&mut self, frame: &Frame) -> Result<(), HostError> {
        match frame {
            Frame::Key { public } => self.key(PublicKey(*public)),
            Frame::Record { log, bytes } => self.record(*log, bytes),
            Frame::Checkpoint { .. } => match self.key {
                Some(key) => self.checkpoint(frame, &key),
                None => {
                    self.early_checkpoints.push(*frame);
                    Ok(())
                }
            },
        }
    }

    /// Count a frame line that arrived damaged (the demultiplexer reported it).
    pub fn damaged(&mut self, line: &str) {
        self.summary.damaged += 1;
        self.summary
            .warnings
            .push(format!("damaged witness frame not filed: {line}"));
    }

    fn key(&mut self, key: PublicKey) -> Result<(), HostError> {
        self.summary.keys += 1;
        match self.key {
            Some(k) if k == key => return Ok(()),
            Some(k) => {
                self.summary.warnings.push(format!(
                    "a second witness key {} was announced; logs keep the first, {}",
                    key.fingerprint(),
                    k.fingerprint()
                ));
                return Ok(());
            }
            None => {}
        }
        self.key = Some(key);
        self.summary.key_fingerprint = Some(key.fingerprint());
        let ids: Vec<u32> = self.logs.keys().copied().collect();
        for id in ids {
            self.write_key(id)?;
        }
        for f in std::mem::take(&mut self.early_checkpoints) {
            self.checkpoint(&f, &key)?;
        }
        Ok(())
    }

    fn write_key(&mut self, id: u32) -> Result<(), HostError> {
        let (Some(key), Some(open)) = (self.key, self.logs.get_mut(&id)) else {
            return Ok(());
        };
        if !open.key_written {
            write_atomic(&open.files.key, key_file_text(&key).as_bytes())?;
            open.key_written = true;
        }
        Ok(())
    }

    /// `witness/archive/`, made if missing; a link there (which would send
    /// the earlier files elsewhere) is refused.
    fn archive_dir(&self) -> Result<PathBuf, HostError> {
        let archive = self.dir.join(ARCHIVE_DIR);
        match fs::symlink_metadata(&archive) {
            Ok(m) if m.is_dir() => Ok(archive),
            Ok(_) => Err(HostError::Io {
                path: archive,
                op: "use as the archive",
                source: std::io::Error::other("not a directory (a link is not followed)"),
            }),
            Err(_) => {
                fs::create_dir(&archive).map_err(HostError::io(&archive, "create directory"))?;
                Ok(archive)
            }
        }
    }

    /// Move an earlier run's files of `files` to the archive.
    fn archive(&mut self, files: &LogFiles) -> Result<(), HostError> {
        let existing: Vec<&PathBuf> = [&files.log, &files.checkpoints, &files.key]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        if existing.is_empty() {
            return Ok(());
        }
        let archive = self.archive_dir()?;
        let mut n = 1u32;
        while [LOG_SUFFIX, CHECKPOINTS_SUFFIX, KEY_SUFFIX]
            .iter()
            .any(|s| archive.join(format!("{}.{n}{s}", files.name)).exists())
        {
            n += 1;
        }
        for (path, suffix) in [
            (&files.log, LOG_SUFFIX),
            (&files.checkpoints, CHECKPOINTS_SUFFIX),
            (&files.key, KEY_SUFFIX),
        ] {
            if path.exists() {
                let to = archive.join(format!("{}.{n}{suffix}", files.name));
                fs::rename(path, &to)
                    .map_err(HostError::io(path.clone(), "move to the archive"))?;
                self.summary.archived.push(to);
            }
        }
        Ok(())
    }

    fn open(&mut self, id: u32) -> Result<&mut OpenLog, HostError> {
        if !self.logs.contains_key(&id) {
            if self.names.get(id).is_none() {
                self.summary.warnings.push(format!(
                    "log {id} has no partition name; filed as {}",
                    self.names.file_name(id)
                ));
            }
            let files = LogFiles::in_dir(&self.dir, &self.names.file_name(id));
            self.archive(&files)?;
            // Exclusive and not through a link: a file planted at the path
            // (after the archive moved the earlier run's away) is refused.
            let create =
                |p: &Path| crate::files::create_new(p, 0o644).map_err(HostError::io(p, "create"));
            let log_file = create(&files.log)?;
            let cp_file = create(&files.checkpoints)?;
            self.logs.insert(
                id,
                OpenLog {
                    files,
                    log_file,
                    log_len: 0,
                    cp_file,
                    cp_len: 0,
                    key_written: false,
                    records: 0,
                    checkpoints: 0,
                },
            );
            self.write_key(id)?;
        }
        Ok(self.logs.get_mut(&id).expect("inserted above"))
    }

    fn record(&mut self, id: u32, bytes: &[u8; 64]) -> Result<(), HostError> {
        let open = self.open(id)?;
        let expected = open.records;
        append_exact(
            &mut open.log_file,
            &open.files.log,
            &mut open.log_len,
            bytes,
        )?;
        open.records += 1;
        let name = open.files.name.clone();
        // Filed as received; the verifier judges. Note obvious loss now.
        match WitnessRecord::from_bytes(bytes) {
            Ok(r) if r.seq != expected => self.summary.warnings.push(format!(
                "{name}: record {expected} arrived with seq {} (a frame was lost or damaged)",
                r.seq
            )),
            Ok(r) if !LogId(id).admits(r.partition) => self.summary.warnings.push(format!(
                "{name}: record {expected} names partition {}",
                r.partition
            )),
            Err(_) => self
                .summary
                .warnings
                .push(format!("{name}: record {expected} has an unknown version")),
            Ok(_) => {}
        }
        Ok(())
    }

    fn checkpoint(&mut self, frame: &Frame, key: &PublicKey) -> Result<(), HostError> {
        let Some(cp) = SignedCheckpoint::from_frame(frame, key) else {
            return Ok(());
        };
        let open = self.open(cp.checkpoint.log.0)?;
        append_exact(
            &mut open.cp_file,
            &open.files.checkpoints,
            &mut open.cp_len,
            cp.to_note().as_bytes(),
        )?;
        open.checkpoints += 1;
        for (f, p) in [
            (&open.log_file, &open.files.log),
            (&open.cp_file, &open.files.checkpoints),
        ] {
            f.sync_data().map_err(HostError::io(p.clone(), "sync"))?;
        }
        if cp.verify(key).is_err() {
            let name = open.files.name.clone();
            self.summary.warnings.push(format!(
                "{name}: checkpoint of size {} does not verify under the announced key",
                cp.checkpoint.size
            ));
        }
        Ok(())
    }

    /// The run is over: sync everything and say what was filed.
    pub fn finish(mut self) -> Result<RecorderSummary, HostError> {
        if !self.early_checkpoints.is_empty() {
            self.summary.warnings.push(format!(
                "{} checkpoints arrived but no witness key was announced; they were not filed",
                self.early_checkpoints.len()
            ));
        }
        for (&log, open) in &self.logs {
            for (f, p) in [
                (&open.log_file, &open.files.log),
                (&open.cp_file, &open.files.checkpoints),
            ] {
                f.sync_all().map_err(HostError::io(p.clone(), "sync"))?;
            }
            if !open.key_written {
                self.summary.warnings.push(format!(
                    "{}: no witness key was announced; no .pub file",
                    open.files.name
                ));
            }
            self.summary.logs.push(FiledLog {
                log,
                name: open.files.name.clone(),
                path: open.files.log.clone(),
                records: open.records,
                checkpoints: open.checkpoints,
            });
        }
        Ok(self.summary)
    }
}
