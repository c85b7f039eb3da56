//! The operator's tool registrations, one file per partition under
//! `RVM_HOME`:
//!
//! ```text
//! tools/<partition>.json       the partition's MCP servers and its Bash policy
//! tools/<partition>.d/         its folders (each 0700, made on first use;
//!                              a symbolic link at any of them is refused):
//!   work/                      where its commands run unless the policy
//!                              names a folder
//!   mcp/<server>/              where server <server> runs;
//!   mcp/<server>/home/         the HOME it runs with;
//!   mcp/<server>/stderr.log    its error output (its last start, at most
//!                              1 MiB)
//! tools/.lock                  held while a registration file is rewritten
//! ```
//!
//! Commands and servers never share a folder: what a command writes in its
//! folder (a `package.json`, a `node_modules/`, a Python module, an
//! `.npmrc`) is not where a server starts or what its HOME holds, and a
//! command line cannot name `..` to climb there (an absolute path reaches
//! them only when a claim allows a command that takes one, and a `--cwd`
//! inside `tools/` is refused by `tool set`).
//!
//! `{"schema":2,"partition":"<name>","mcp_servers":{"<server>":{"argv":[..],
//! "timeout_ms":n}},"bash":null|{"cwd":null|"<dir>","timeout_ms":n,
//! "output_cap":n,"env":[["NAME","value"],..]}}`. `bash` is `null` unless
//! the operator set a policy with `rvm-loader tool set <partition>`: a
//! partition's `Bash` calls are served only then (a file made by
//! `tool add` alone serves none). A schema 1 file (written before this was
//! so) always held a `bash` section, whichever command wrote it, so its
//! section says nothing of the operator's intent: it is read as `null`
//! (commands not served) and dropped at the next write, until
//! `tool set <partition>` sets a policy again.
//!
//! A server's name is what follows `mcp__` in the tools its claims name
//! (`mcp__<server>__<tool>`, split at the first `__`), so it is letters,
//! digits, `-` and `_`, with no `__` and no `_` at either end. A file is
//! validated whole whenever it is read or written, and written through a
//! synced temporary file renamed over the old one (the folder synced too):
//! it is all there or not at all.

use crate::diag::{quote, Diagnostic, Location};
use crate::error::{Error, Result};
use crate::model::PartitionName;
use crate::tools::command::CommandPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Folder of the registrations under `RVM_HOME`.
pub const TOOLS_DIR: &str = "tools";
/// Layout version of `<partition>.json` written.
pub const SCHEMA: u32 = 2;
/// The layout before `bash` could be `null`: still read (see the module
/// doc).
pub const SCHEMA_V1: u32 = 1;
/// How long a command or an MCP call may run unless the operator says.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest timeout: the hypervisor gives up on an answer after
/// [`rvm_abi::tool::DEADLINE_NS`]; the host answers well before.
pub const MAX_TIMEOUT_MS: u64 = rvm_abi::tool::DEADLINE_NS / 1_000_000 - 30_000;
/// Output of a command kept unless the operator says (standard output and
/// error together).
pub const DEFAULT_OUTPUT_CAP: usize = 8 << 10;
/// The largest output cap.
pub const MAX_OUTPUT_CAP: usize = 1 << 20;
/// The `PATH` commands and servers run with.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Longest MCP server name.
pub const MAX_SERVER_NAME: usize = 64;
/// Largest registration file read.
const FILE_MAX: u64 = 1 << 20;
const LOCK_FILE: &str = ".lock";

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// An MCP server the partition's `mcp__<server>__*` tools are served by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// How long one call may take, its start included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

/// How the partition's `Bash` commands run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BashPolicy {
    /// Where they run (absolute); `None`: the partition's commands'
    /// folder, `tools/<partition>.d/work/`.
    pub cwd: Option<String>,
    pub timeout_ms: u64,
    /// Most bytes of output kept (standard output and error together).
    pub output_cap: usize,
    /// Environment variables besides `PATH` (a `PATH` here replaces
    /// [`DEFAULT_PATH`]).
    pub env: Vec<(String, String)>,
}

