//! A long-lived RVM instance: `rvm-loader instance start|status|stop`.
//!
//! `instance start` boots the named partitions (all with a guest when none
//! is named; none at all when no partition has a guest yet) like `up`, but
//! in the background and as an *instance*: the
//! bundle carries [`BOOT_FLAG_INSTANCE`](rvm_abi::bundle::BOOT_FLAG_INSTANCE),
//! so the hypervisor keeps running when its partitions have finished or all
//! wait, with no run budget and no timeout, until `instance stop` sends it
//! the operator's signed `shutdown` order; it then checkpoints and signs
//! every log and powers off, and the background loader files and verifies
//! the logs as `up` does.
//!
//! One instance per `RVM_HOME`. Its folder `RVM_HOME/instance/` holds:
//!
//! * `instance.json` — the lock: the background loader's pid, when it
//!   started, the partitions it booted, its boot id, and whether the
//!   hypervisor is talking yet.
//!   Created with `O_EXCL` by that loader and removed when it ends; a lock
//!   whose process is gone is stale and replaced.
//! * `status.json` — the partitions' states as the hypervisor's witness
//!   records report them, rewritten whenever one changes or a partition is
//!   admitted (`deploy` and `guest boot` admit theirs into a running
//!   instance: [`crate::admission`]).
//! * `console.log` — the background loader's output: the console, its
//!   progress, the run's summary.
//! * `ended.json` — how the last instance ended (written as it ends).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::boot::BootOptions;
use crate::error::{Error, Result};
use crate::home::{Home, RunState};
use crate::model::PartitionName;
use crate::witness_sink::LogNames;

/// The instance folder under `RVM_HOME`.
pub const INSTANCE_DIR: &str = "instance";
/// How long `instance start` waits for the hypervisor to talk.
const START_WAIT: Duration = Duration::from_secs(90);
/// How long `instance stop` waits for the instance to end.
const STOP_WAIT: Duration = Duration::from_secs(120);
/// The run of an instance lasts until it is stopped (QEMU's timeout is
/// this, far away).
pub const INSTANCE_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The lock: who runs the instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The background loader that runs it.
    pub pid: u32,
    pub started_unix: u64,
    /// The partitions it booted (not those admitted since).
    pub partitions: Vec<String>,
    /// The hypervisor has spoken (it booted).
    pub running: bool,
    /// The boot id (hex) of the bundle it booted: the run admitted
    /// partitions take part in.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// When that process started (`/proc/<pid>/stat` field 22, clock
    /// ticks since boot): a lock whose pid now names another process (the
    /// loader died, the pid was reused) is stale.
    #[serde(default)]
    pub pid_started: Option<u64>,
}

/// The partitions' live states.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    pub updated_unix: u64,
    /// (partition, state): those booted in boot order, then those
    /// admitted, in the order the hypervisor admitted them.
    pub partitions: Vec<(String, String)>,
}

/// How the last instance ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ended {
    pub pid: u32,
    pub ended_unix: u64,
    /// The run's outcome, as `rvm-loader status` shows it.
    pub outcome: String,
    /// The background loader's exit: 0 clean, else why not.
    pub ok: bool,
}

fn dir(home: &Path) -> PathBuf {
    home.join(INSTANCE_DIR)
}

