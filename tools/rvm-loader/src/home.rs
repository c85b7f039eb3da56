//! The loader's home: its registry and files under `RVM_HOME` (default
//! `~/.rvm`).
//!
//! ```text
//! registry.json          partitions (manifest, capability table, guest binding,
//!                        last run) and registered guest modules, one JSON file
//! modules/<sha256>.wasm  WebAssembly modules, content-addressed
//! keys/witness.seed      Ed25519 seed of the witness checkpoint key (0600)
//! keys/authority/<partition>.seed
//!                        Ed25519 seed of a partition's P3 authority key
//!                        (0600), made when a table with P3 rights is installed
//! witness/<name>.log     witness logs (filed by the witness host)
//! .lock                  held while the registry is rewritten
//! run/                   this home's running instances: control sockets and
//!                        each boot's bundle (0600, removed when the run ends)
//! ```
//!
//! Every write is a temporary file in the same directory (unpredictable
//! name, created with `O_EXCL|O_NOFOLLOW`), synced, then renamed over the
//! target. A registration that touches several things
//! (partition + capabilities + guest binding) is one rewrite of
//! `registry.json`, so it is all there or not at all. A command validates
//! its whole input before it creates anything, so a refused command leaves
//! the tree exactly as it was.

use crate::error::{Error, Result};
use crate::keys::{Key, KeyRole};
use crate::model::{GuestRef, PartitionName, PartitionSpec, Token};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Layout version of `registry.json`.
pub const REGISTRY_VERSION: u32 = 1;
const REGISTRY_FILE: &str = "registry.json";
const MODULES_DIR: &str = "modules";
const KEYS_DIR: &str = "keys";
const LOCK_FILE: &str = ".lock";
/// How long a command waits for another loader's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A file the registration came from: where, and its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: String,
    pub sha256: String,
}

impl FileStamp {
    pub fn new(path: &Path, sha256: &[u8; 32]) -> Self {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Self {
            path: path.display().to_string(),
            sha256: rvm_abi::hex::to_string(sha256),
        }
    }
}

/// An installed capability table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledCaps {
    pub tokens: Vec<Token>,
    pub table: FileStamp,
}

/// Where a partition's module came from (resolution step that found it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleSource {
    /// `--wasm FILE`.
    Explicit { path: String },
    /// `guest add`.
    Registered,
    /// The package's files under `node_modules`.
    NodeModules { path: String },
}

/// The guest a partition boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestBinding {
    /// The `wasm-guest.json` it was booted with (none for a scaffolder
    /// folder deployed with `--wasm`).
    pub guest: Option<GuestRef>,
    pub wasm_ref: Option<FileStamp>,
    /// SHA-256 of the module under `modules/`.
    pub module_sha256: String,
    pub source: ModuleSource,
}

/// What a partition was doing when its last run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Booted; no lifecycle record seen yet.
    Booting,
    Running,
    Restarted,
    RolledBack,
    Fenced,
    Evicted,
    Exited,
    /// The hypervisor refused the partition.
    Refused,
    /// The run ended (timeout, QEMU exit) without a final record.
    Stopped,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Booting => "booting",
            RunState::Running => "running",
            RunState::Restarted => "running (F1 restarted)",
            RunState::RolledBack => "running (F2 rolled back)",
            RunState::Fenced => "fenced (F3)",
            RunState::Evicted => "evicted (F4)",
            RunState::Exited => "exited",
            RunState::Refused => "refused by the hypervisor",
            RunState::Stopped => "stopped",
        }
    }
}

/// The last run a partition took part in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub started_unix: u64,
    pub ended_unix: Option<u64>,
    /// Process id of the loader running it (while it runs).
    pub loader_pid: Option<u32>,
    pub state: RunState,
    /// Every partition booted in the same run.
    pub with: Vec<PartitionName>,
    pub outcome: Option<String>,
    /// The run's boot id (hex): what `caps prove` signs by default.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Its partition id in that run, when the hypervisor named it (a
    /// partition admitted into a running instance); else its position in
    /// `with`, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_id: Option<u32>,
}

/// A registered partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub spec: PartitionSpec,
    pub manifest: FileStamp,
    pub registered_unix: u64,
    pub caps: Option<InstalledCaps>,
    pub guest: Option<GuestBinding>,
    pub last_run: Option<RunRecord>,
}

/// A module registered with `guest add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestModule {
    pub sha256: String,
    pub size: u64,
    /// The file it was added from.
    pub added_from: String,
}

/// Everything in `registry.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub version: u32,
    pub partitions: BTreeMap<PartitionName, PartitionRecord>,
    /// Key `package@version`.
    pub guests: BTreeMap<String, GuestModule>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            version: REGISTRY_VERSION,
            partitions: BTreeMap::new(),
            guests: BTreeMap::new(),
        }
    }
}