impl Default for BashPolicy {
    fn default() -> Self {
        Self {
            cwd: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            output_cap: DEFAULT_OUTPUT_CAP,
            env: Vec::new(),
        }
    }
}

impl BashPolicy {
    /// Where commands run: its `cwd`, else `work_dir`.
    pub fn cwd_or(&self, work_dir: &Path) -> PathBuf {
        self.cwd
            .as_ref()
            .map_or_else(|| work_dir.to_path_buf(), PathBuf::from)
    }

    /// The `PATH` commands run with.
    pub fn path(&self) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
    }

    /// The policy [`crate::tools::command::run`] applies.
    pub fn command_policy(&self, work_dir: &Path) -> CommandPolicy {
        CommandPolicy {
            cwd: self.cwd_or(work_dir),
            path: OsString::from(self.path()),
            env: self
                .env
                .iter()
                .filter(|(k, _)| k != "PATH")
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            timeout: Duration::from_millis(self.timeout_ms),
            output_cap: self.output_cap,
        }
    }
}

/// A partition's registrations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registrations {
    /// By server name.
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// How its `Bash` commands run; `None` (the default): they are not
    /// served. Only `tool set` makes it `Some`.
    pub bash: Option<BashPolicy>,
}

/// `<partition>.json`, in its field order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    schema: u32,
    partition: String,
    #[serde(default)]
    mcp_servers: BTreeMap<String, McpServer>,
    /// Written as `null` when commands are not served.
    #[serde(default)]
    bash: Option<BashPolicy>,
}

/// Why `name` is not an MCP server name, if it is not.
pub fn check_server_name(name: &str) -> std::result::Result<(), String> {
    let why = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_SERVER_NAME {
        format!("is longer than {MAX_SERVER_NAME} bytes")
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        format!(
            "holds {}: a server name is letters, digits, `-` and `_`",
            quote(&c.to_string())
        )
    } else if name.contains("__") {
        "holds `__`, which ends the server's part of a tool name (mcp__<server>__<tool>)"
            .to_string()
    } else if name.starts_with(['_', '-']) || name.ends_with('_') {
        "starts with `_` or `-`, or ends with `_`: mcp__<server>__<tool> would not split back into it".to_string()
    } else {
        return Ok(());
    };
    Err(why)
}

/// Whether `name` may be an environment variable's name.
fn env_name_ok(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Why a timeout of `ms` is refused, if it is.
fn timeout_problem(ms: u64) -> Option<String> {
    (ms == 0 || ms > MAX_TIMEOUT_MS).then(|| {
        format!(
            "{ms} ms: a timeout is more than 0 and at most {} s (the hypervisor waits {} s for an answer)",
            MAX_TIMEOUT_MS / 1000,
            rvm_abi::tool::DEADLINE_NS / 1_000_000_000
        )
    })
}

/// `--timeout SECS`: whole or decimal seconds, as milliseconds.
pub fn parse_secs(s: &str) -> std::result::Result<u64, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?}: a timeout is more than 0 seconds"));
    }
    let ms = (secs * 1000.0).round();
    if ms < 1.0 || ms > MAX_TIMEOUT_MS as f64 {
        return Err(format!(
            "{s:?}: a timeout is at least 0.001 and at most {} seconds",
            MAX_TIMEOUT_MS / 1000
        ));
    }
    Ok(ms as u64)
}