fn lock_path(home: &Path) -> PathBuf {
    dir(home).join("instance.json")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`, counted after the command name's closing paren).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the loader a lock names is still that process.
fn holds(r: &InstanceRecord) -> bool {
    match r.pid_started {
        Some(t) => process_start(r.pid) == Some(t),
        None => alive(r.pid),
    }
}

/// The running instance of `home`, if any (a lock whose process is gone,
/// or whose pid now names another process, is not one).
pub fn running(home: &Path) -> Option<InstanceRecord> {
    let text = std::fs::read_to_string(lock_path(home)).ok()?;
    let r: InstanceRecord = serde_json::from_str(&text).ok()?;
    holds(&r).then_some(r)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::failed(e.to_string()))?;
    rvm_witness_host::files::write_atomic(path, text.as_bytes(), 0o600)
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())))
}

/// Held by the background loader while the instance runs: the lock, made
/// with `O_EXCL`, removed when dropped.
pub struct Lock {
    path: PathBuf,
    record: InstanceRecord,
}

impl Lock {
    /// Take the lock of `home` for an instance booting `partitions` in the
    /// bundle of boot id `boot_id` (hex), or say who holds it.
    pub fn take(home: &Path, partitions: &[PartitionName], boot_id: &str) -> Result<Self> {
        let path = lock_path(home);
        std::fs::create_dir_all(dir(home)).map_err(|e| Error::failed(format!("{}: {e}", dir(home).display())))?;
        if let Some(r) = running(home) {
            return Err(already(&r));
        }
        // A lock whose loader is gone is stale and goes; one that does not
        // read (being written by a loader starting now) stays.
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<InstanceRecord>(&text) {
                Ok(r) if !holds(&r) => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {
                    return Err(Error::refused(
                        "instance start",
                        format!("another instance of this RVM_HOME is starting ({} exists)", path.display()),
                    ))
                }
            }
        }
        let record = InstanceRecord {
            pid: std::process::id(),
            started_unix: crate::home::now_unix(),
            partitions: partitions.iter().map(ToString::to_string).collect(),
            running: false,
            boot_id: Some(boot_id.to_string()),
            pid_started: process_start(std::process::id()),
        };
        let text = serde_json::to_string_pretty(&record).map_err(|e| Error::failed(e.to_string()))?;
        let mut f = rvm_witness_host::files::create_new(&path, 0o600).map_err(|e| {
            Error::failed(format!("{}: {e} (another instance is starting?)", path.display()))
        })?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| Error::failed(e.to_string()))?;
        Ok(Self { path, record })
    }

    /// The hypervisor has spoken.
    pub fn note_running(&mut self) {
        self.record.running = true;
        let _ = write_json(&self.path, &self.record);
    }

    /// The folder live status goes to.
    pub fn dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn already(r: &InstanceRecord) -> Error {
    Error::refused(
        "instance start",
        format!(
            "an instance is already running in this RVM_HOME (loader pid {}, started {} s ago, partitions {}); stop it with `rvm-loader instance stop`",
            r.pid,
            crate::home::now_unix().saturating_sub(r.started_unix),
            crate::boot::listed(&r.partitions)
        ),
    )
}

/// Write the live status of the partitions `names` (log id → name: those
/// booted and those admitted) from `states` (by log id).
pub fn write_status(dir: &Path, names: &LogNames, states: &std::collections::BTreeMap<u32, RunState>) {
    let partitions = names
        .0
        .iter()
        .map(|(id, n)| (n.to_string(), states.get(id).map_or("booting", |s| s.name()).to_string()))
        .collect();
    let _ = write_json(&dir.join("status.json"), &InstanceStatus { updated_unix: crate::home::now_unix(), partitions });
}

/// The live status of `home`'s instance (empty when there is none yet).
pub fn live_status(home: &Path) -> InstanceStatus {
    std::fs::read_to_string(dir(home).join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Every partition of the instance `r`: those it booted, then those
/// admitted since (from its live status), each with its live state and
/// whether it was admitted.
fn partitions_of(r: &InstanceRecord, live: &InstanceStatus) -> Vec<(String, String, bool)> {
    let state = |n: &str| live.partitions.iter().find(|(p, _)| p == n).map_or("booting", |(_, s)| s.as_str()).to_string();
    let booted = r.partitions.iter().map(|n| (n.clone(), state(n), false));
    let admitted = live
        .partitions
        .iter()
        .filter(|(n, _)| !r.partitions.contains(n))
        .map(|(n, s)| (n.clone(), s.clone(), true));
    booted.chain(admitted).collect()
}

/// Note how the instance ended.
pub fn write_ended(dir: &Path, outcome: &str, ok: bool) {
    let _ = write_json(
        &dir.join("ended.json"),
        &Ended { pid: std::process::id(), ended_unix: crate::home::now_unix(), outcome: outcome.to_string(), ok },
    );
}

/// `instance start`: run `serve_args` (the loader's own `instance serve`
/// command line) in the background, detached from this terminal, and wait
/// until its hypervisor talks.
pub fn start(home: &Home, serve_args: &[String]) -> Result<()> {
    if let Some(r) = running(home.root()) {
        return Err(already(&r));
    }
    let d = dir(home.root());
    std::fs::create_dir_all(&d).map_err(|e| Error::failed(format!("{}: {e}", d.display())))?;
    let console = d.join("console.log");
    let log = std::fs::File::create(&console).map_err(|e| Error::failed(format!("{}: {e}", console.display())))?;
    let err = log.try_clone().map_err(|e| Error::failed(e.to_string()))?;
    let _ = std::fs::remove_file(d.join("ended.json"));
    let _ = std::fs::remove_file(d.join("status.json"));
    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("this program's path: {e}")))?;
    // `setsid`: its own session, so closing this terminal does not end it.
    let mut child = std::process::Command::new("setsid")
        .arg(exe)
        .args(serve_args)
        .env("RVM_HOME", home.root())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start the instance (setsid): {e}")))?;
    let since = Instant::now();
    loop {
        if let Some(r) = running(home.root()).filter(|r| r.running) {
            println!(
                "instance started: loader pid {}, partitions: {}; console {}; `rvm-loader instance status`, `rvm-loader instance stop`",
                r.pid,
                crate::boot::listed(&r.partitions),
                console.display()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::failed(format!(
                "the instance did not start ({status}); its output, {}:\n{}",
                console.display(),
                tail(&console, 20)
            )));
        }
        if since.elapsed() > START_WAIT {
            return Err(Error::failed(format!(
                "the instance's hypervisor did not talk within {} s; its output, {}:\n{}",
                START_WAIT.as_secs(),
                console.display(),
                tail(&console, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `instance status`.
pub fn status(home: &Home, json: bool) -> Result<()> {
    let Some(r) = running(home.root()) else {
        if json {
            println!("{}", serde_json::json!({ "running": false }));
        } else {
            println!("no instance running in {}", home.root().display());
        }
        return Ok(());
    };
    let parts = partitions_of(&r, &live_status(home.root()));
    let records = |name: &str| {
        std::fs::metadata(home.witness_dir().join(format!("{name}.log"))).map_or(0, |m| m.len() / 64)
    };
    let uptime = crate::home::now_unix().saturating_sub(r.started_unix);
    // What the hypervisor itself says (a signed `status` order, witnessed
    // in its log), once it talks.
    let live = if r.running {
        crate::control::deliver(home, rvm_abi::frame::OrderKind::Status, rvm_abi::frame::HYPERVISOR_TARGET, r.pid)
            .map_err(|e| e.to_string())
            .and_then(|line| Live::parse(&line).ok_or_else(|| format!("the hypervisor's answer does not read: {line}")))
    } else {
        Err("the hypervisor is booting".to_string())
    };
    // Its coherence domain's last cut, as its log records it so far.
    let last_cut = |name: &str| crate::domains::last_decision_in(&home.witness_dir().join(format!("{name}.log")));
    if json {
        let parts: Vec<_> = parts
            .iter()
            .map(|(n, state, admitted)| {
                let cut = last_cut(n).map(|d| {
                    serde_json::json!({ "event": d.event.name(), "seq": d.seq, "cut_raw": d.cut, "internal_raw": d.internal })
                });
                serde_json::json!({ "name": n, "state": state, "admitted": admitted, "records": records(n), "last_cut": cut })
            })
            .collect();
        let live = match &live {
            Ok(l) => serde_json::json!({
                "cpus": l.cpus,
                "frames_free_kib": l.frames_free_kib,
                "frames_kib": l.frames_kib,
                "heap_reserved_kib": l.heap_reserved_kib,
                "heap_kib": l.heap_kib,
                "partitions": l.partitions.iter().map(|p| serde_json::json!({
                    "id": p.id,
                    "name": p.name,
                    "state": p.state,
                    "records": p.records,
                    "log_head": p.head,
                    "agents": p.agents,
                    "keeping_state": p.keeping,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({ "error": e }),
        };
        println!(
            "{}",
            serde_json::json!({
                "running": true,
                "pid": r.pid,
                "uptime_s": uptime,
                "hypervisor_talking": r.running,
                "hypervisor_records": records("hypervisor"),
                "partitions": parts,
                "live": live,
            })
        );
        return Ok(());
    }
    println!("instance running: loader pid {}, up {uptime} s{}", r.pid, if r.running { "" } else { " (booting)" });
    match &live {
        Ok(l) => println!(
            "  the hypervisor says: {} CPUs; {} of {} MiB free for partitions; its heap {} of {} MiB reserved",
            l.cpus,
            l.frames_free_kib / 1024,
            l.frames_kib / 1024,
            l.heap_reserved_kib / 1024,
            l.heap_kib / 1024
        ),
        Err(e) => println!("  (no live state from the hypervisor: {e})"),
    }
    if parts.is_empty() {
        println!("  no partition yet (`rvm-loader deploy FOLDER` admits one)");
    }
    for (n, state, admitted) in &parts {
        let how = if *admitted { " (admitted)" } else { "" };
        println!("  {n}{how}: {state}, {} witness records filed", records(n));
        if let Some(p) = live.as_ref().ok().and_then(|l| l.partitions.iter().find(|p| p.name == *n)) {
            let head = p.head.as_deref().map_or(String::new(), |h| format!(" (head {h}…)"));
            let agents = if p.agents == 1 { "1 agent".to_string() } else { format!("{} agents", p.agents) };
            let keeping = if p.keeping { "; waiting for the host to keep its committed state" } else { "" };
            println!("    the hypervisor says: partition {}, {}, {} witness records{head}, {agents}{keeping}", p.id, p.state, p.records);
        }
        if let Some(d) = last_cut(n) {
            println!("    last cut decision: {}", d.describe());
        }
    }
    println!("  hypervisor: {} witness records filed", records("hypervisor"));
    Ok(())
}

/// The hypervisor's answer to a `status` order (`rvm: order <nonce> status
/// 'hypervisor' done: cpus=… frames_free_kib=… frames_kib=…
/// heap_reserved_kib=… heap_kib=… partitions=id:name:state:records,…`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub cpus: u64,
    pub frames_free_kib: u64,
    pub frames_kib: u64,
    pub heap_reserved_kib: u64,
    pub heap_kib: u64,
    pub partitions: Vec<LivePartition>,
}