impl Registry {
    /// The record of a registered partition, or a refusal saying it is not.
    pub fn partition(&self, name: &PartitionName) -> Result<&PartitionRecord> {
        self.partitions
            .get(name)
            .ok_or_else(|| not_registered(name))
    }

    pub fn partition_mut(&mut self, name: &PartitionName) -> Result<&mut PartitionRecord> {
        self.partitions
            .get_mut(name)
            .ok_or_else(|| not_registered(name))
    }
}

fn not_registered(name: &PartitionName) -> Error {
    Error::refused(
        format!("partition {name}"),
        "is not registered (run `rvm-loader partition register --manifest FILE` first)",
    )
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A loader home directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

fn io(what: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("{}: {}", what.display(), e))
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$RVM_HOME`, else `$HOME/.rvm`.
    pub fn from_env() -> Result<Self> {
        if let Some(h) = std::env::var_os("RVM_HOME").filter(|h| !h.is_empty()) {
            return Ok(Self::new(h));
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(h) => Ok(Self::new(PathBuf::from(h).join(".rvm"))),
            None => Err(Error::failed("neither RVM_HOME nor HOME is set")),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn witness_dir(&self) -> PathBuf {
        rvm_witness_host::witness_dir(&self.root)
    }

    /// The registry as it is now (empty if the home does not exist yet).
    pub fn load(&self) -> Result<Registry> {
        let path = self.root.join(REGISTRY_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(io(&path, e)),
        };
        let reg: Registry = serde_json::from_slice(&bytes)
            .map_err(|e| Error::failed(format!("{}: damaged: {e}", path.display())))?;
        if reg.version != REGISTRY_VERSION {
            return Err(Error::failed(format!(
                "{}: layout version {} (this loader reads {REGISTRY_VERSION})",
                path.display(),
                reg.version
            )));
        }
        Ok(reg)
    }

    /// Apply `change` to the registry and store the result atomically.
    ///
    /// `change` runs first on a snapshot without touching the disk; if it
    /// refuses, nothing is created. Then, under the home's lock, it runs again
    /// on the current registry and the result replaces `registry.json`.
    pub fn update<T>(&self, change: impl Fn(&mut Registry) -> Result<T>) -> Result<T> {
        let mut snapshot = self.load()?;
        change(&mut snapshot)?;
        let created = self.ensure_dir(&self.root)?;
        let result = (|| {
            let _lock = self.lock()?;
            let mut reg = self.load()?;
            let out = change(&mut reg)?;
            let text = serde_json::to_vec_pretty(&reg)
                .map_err(|e| Error::failed(format!("registry: {e}")))?;
            write_atomic(&self.root.join(REGISTRY_FILE), &text, 0o644)?;
            Ok(out)
        })();
        if result.is_err() && created {
            // Only removes an empty directory we made ourselves.
            let _ = fs::remove_dir(&self.root);
        }
        result
    }

    /// Store a module under `modules/`; returns its SHA-256 (hex).
    pub fn put_module(&self, bytes: &[u8]) -> Result<String> {
        let sha = rvm_abi::hex::to_string(&Sha256::digest(bytes));
        let dir = self.root.join(MODULES_DIR);
        self.ensure_dir(&self.root)?;
        self.ensure_dir(&dir)?;
        let path = dir.join(format!("{sha}.wasm"));
        if fs::read(&path).is_ok_and(|existing| existing == bytes) {
            return Ok(sha);
        }
        write_atomic(&path, bytes, 0o644)?;
        Ok(sha)
    }

    /// A stored module, checked against its digest.
    pub fn module(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.root.join(MODULES_DIR).join(format!("{sha256}.wasm"));
        let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
        if rvm_abi::hex::to_string(&Sha256::digest(&bytes)) != sha256 {
            return Err(Error::failed(format!(
                "{}: contents do not match its digest",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// A key, if it exists.
    pub fn key(&self, role: &KeyRole) -> Result<Option<Key>> {
        let path = self.root.join(KEYS_DIR).join(role.file_name());
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::failed(format!(
                "{}: readable by others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::failed(format!("{}: not a 32-byte seed", path.display())))?;
        Ok(Some(Key::from_seed(seed)))
    }

    /// A key, generated (once) if it does not exist.
    pub fn key_or_create(&self, role: &KeyRole) -> Result<Key> {
        if let Some(k) = self.key(role)? {
            return Ok(k);
        }
        self.ensure_dir(&self.root)?;
        let path = self.root.join(KEYS_DIR).join(role.file_name());
        if let Some(dir) = path.parent() {
            self.ensure_dir(dir)?;
        }
        let _lock = self.lock()?;
        if let Some(k) = self.key(role)? {
            return Ok(k);
        }
        let seed =
            crate::keys::random_seed().map_err(|e| Error::failed(format!("random source: {e}")))?;
        write_atomic(&path, &seed, 0o600)?;
        Ok(Key::from_seed(seed))
    }

    /// Delete a key if it exists (a removed partition's authority key);
    /// true if there was one.
    pub fn remove_key(&self, role: &KeyRole) -> Result<bool> {
        let path = self.root.join(KEYS_DIR).join(role.file_name());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// The partitions that have an authority key.
    pub fn authority_keys(&self) -> Result<Vec<PartitionName>> {
        let dir = self.root.join(KEYS_DIR).join(crate::keys::AUTHORITY_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| io(&dir, e))?;
            let file = e.file_name();
            let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".seed")) else {
                continue;
            };
            if let Ok(n) = PartitionName::new(stem) {
                out.push(n);
            }
        }
        out.sort();
        Ok(out)
    }

    /// `run/`: this home's running instances (control sockets, bundles),
    /// created 0700 if missing (an older one open to others is closed);
    /// refused if it is not a directory (a symbolic link, a file).
    pub fn run_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(crate::control::RUN_DIR);
        self.ensure_dir(&self.root)?;
        if !dir.exists() && fs::symlink_metadata(&dir).is_err() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| io(&dir, e))?;
        }
        let meta = fs::symlink_metadata(&dir).map_err(|e| io(&dir, e))?;
        if !meta.is_dir() {
            return Err(Error::failed(format!(
                "{}: not a directory (a symbolic link?); remove it",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            // Made by an older loader with the default mode: close it (fails
            // if it is not ours).
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| io(&dir, e))?;
        }
        Ok(dir)
    }

    /// Create a directory (mode 0700) if missing; true if it was created.
    fn ensure_dir(&self, dir: &Path) -> Result<bool> {
        if dir.is_dir() {
            return Ok(false);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
        Ok(true)
    }

    fn lock(&self) -> Result<LockGuard> {
        LockGuard::take(self.root.join(LOCK_FILE), Duration::from_millis(50))
    }
}

impl LockGuard {
    /// Take the lock file at `path` (created with this process's id), waiting
    /// at most [`LOCK_WAIT`], looking again every `poll`; a lock whose
    /// holder is gone is stale and taken over. Released when dropped.
    pub(crate) fn take(path: PathBuf, poll: Duration) -> Result<LockGuard> {
        let start = Instant::now();
        loop {
            match rvm_witness_host::files::create_new(&path, 0o600) {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(LockGuard { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock whose holder is gone is stale.
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    if holder.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if start.elapsed() > LOCK_WAIT {
                        return Err(Error::failed(format!(
                            "{}: held by another rvm-loader (pid {})",
                            path.display(),
                            holder.map_or("?".into(), |p| p.to_string())
                        )));
                    }
                    std::thread::sleep(poll);
                }
                Err(e) => return Err(io(&path, e)),
            }
        }
    }
}

pub(crate) struct LockGuard {
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Write `bytes` to `path` through a synced temporary file and a rename.
/// The temporary file has an unpredictable name and is created with
/// `O_EXCL|O_NOFOLLOW` (`rvm_witness_host::files`): nothing planted beside
/// the target is opened, and a link planted at the target is replaced, not
/// written through.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    rvm_witness_host::files::write_atomic(path, bytes, mode).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_home(tag: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("rvm-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Home::new(dir)
    }

    #[test]
    fn refused_update_creates_nothing() {
        let home = tmp_home("refuse");
        let r: Result<()> = home.update(|_| Err(Error::refused("x", "no")));
        assert!(matches!(r, Err(Error::Refused(_))));
        assert!(!home.root().exists());
    }

    #[test]
    fn update_round_trips_and_keys_are_private() {
        let home = tmp_home("rt");
        home.update(|reg| {
            reg.guests.insert(
                "a@1.0.0".into(),
                GuestModule {
                    sha256: "00".into(),
                    size: 1,
                    added_from: "f".into(),
                },
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(home.load().unwrap().guests.len(), 1);
        assert!(!home.root().join(LOCK_FILE).exists());
        let k = home.key_or_create(&KeyRole::Witness).unwrap();
        let again = home.key_or_create(&KeyRole::Witness).unwrap();
        assert_eq!(k.public, again.public);
        let mode = fs::metadata(home.root().join("keys/witness.seed"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sha = home.put_module(b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(home.module(&sha).unwrap(), b"\0asm\x01\0\0\0");
        fs::remove_dir_all(home.root()).unwrap();
    }

    #[test]
    fn stale_lock_is_taken_over() {
        let home = tmp_home("stale");
        fs::create_dir_all(home.root()).unwrap();
        // pid 0 never has a /proc entry.
        fs::write(home.root().join(LOCK_FILE), "999999999").unwrap();
        home.update(|_| Ok(())).unwrap();
        assert!(!home.root().join(LOCK_FILE).exists());
        fs::remove_dir_all(home.root()).unwrap();
    }
}