/// `--env NAME=VALUE`.
pub fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    if !env_name_ok(name) {
        return Err(format!(
            "{name:?} is not a variable name (a letter or `_`, then letters, digits and `_`)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--output-cap BYTES`.
pub fn parse_output_cap(s: &str) -> std::result::Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if n == 0 || n > MAX_OUTPUT_CAP {
        return Err(format!("{n}: an output cap is 1 to {MAX_OUTPUT_CAP} bytes"));
    }
    Ok(n)
}

/// Every problem of `reg`, the file shown as `shown`.
pub fn problems(shown: &str, reg: &Registrations) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut field = |path: String, why: String| out.push(Diagnostic::field(shown, path, why));
    for (name, s) in &reg.mcp_servers {
        let at = match check_server_name(name) {
            Ok(()) => format!("mcp_servers.{name}"),
            Err(why) => {
                let at = format!("mcp_servers[{}]", quote(name));
                field(at.clone(), format!("is not an MCP server name: it {why}"));
                at
            }
        };
        match s.argv.first() {
            None => field(
                format!("{at}.argv"),
                "is empty: it names the program to run, then its arguments".into(),
            ),
            Some(p) if p.is_empty() => field(
                format!("{at}.argv[0]"),
                "is empty: it names the program to run".into(),
            ),
            Some(_) => {}
        }
        if let Some(i) = s.argv.iter().position(|a| a.contains('\0')) {
            field(format!("{at}.argv[{i}]"), "holds a NUL byte".into());
        }
        if let Some(why) = timeout_problem(s.timeout_ms) {
            field(format!("{at}.timeout_ms"), why);
        }
    }
    let Some(b) = &reg.bash else {
        return out;
    };
    if let Some(cwd) = &b.cwd {
        if !Path::new(cwd).is_absolute() || cwd.contains('\0') {
            field(
                "bash.cwd".into(),
                format!("{} is not an absolute path", quote(cwd)),
            );
        }
    }
    if let Some(why) = timeout_problem(b.timeout_ms) {
        field("bash.timeout_ms".into(), why);
    }
    if b.output_cap == 0 || b.output_cap > MAX_OUTPUT_CAP {
        field(
            "bash.output_cap".into(),
            format!(
                "{}: an output cap is 1 to {MAX_OUTPUT_CAP} bytes",
                b.output_cap
            ),
        );
    }
    for (i, (k, v)) in b.env.iter().enumerate() {
        if !env_name_ok(k) {
            field(
                format!("bash.env[{i}][0]"),
                format!("{} is not a variable name", quote(k)),
            );
        } else if b.env[..i].iter().any(|(e, _)| e == k) {
            field(format!("bash.env[{i}][0]"), format!("{k} is set twice"));
        }
        if v.contains('\0') {
            field(format!("bash.env[{i}][1]"), "holds a NUL byte".into());
        }
    }
    out
}

/// `RVM_HOME/tools/`.
pub fn dir(root: &Path) -> PathBuf {
    root.join(TOOLS_DIR)
}

/// `RVM_HOME/tools/<partition>.json`.
pub fn file(root: &Path, name: &PartitionName) -> PathBuf {
    dir(root).join(format!("{name}.json"))
}

/// `RVM_HOME/tools/<partition>.d/`: the partition's folders.
pub fn partition_dir(root: &Path, name: &PartitionName) -> PathBuf {
    dir(root).join(format!("{name}.d"))
}

/// `RVM_HOME/tools/<partition>.d/work/`: where the partition's commands
/// run unless its policy names a folder.
pub fn bash_dir(root: &Path, name: &PartitionName) -> PathBuf {
    partition_dir(root, name).join("work")
}

/// `RVM_HOME/tools/<partition>.d/mcp/`: its servers' folders.
pub fn mcp_root(root: &Path, name: &PartitionName) -> PathBuf {
    partition_dir(root, name).join("mcp")
}

/// Where server `server` of a partition runs, its HOME, and its error
/// output's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpDirs {
    /// `tools/<partition>.d/mcp/<server>/`: its working directory.
    pub cwd: PathBuf,
    /// `…/mcp/<server>/home/`.
    pub home: PathBuf,
    /// `…/mcp/<server>/stderr.log`.
    pub stderr_log: PathBuf,
}

/// Server `server`'s folders (`server` a checked server name).
pub fn mcp_dirs(root: &Path, name: &PartitionName, server: &str) -> McpDirs {
    let cwd = mcp_root(root, name).join(server);
    McpDirs {
        home: cwd.join("home"),
        stderr_log: cwd.join("stderr.log"),
        cwd,
    }
}

fn io(what: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("{}: {e}", what.display()))
}