/// One partition as the hypervisor reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePartition {
    pub id: u32,
    pub name: String,
    pub state: String,
    pub records: u64,
    /// The first 8 bytes of its log's chain head, hex (`None`: no record,
    /// or an older hypervisor that does not say).
    pub head: Option<String>,
    /// Its agents (1 unless it is a coherence domain of several).
    pub agents: u64,
    /// It waits for the host to keep its committed set.
    pub keeping: bool,
}

impl Live {
    /// Read an answer line; `None` if it is not one.
    pub fn parse(line: &str) -> Option<Self> {
        let (_, words) = line.split_once(" done: ")?;
        let mut l = Live::default();
        for word in words.split_whitespace() {
            let (key, value) = word.split_once('=')?;
            match key {
                "cpus" => l.cpus = value.parse().ok()?,
                "frames_free_kib" => l.frames_free_kib = value.parse().ok()?,
                "frames_kib" => l.frames_kib = value.parse().ok()?,
                "heap_reserved_kib" => l.heap_reserved_kib = value.parse().ok()?,
                "heap_kib" => l.heap_kib = value.parse().ok()?,
                "partitions" => {
                    for p in value.split(',').filter(|p| !p.is_empty()) {
                        let mut f = p.split(':');
                        l.partitions.push(LivePartition {
                            id: f.next()?.parse().ok()?,
                            name: f.next()?.to_string(),
                            state: f.next()?.to_string(),
                            records: f.next()?.parse().ok()?,
                            head: f.next().filter(|h| *h != "-").map(str::to_string),
                            agents: f.next().and_then(|a| a.parse().ok()).unwrap_or(1),
                            keeping: f.next() == Some("keeping"),
                        });
                    }
                }
                // Words a newer hypervisor adds are left alone.
                _ => {}
            }
        }
        Some(l)
    }
}