/// Whether `dir` is a folder of its own: `false` when missing; refused when
/// it is a symbolic link or anything else.
fn own_dir(dir: &Path) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(Error::refused(
            dir.display().to_string(),
            "not a directory (a symbolic link is not followed); remove it",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(dir, e)),
    }
}

/// Make `dir` (mode 0700; its parent must exist) unless it is there.
fn make_own_dir(dir: &Path) -> Result<()> {
    if own_dir(dir)? {
        return Ok(());
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(dir, e)),
    }
    if !own_dir(dir)? {
        return Err(Error::refused(
            dir.display().to_string(),
            "not a directory; remove it",
        ));
    }
    if let Some(parent) = dir.parent() {
        fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(parent, e))?;
    }
    Ok(())
}

/// Make `RVM_HOME` and `tools/`.
fn make_tools_dir(root: &Path) -> Result<PathBuf> {
    if !root.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| io(root, e))?;
    }
    let d = dir(root);
    make_own_dir(&d)?;
    Ok(d)
}

/// Make (if missing) and return the partition's folder,
/// `tools/<partition>.d/`.
fn ensure_partition_dir(root: &Path, name: &PartitionName) -> Result<PathBuf> {
    make_tools_dir(root)?;
    let d = partition_dir(root, name);
    make_own_dir(&d)?;
    Ok(d)
}

/// Make (if missing) and return the partition's commands' folder,
/// `tools/<partition>.d/work/`.
pub fn ensure_bash_dir(root: &Path, name: &PartitionName) -> Result<PathBuf> {
    ensure_partition_dir(root, name)?;
    let d = bash_dir(root, name);
    make_own_dir(&d)?;
    Ok(d)
}

/// Make (if missing) server `server`'s folder and HOME, each level checked
/// (a symbolic link refused), and return them.
pub fn ensure_mcp_dirs(root: &Path, name: &PartitionName, server: &str) -> Result<McpDirs> {
    check_server_name(server)
        .map_err(|why| Error::refused(server, format!("is not an MCP server name: it {why}")))?;
    ensure_partition_dir(root, name)?;
    make_own_dir(&mcp_root(root, name))?;
    let d = mcp_dirs(root, name, server);
    make_own_dir(&d.cwd)?;
    make_own_dir(&d.home)?;
    Ok(d)
}

/// Read `<partition>.json` (`shown` names it).
fn parse(shown: &str, name: &PartitionName, bytes: &[u8]) -> Result<Registrations> {
    let form: FileForm = serde_json::from_slice(bytes).map_err(|e| {
        Error::from(Diagnostic::new(
            shown,
            Location::LineCol(e.line(), e.column()),
            e.to_string(),
        ))
    })?;
    if form.schema != SCHEMA && form.schema != SCHEMA_V1 {
        return Err(Diagnostic::field(
            shown,
            "schema",
            format!(
                "{} (this loader reads {SCHEMA_V1} and {SCHEMA})",
                form.schema
            ),
        )
        .into());
    }
    if form.partition != name.as_str() {
        return Err(Diagnostic::field(
            shown,
            "partition",
            format!(
                "{}, but the file is kept for partition {name}",
                quote(&form.partition)
            ),
        )
        .into());
    }
    let reg = Registrations {
        mcp_servers: form.mcp_servers,
        // Schema 1: a `bash` section was written by `tool add` too, so it
        // does not mean the operator chose to serve commands.
        bash: if form.schema == SCHEMA_V1 {
            None
        } else {
            form.bash
        },
    };
    let p = problems(shown, &reg);
    if !p.is_empty() {
        return Err(Error::Refused(p));
    }
    Ok(reg)
}

/// Partition `name`'s registrations; `None` when it has no file.
pub fn load(root: &Path, name: &PartitionName) -> Result<Option<Registrations>> {
    let path = file(root, name);
    let shown = path.display().to_string();
    if !own_dir(&dir(root))? {
        return Ok(None);
    }
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() <= FILE_MAX => {}
        Ok(m) if m.is_file() => {
            return Err(Error::refused(
                &shown,
                format!("larger than {FILE_MAX} bytes"),
            ))
        }
        Ok(_) => {
            return Err(Error::refused(
                &shown,
                "not a regular file (a symbolic link is not followed); remove it",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, e)),
    }
    let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
    parse(&shown, name, &bytes).map(Some)
}

/// Partition `name`'s registrations, the defaults (no servers, commands
/// not served) when it has no file.
pub fn load_or_default(root: &Path, name: &PartitionName) -> Result<Registrations> {
    Ok(load(root, name)?.unwrap_or_default())
}

/// Store `reg` as partition `name`'s registrations (refused, nothing
/// written, unless it is valid). Returns the file's path.
pub fn save(root: &Path, name: &PartitionName, reg: &Registrations) -> Result<PathBuf> {
    let path = file(root, name);
    let shown = path.display().to_string();
    let p = problems(&shown, reg);
    if !p.is_empty() {
        return Err(Error::Refused(p));
    }
    let form = FileForm {
        schema: SCHEMA,
        partition: name.to_string(),
        mcp_servers: reg.mcp_servers.clone(),
        bash: reg.bash.clone(),
    };
    let mut text =
        serde_json::to_vec_pretty(&form).map_err(|e| Error::failed(format!("{shown}: {e}")))?;
    text.push(b'\n');
    make_tools_dir(root)?;
    crate::home::write_atomic(&path, &text, 0o600)?;
    Ok(path)
}

/// Apply `change` to partition `name`'s registrations (the defaults when
/// it has none) and store the result, under the folder's lock. Nothing is
/// written when `change` or the validation refuses. Returns what `change`
/// returned and the file's path.
pub fn update<T>(
    root: &Path,
    name: &PartitionName,
    change: impl FnOnce(&mut Registrations) -> Result<T>,
) -> Result<(T, PathBuf)> {
    make_tools_dir(root)?;
    // `tools/.lock`, held while a file is rewritten; taken over when the
    // process that made it is gone.
    let _lock = crate::home::LockGuard::take(dir(root).join(LOCK_FILE), Duration::from_millis(20))?;
    let mut reg = load_or_default(root, name)?;
    let out = change(&mut reg)?;
    let path = save(root, name, &reg)?;
    Ok((out, path))
}