/// `instance stop`: the signed `shutdown` order, then wait for the
/// instance to end.
pub fn stop(home: &Home) -> Result<()> {
    let Some(r) = running(home.root()) else {
        return Err(Error::failed(format!("no instance running in {}", home.root().display())));
    };
    let answer = crate::control::deliver(home, rvm_abi::frame::OrderKind::Shutdown, rvm_abi::frame::HYPERVISOR_TARGET, r.pid)?;
    println!("{answer}");
    let since = Instant::now();
    while alive(r.pid) {
        if since.elapsed() > STOP_WAIT {
            return Err(Error::failed(format!(
                "the instance (loader pid {}) did not end within {} s of its shutdown order",
                r.pid,
                STOP_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = dir(home.root());
    let ended: Option<Ended> = std::fs::read_to_string(d.join("ended.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    match ended {
        Some(e) if e.ok => {
            println!("instance stopped: {}; every log filed and verified ({})", e.outcome, d.join("console.log").display());
            Ok(())
        }
        Some(e) => Err(Error::failed(format!("the instance ended: {} (see {})", e.outcome, d.join("console.log").display()))),
        None => Err(Error::failed(format!("the instance ended without saying how (see {})", d.join("console.log").display()))),
    }
}

/// Options of the background run: an instance, no timeout.
pub fn serve_options(mut opts: BootOptions, instance_dir: PathBuf) -> BootOptions {
    opts.instance = Some(instance_dir);
    opts.timeout = INSTANCE_TIMEOUT;
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hypervisors_status_answer_reads() {
        let line = "rvm: order 12 status 'hypervisor' done: cpus=4 frames_free_kib=389120 frames_kib=393216 heap_reserved_kib=7700 heap_kib=122880 partitions=1:a:running:25:00ff00ff00ff00ff:3:keeping,3:b:evicted:9,4:c:loaded:0:-:1:-";
        let l = Live::parse(line).unwrap();
        assert_eq!((l.cpus, l.frames_free_kib, l.frames_kib, l.heap_reserved_kib, l.heap_kib), (4, 389_120, 393_216, 7_700, 122_880));
        let p = |id, name: &str, state: &str, records, head: Option<&str>, agents, keeping| LivePartition {
            id,
            name: name.into(),
            state: state.into(),
            records,
            head: head.map(str::to_string),
            agents,
            keeping,
        };
        assert_eq!(l.partitions[0], p(1, "a", "running", 25, Some("00ff00ff00ff00ff"), 3, true));
        // An older hypervisor's answer, without the later fields.
        assert_eq!(l.partitions[1], p(3, "b", "evicted", 9, None, 1, false));
        assert_eq!(l.partitions[2], p(4, "c", "loaded", 0, None, 1, false));
        assert_eq!(Live::parse("rvm: order 12 status 'hypervisor' done: cpus=4 partitions=").unwrap().partitions, []);
        assert!(Live::parse("rvm: order 12 status 'hypervisor' done: cpus=x").is_none());
        assert!(Live::parse("rvm: order 12 status 'hypervisor' refused: signature").is_none());
    }

    #[test]
    fn a_lock_whose_pid_names_another_process_now_is_stale() {
        let home = std::env::temp_dir().join(format!("rvm-instance-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(dir(&home)).unwrap();
        let me = std::process::id();
        let started = process_start(me).expect("this process's start time");
        let lock = |pid_started| InstanceRecord { pid: me, started_unix: 0, partitions: vec![], running: true, boot_id: None, pid_started };
        std::fs::write(lock_path(&home), serde_json::to_string(&lock(Some(started))).unwrap()).unwrap();
        assert!(running(&home).is_some(), "the process that took it holds it");
        // The same pid, started at another time: a reused pid.
        std::fs::write(lock_path(&home), serde_json::to_string(&lock(Some(started + 1))).unwrap()).unwrap();
        assert!(running(&home).is_none(), "a reused pid does not hold the lock");
        assert!(Lock::take(&home, &[], "00").is_ok(), "and a new instance may take it");
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn the_live_status_lists_admitted_partitions_after_those_booted() {
        let home = std::env::temp_dir().join(format!("rvm-instance-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(dir(&home)).unwrap();
        let n = |s: &str| PartitionName::new(s).unwrap();
        // Log 1 booted; log 4 admitted while the instance ran.
        let names = LogNames(vec![(1, n("a")), (4, n("tenant"))]);
        let states = std::collections::BTreeMap::from([(4, RunState::Running), (1, RunState::Exited)]);
        write_status(&dir(&home), &names, &states);
        let live = live_status(&home);
        assert_eq!(live.partitions, [("a".to_string(), "exited".to_string()), ("tenant".to_string(), "running".to_string())]);
        let record = InstanceRecord { pid: 1, started_unix: 0, partitions: vec!["a".into(), "b".into()], running: true, boot_id: None, pid_started: None };
        assert_eq!(
            partitions_of(&record, &live),
            [
                ("a".to_string(), "exited".to_string(), false),
                ("b".to_string(), "booting".to_string(), false),
                ("tenant".to_string(), "running".to_string(), true),
            ]
        );
        let _ = std::fs::remove_dir_all(&home);
    }
}