/// The partitions that have a registration file.
pub fn partitions(root: &Path) -> Result<Vec<PartitionName>> {
    let d = dir(root);
    if !own_dir(&d)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(&d).map_err(|e| io(&d, e))? {
        let e = e.map_err(|e| io(&d, e))?;
        let file = e.file_name();
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if let Ok(n) = PartitionName::new(stem) {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A home folder under the temporary folder, removed when dropped.
    struct TmpRoot(PathBuf);

    impl TmpRoot {
        fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "rvm-loader-tools-registry-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            Self(p)
        }
    }

    impl Drop for TmpRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tenant() -> PartitionName {
        PartitionName::new("tenant").unwrap()
    }

    fn server(argv: &[&str]) -> McpServer {
        McpServer {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_ms: 5000,
        }
    }

    /// `r`'s Bash policy, set to the defaults when it has none.
    fn policy(r: &mut Registrations) -> &mut BashPolicy {
        r.bash.get_or_insert_with(BashPolicy::default)
    }

    #[test]
    fn server_names_are_what_a_tool_name_splits_back_into() {
        for ok in [
            "demo",
            "demo-devops",
            "demo_minimal",
            "a",
            "A9",
            "x-",
            "a_b-c",
        ] {
            assert_eq!(check_server_name(ok), Ok(()), "{ok}");
            // The rule the host splits a tool name by gives it back.
            let tool = format!("mcp__{ok}__do_it");
            let rest = &tool["mcp__".len()..];
            assert_eq!(&rest[..rest.find("__").unwrap()], ok);
            assert!(rvm_cap::claim::valid_tool(&tool));
        }
        for (bad, why) in [
            ("", "is empty"),
            ("a__b", "holds `__`"),
            ("a_", "ends with `_`"),
            ("_a", "starts with `_`"),
            ("-a", "starts with `_` or `-`"),
            ("a.b", "holds \".\""),
            ("a/b", "holds \"/\""),
            ("a b", "holds \" \""),
            ("é", "holds \"é\""),
        ] {
            let e = check_server_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_server_name(&"a".repeat(65))
            .unwrap_err()
            .contains("longer than 64"));
    }

    #[test]
    fn registrations_round_trip_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = TmpRoot::new("rt");
        assert_eq!(load(&root.0, &tenant()).unwrap(), None);
        assert_eq!(
            load_or_default(&root.0, &tenant()).unwrap(),
            Registrations::default()
        );
        let mut reg = Registrations::default();
        reg.mcp_servers
            .insert("demo".into(), server(&["rvm-mcp-demo", "--flag"]));
        let mut bash = BashPolicy::default();
        bash.env.push(("LANG".into(), "C".into()));
        bash.cwd = Some("/tmp".into());
        reg.bash = Some(bash.clone());
        let path = save(&root.0, &tenant(), &reg).unwrap();
        assert_eq!(path, root.0.join("tools/tenant.json"));
        assert_eq!(load(&root.0, &tenant()).unwrap(), Some(reg.clone()));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir(&root.0)).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["schema"], 2);
        assert_eq!(v["partition"], "tenant");
        assert_eq!(
            v["mcp_servers"]["demo"]["argv"],
            serde_json::json!(["rvm-mcp-demo", "--flag"])
        );
        assert_eq!(v["bash"]["env"], serde_json::json!([["LANG", "C"]]));
        assert_eq!(partitions(&root.0).unwrap(), [tenant()]);
        // The policy a command gets: PATH by default, the rest as listed.
        let p = bash.command_policy(Path::new("/w"));
        assert_eq!(
            (p.cwd, p.path, p.env.len()),
            (PathBuf::from("/tmp"), OsString::from(DEFAULT_PATH), 1)
        );
        bash.cwd = None;
        bash.env.push(("PATH".into(), "/opt/bin".into()));
        let p = bash.command_policy(Path::new("/w"));
        assert_eq!(
            (p.cwd, p.path, p.env.len()),
            (PathBuf::from("/w"), OsString::from("/opt/bin"), 1)
        );
        assert_eq!((p.timeout, p.output_cap), (Duration::from_secs(30), 8192));
    }

    #[test]
    fn a_bad_registration_is_refused_naming_the_field_and_nothing_is_written() {
        let root = TmpRoot::new("bad");
        let mut good = Registrations::default();
        good.mcp_servers.insert("demo".into(), server(&["x"]));
        let path = save(&root.0, &tenant(), &good).unwrap();
        let before = fs::read(&path).unwrap();
        let shown = path.display().to_string();
        let cases: Vec<(Registrations, &str)> = vec![
            (
                {
                    let mut r = good.clone();
                    r.mcp_servers.insert("a__b".into(), server(&["x"]));
                    r
                },
                "mcp_servers[\"a__b\"]: is not an MCP server name: it holds `__`",
            ),
            (
                {
                    let mut r = good.clone();
                    r.mcp_servers.insert("empty".into(), server(&[]));
                    r
                },
                "mcp_servers.empty.argv: is empty",
            ),
            (
                {
                    let mut r = good.clone();
                    r.mcp_servers.insert("blank".into(), server(&[""]));
                    r
                },
                "mcp_servers.blank.argv[0]: is empty",
            ),
            (
                {
                    let mut r = good.clone();
                    r.mcp_servers.get_mut("demo").unwrap().timeout_ms = 0;
                    r
                },
                "mcp_servers.demo.timeout_ms: 0 ms: a timeout is more than 0",
            ),
            (
                {
                    let mut r = good.clone();
                    policy(&mut r).timeout_ms = MAX_TIMEOUT_MS + 1;
                    r
                },
                "bash.timeout_ms: 570001 ms",
            ),
            (
                {
                    let mut r = good.clone();
                    policy(&mut r).output_cap = 0;
                    r
                },
                "bash.output_cap: 0: an output cap is 1 to",
            ),
            (
                {
                    let mut r = good.clone();
                    policy(&mut r).cwd = Some("relative/dir".into());
                    r
                },
                "bash.cwd: \"relative/dir\" is not an absolute path",
            ),
            (
                {
                    let mut r = good.clone();
                    policy(&mut r).env = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
                    r
                },
                "bash.env[1][0]: A is set twice",
            ),
            (
                {
                    let mut r = good.clone();
                    policy(&mut r).env = vec![("1A".into(), "1".into())];
                    r
                },
                "bash.env[0][0]: \"1A\" is not a variable name",
            ),
        ];
        for (reg, want) in cases {
            let e = save(&root.0, &tenant(), &reg).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e}");
            let e = e.to_string();
            assert!(e.starts_with(&shown) && e.contains(want), "{want}: {e}");
            let e = update(&root.0, &tenant(), |r| {
                *r = reg.clone();
                Ok(())
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert_eq!(fs::read(&path).unwrap(), before, "nothing written");
        }
        // Every file in the folder is the registration or the lock's absence.
        let names: Vec<_> = fs::read_dir(dir(&root.0))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("tenant.json")]);
    }

    #[test]
    fn a_changed_file_is_refused_naming_the_file_and_the_field() {
        let root = TmpRoot::new("changed");
        let mut reg = Registrations::default();
        reg.mcp_servers.insert("demo".into(), server(&["x"]));
        let path = save(&root.0, &tenant(), &reg).unwrap();
        let shown = path.display().to_string();
        let text = fs::read_to_string(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["mcp_servers"]["demo"]["argv"] = serde_json::json!([]);
        fs::write(&path, v.to_string()).unwrap();
        let e = load(&root.0, &tenant()).unwrap_err().to_string();
        assert_eq!(e, format!("{shown}: mcp_servers.demo.argv: is empty: it names the program to run, then its arguments"));
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["partition"] = "other".into();
        fs::write(&path, v.to_string()).unwrap();
        let e = load(&root.0, &tenant()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{shown}: partition: \"other\", but the file is kept for partition tenant")
        );
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["bash"]["shell"] = true.into();
        fs::write(&path, v.to_string()).unwrap();
        let e = load(&root.0, &tenant()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{shown}: line 1, column"))
                && e.contains("unknown field `shell`"),
            "{e}"
        );
        fs::write(&path, "{").unwrap();
        assert!(load(&root.0, &tenant())
            .unwrap_err()
            .to_string()
            .starts_with(&shown));
        // A link planted at the file is not followed.
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let e = load(&root.0, &tenant()).unwrap_err().to_string();
        assert!(e.contains("symbolic link is not followed"), "{e}");
    }

    #[test]
    fn the_command_line_values_are_checked() {
        assert_eq!(parse_secs("30"), Ok(30_000));
        assert_eq!(parse_secs("0.25"), Ok(250));
        for bad in ["0", "-1", "x", "NaN", "inf", "571", "0.0001"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_env("A_1=x=y"), Ok(("A_1".into(), "x=y".into())));
        assert_eq!(parse_env("EMPTY="), Ok(("EMPTY".into(), String::new())));
        for bad in ["A", "=x", "1A=x", "A-B=x"] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_output_cap("8192"), Ok(8192));
        for bad in ["0", "-1", "x", "1048577"] {
            assert!(parse_output_cap(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_partition_folders_are_made_on_demand() {
        let root = TmpRoot::new("work");
        let d = ensure_bash_dir(&root.0, &tenant()).unwrap();
        assert_eq!(d, root.0.join("tools/tenant.d/work"));
        assert!(d.is_dir());
        assert_eq!(
            ensure_bash_dir(&root.0, &tenant()).unwrap(),
            d,
            "again: the same"
        );
        // No registration file for it: not listed.
        assert!(partitions(&root.0).unwrap().is_empty());
    }

    #[test]
    fn commands_and_servers_never_share_a_folder() {
        let root = TmpRoot::new("apart");
        let work = ensure_bash_dir(&root.0, &tenant()).unwrap();
        let m = ensure_mcp_dirs(&root.0, &tenant(), "demo").unwrap();
        let d = root.0.join("tools/tenant.d");
        assert_eq!(
            m,
            McpDirs {
                cwd: d.join("mcp/demo"),
                home: d.join("mcp/demo/home"),
                stderr_log: d.join("mcp/demo/stderr.log"),
            }
        );
        assert!(m.cwd.is_dir() && m.home.is_dir());
        // Nothing of a server's is inside the commands' folder, nor the
        // other way round.
        for p in [&m.cwd, &m.home, &m.stderr_log] {
            assert!(!p.starts_with(&work), "{}", p.display());
            assert!(!work.starts_with(p), "{}", p.display());
        }
        for mode in [&d, &work, &m.cwd, &m.home] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(mode).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        assert!(ensure_mcp_dirs(&root.0, &tenant(), "../x").is_err());
        // A symbolic link at any level is refused, not followed.
        let elsewhere = root.0.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let links = [work.clone(), d.join("mcp"), m.cwd.clone(), m.home.clone()];
        for at in links {
            fs::rename(&at, root.0.join("moved")).unwrap();
            std::os::unix::fs::symlink(&elsewhere, &at).unwrap();
            let e = ensure_bash_dir(&root.0, &tenant())
                .and_then(|_| ensure_mcp_dirs(&root.0, &tenant(), "demo"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("symbolic link is not followed"),
                "{}: {e}",
                at.display()
            );
            fs::remove_file(&at).unwrap();
            fs::rename(root.0.join("moved"), &at).unwrap();
        }
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn commands_are_served_only_when_a_policy_was_set() {
        let root = TmpRoot::new("optin");
        // A file made for a server alone: commands not served, and the file
        // says so (`"bash": null`).
        let (_, path) = update(&root.0, &tenant(), |r| {
            r.mcp_servers.insert("demo".into(), server(&["x"]));
            Ok(())
        })
        .unwrap();
        assert_eq!(load(&root.0, &tenant()).unwrap().unwrap().bash, None);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["bash"], serde_json::Value::Null);
        assert_eq!(Registrations::default().bash, None);
        // Set: served, with that policy.
        update(&root.0, &tenant(), |r| {
            policy(r).timeout_ms = 1000;
            Ok(())
        })
        .unwrap();
        let reg = load(&root.0, &tenant()).unwrap().unwrap();
        assert_eq!(reg.bash.map(|b| b.timeout_ms), Some(1000));
        // A file without the field (hand-written): not served.
        fs::write(&path, r#"{"schema":2,"partition":"tenant"}"#).unwrap();
        assert_eq!(load(&root.0, &tenant()).unwrap().unwrap().bash, None);
    }

    #[test]
    fn a_schema_1_file_is_read_with_commands_not_served() {
        let root = TmpRoot::new("v1");
        make_tools_dir(&root.0).unwrap();
        let path = file(&root.0, &tenant());
        // As the loader before schema 2 wrote it (for `tool add` alone as
        // for `tool set`): its bash section always there.
        fs::write(
            &path,
            r#"{"schema":1,"partition":"tenant","mcp_servers":{"demo":{"argv":["x"],"timeout_ms":5000}},
               "bash":{"cwd":null,"timeout_ms":30000,"output_cap":8192,"env":[]}}"#,
        )
        .unwrap();
        let reg = load(&root.0, &tenant()).unwrap().unwrap();
        assert_eq!(reg.bash, None);
        assert_eq!(reg.mcp_servers["demo"], server(&["x"]));
        // Rewritten as schema 2 at the next change.
        update(&root.0, &tenant(), |_| Ok(())).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!((v["schema"].as_u64(), v["bash"].is_null()), (Some(2), true));
        fs::write(&path, r#"{"schema":3,"partition":"tenant"}"#).unwrap();
        let e = load(&root.0, &tenant()).unwrap_err().to_string();
        assert!(e.contains("schema: 3 (this loader reads 1 and 2)"), "{e}");
    }
}
