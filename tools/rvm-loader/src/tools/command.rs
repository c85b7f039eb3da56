//! A `Bash(…)` tool call run on the host. The command line is split by the
//! hypervisor's own rule ([`rvm_cap::claim::command_words`]: ASCII
//! whitespace, no quotes, no escapes, no expansion; control characters and
//! `..` path components refused), so the program and arguments that run
//! are the words the claim was matched against: `;`, `|`, `$( )` and
//! backticks are bytes of an argument. It runs with the operator's working
//! directory, an environment holding only `PATH` and what the operator
//! lists, no input, a deadline and a cap on the output kept (the rest is
//! read and dropped, so the program is never blocked on a full pipe).
//!
//! The program leads a process group of its own ([`Leader`]). At its
//! deadline, and when it exits, that whole group is killed: what it
//! started and left running in the group goes with it. What is **not**
//! killed: a descendant that left the group (`setsid`, `setpgid`, a
//! daemon's double fork) is out of reach of a group kill and may outlive
//! the call; its hold on the output pipes is given up on after
//! [`OUTPUT_GRACE`]. Containing those needs the operator's own sandbox
//! (a cgroup, a container) around the loader or the programs a claim
//! allows.
//!
//! The group is signalled only while its leader has not been reaped: a
//! process's id, and so its group's id, cannot be handed to another
//! process while it is an unreaped zombie, so the signal never reaches an
//! unrelated group that happens to get the id later. The exit is seen in
//! `/proc/<pid>/stat` (a zombie) without reaping; on a host without
//! `/proc` the leader is reaped to learn that it exited, and its group is
//! then no longer signalled (what it left in it survives, as a `setsid`
//! one does).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long the output of a command that has ended is still waited for
/// (a process outside its group may hold its pipes open).
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// How often a running command is looked at.
const POLL: Duration = Duration::from_millis(5);

/// How the operator lets commands run.
#[derive(Clone, Debug)]
pub struct CommandPolicy {
    /// Where they run.
    pub cwd: PathBuf,
    /// The `PATH` they run with (also where the program is looked up).
    pub path: OsString,
    /// Further environment variables they get (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// How long one may run.
    pub timeout: Duration,
    /// Most bytes of output kept: standard output and standard error
    /// together (see [`super::share`] for how it is split between them).
    pub output_cap: usize,
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// Its deadline passed: its process group was killed.
    TimedOut,
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Its standard output, kept up to its share of the cap.
    pub stdout: Vec<u8>,
    /// Its standard error, kept up to its share of the cap.
    pub stderr: Vec<u8>,
    /// Output was dropped at the cap.
    pub truncated: bool,
    pub ended: Ended,
}

/// Why a command was not run.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The line is not one the hypervisor passes on (see the module doc).
    NotACommand,
    /// The program could not be started.
    Start(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::NotACommand => {
                f.write_str("not a command line: empty, not UTF-8, a control character, or a `..` path component")
            }
            CommandError::Start(e) => write!(f, "the program could not be started: {e}"),
        }
    }
}

/// What a stream's reader has kept so far.
#[derive(Default)]
struct Drained {
    kept: Vec<u8>,
    dropped: bool,
    done: bool,
}

/// Read `r` to its end on a thread of its own, keeping at most `cap` bytes.
fn drain(mut r: impl Read + Send + 'static, cap: usize) -> Arc<Mutex<Drained>> {
    let shared = Arc::new(Mutex::new(Drained::default()));
    let out = Arc::clone(&shared);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let Ok(mut d) = out.lock() else { return };
            let room = cap.saturating_sub(d.kept.len());
            d.kept.extend_from_slice(&buf[..n.min(room)]);
            d.dropped |= n > room;
        }
        if let Ok(mut d) = out.lock() {
            d.done = true;
        }
    });
    shared
}

/// The `kill` program, by absolute path (`/bin/kill`, else
/// `/usr/bin/kill`), found once.
///
/// The standard library signals only a child itself (`Child::kill`), not
/// its process group, and this crate has no dependency that wraps
/// `kill(2)` (nor may it have `unsafe` code to call it): a group is
/// signalled by the `kill` program. It is run by absolute path, never
/// looked up on the loader's `PATH`, so that no folder on that `PATH`
/// decides what runs in its place.
pub fn kill_program() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["/bin/kill", "/usr/bin/kill"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// Send `SIGKILL` to every process in group `pgid` (nothing for an id
/// that cannot be a child's group: `-1` and `-0` mean other things to
/// `kill`).
fn signal_group(pgid: u32) {
    let Some(kill) = kill_program() else { return };
    if pgid <= 1 {
        return;
    }
    let _ = Command::new(kill)
        .args(["-KILL", "--", &format!("-{pgid}")])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The process group of a [`Leader`]: a handle other threads may hold to
/// kill it. It knows whether the leader has been reaped, and signals the
/// group only while it has not (the group's id is the leader's pid, which
/// may belong to another process once the leader is reaped).
#[derive(Clone, Debug)]
pub struct Group {
    pgid: u32,
    /// Set, under the lock, when the leader is reaped.
    reaped: Arc<Mutex<bool>>,
}

impl Group {
    /// The group's id (its leader's pid).
    pub fn id(&self) -> u32 {
        self.pgid
    }

    /// Kill every process still in the group, unless its leader has been
    /// reaped. Returns whether the group was signalled.
    pub fn kill(&self) -> bool {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if *reaped {
            return false;
        }
        signal_group(self.pgid);
        true
    }
}

/// Whether process `pid` is a zombie (exited, not yet reaped), from
/// `/proc/<pid>/stat`; `None` when that cannot be read.
fn zombie(pid: u32) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S …`: the state follows the last `)`.
    let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
    Some(matches!(state, 'Z' | 'X'))
}

/// A program started as the leader of a process group of its own. It is
/// reaped only by [`Leader::finish`] (or, on a host without `/proc`, by
/// [`Leader::exited`]), which kills its group first; dropping it finishes
/// it.
pub struct Leader {
    child: Child,
    group: Group,
    /// Its exit status, once reaped.
    status: Option<ExitStatus>,
}

impl Leader {
    /// Start `cmd` in a process group of its own.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        let child = cmd.process_group(0).spawn()?;
        let group = Group {
            pgid: child.id(),
            reaped: Arc::new(Mutex::new(false)),
        };
        Ok(Self {
            child,
            group,
            status: None,
        })
    }

    /// Its process id (its group's id too).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its group, for another thread to kill.
    pub fn group(&self) -> Group {
        self.group.clone()
    }

    /// Its standard input, output and error, when piped (once).
    pub fn pipes(&mut self) -> (Option<ChildStdin>, Option<ChildStdout>, Option<ChildStderr>) {
        (
            self.child.stdin.take(),
            self.child.stdout.take(),
            self.child.stderr.take(),
        )
    }

    /// Whether it has exited: seen without reaping it (a zombie in
    /// `/proc`), so that its group can still be killed safely; where
    /// `/proc` cannot tell, by reaping it.
    pub fn exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match zombie(self.id()) {
            Some(z) => z,
            None => {
                let mut reaped = self
                    .group
                    .reaped
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Ok(Some(s)) = self.child.try_wait() {
                    self.status = Some(s);
                    *reaped = true;
                }
                self.status.is_some()
            }
        }
    }

    /// Kill what is in its group (unless it was reaped already), then the
    /// leader itself, and reap it. Its exit status: its own when it had
    /// exited before (a zombie is not changed by the kill), else the
    /// kill's; `None` when it could not be read.
    pub fn finish(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.group.kill();
            let _ = self.child.kill();
            let mut reaped = self
                .group
                .reaped
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.status = self.child.wait().ok();
            *reaped = true;
        }
        self.status
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Run command line `line` as `policy` lets it.
pub fn run(line: &[u8], policy: &CommandPolicy) -> Result<CommandOutcome, CommandError> {
    let mut words = rvm_cap::claim::command_words(line).ok_or(CommandError::NotACommand)?;
    let program = words.next().ok_or(CommandError::NotACommand)?;
    let mut cmd = Command::new(program);
    cmd.args(words)
        .current_dir(&policy.cwd)
        .env_clear()
        .env("PATH", &policy.path)
        .envs(policy.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: the deadline ends everything it started
    // there.
    let mut leader =
        Leader::spawn(&mut cmd).map_err(|e| CommandError::Start(format!("{program}: {e}")))?;
    let (_, out, err) = leader.pipes();
    let streams = [
        out.map(|o| drain(o, policy.output_cap)),
        err.map(|e| drain(e, policy.output_cap)),
    ];
    let deadline = Instant::now() + policy.timeout;
    let ended = loop {
        if leader.exited() {
            // What it left behind in its group goes with it.
            let status = leader.finish().ok_or_else(|| {
                CommandError::Start(format!("{program}: its exit status could not be read"))
            })?;
            break status
                .code()
                .map_or_else(|| Ended::Signal(status.signal().unwrap_or(0)), Ended::Code);
        }
        if Instant::now() >= deadline {
            // The whole group, then the leader itself (reaped).
            leader.finish();
            break Ended::TimedOut;
        }
        std::thread::sleep(POLL);
    };
    // Its pipes close with its group; one held open by a process that left
    // the group is given up on after a grace period (what it sent is kept).
    let grace = Instant::now() + OUTPUT_GRACE;
    let all_done = || {
        streams
            .iter()
            .flatten()
            .all(|s| s.lock().map_or(true, |d| d.done))
    };
    while !all_done() && Instant::now() < grace {
        std::thread::sleep(POLL);
    }
    let take = |s: &Option<Arc<Mutex<Drained>>>| {
        s.as_ref()
            .and_then(|s| {
                s.lock()
                    .ok()
                    .map(|mut d| (std::mem::take(&mut d.kept), d.dropped || !d.done))
            })
            .unwrap_or_default()
    };
    let (mut stdout, out_dropped) = take(&streams[0]);
    let (mut stderr, err_dropped) = take(&streams[1]);
    let (keep_out, keep_err) = super::share(policy.output_cap, stdout.len(), stderr.len());
    let truncated =
        out_dropped || err_dropped || keep_out < stdout.len() || keep_err < stderr.len();
    stdout.truncate(keep_out);
    stderr.truncate(keep_err);
    Ok(CommandOutcome {
        stdout,
        stderr,
        truncated,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tag: &str) -> CommandPolicy {
        let cwd =
            std::env::temp_dir().join(format!("rvm-tool-command-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cwd);
        std::fs::create_dir_all(&cwd).unwrap();
        CommandPolicy {
            cwd,
            path: OsString::from("/usr/bin:/bin"),
            env: vec![(OsString::from("RVM_TOOL_TEST"), OsString::from("yes"))],
            timeout: Duration::from_secs(10),
            output_cap: 4096,
        }
    }

    fn text(o: &CommandOutcome) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn a_command_runs_as_its_words_with_no_shell() {
        let p = policy("words");
        let o = run(b"echo hello   world", &p).unwrap();
        assert_eq!(
            (text(&o), o.ended, o.truncated),
            ("hello world\n".to_string(), Ended::Code(0), false)
        );
        // Shell syntax is bytes of arguments to echo: nothing else runs.
        let o = run(b"echo a ; touch pwned | cat $(id) `id` && touch pwned2", &p).unwrap();
        assert_eq!(
            text(&o),
            "a ; touch pwned | cat $(id) `id` && touch pwned2\n"
        );
        assert!(!p.cwd.join("pwned").exists() && !p.cwd.join("pwned2").exists());
        // Nor are variables or globs expanded.
        std::fs::write(p.cwd.join("file"), b"").unwrap();
        assert_eq!(text(&run(b"echo $HOME * ~", &p).unwrap()), "$HOME * ~\n");
    }

    #[test]
    fn it_runs_where_and_with_what_the_operator_says() {
        let p = policy("env");
        let o = run(b"env", &p).unwrap();
        let mut vars: Vec<String> = text(&o).lines().map(str::to_string).collect();
        vars.sort();
        assert_eq!(
            vars,
            ["PATH=/usr/bin:/bin", "RVM_TOOL_TEST=yes"],
            "nothing inherited"
        );
        let o = run(b"pwd", &p).unwrap();
        assert_eq!(
            text(&o).trim_end(),
            p.cwd.canonicalize().unwrap().to_str().unwrap()
        );
        // Its exit code, and its error output apart from its output.
        let o = run(b"ls no-such-file", &p).unwrap();
        assert!(matches!(o.ended, Ended::Code(c) if c != 0), "{o:?}");
        assert!(
            o.stdout.is_empty() && String::from_utf8_lossy(&o.stderr).contains("no-such-file"),
            "{o:?}"
        );
    }

    #[test]
    fn lines_the_hypervisor_would_not_pass_on_and_missing_programs_are_refused() {
        let p = policy("refused");
        for bad in [
            &b"echo a\nid"[..],
            b"",
            b"   ",
            b"cat ../secret",
            b"cat a/../../b",
            b"echo \0",
            &[b'e', 0xff],
        ] {
            assert_eq!(run(bad, &p), Err(CommandError::NotACommand), "{bad:?}");
        }
        assert!(matches!(
            run(b"no-such-program-rvm", &p),
            Err(CommandError::Start(_))
        ));
    }

    #[test]
    fn a_deadline_kills_the_command_and_output_is_capped() {
        let mut p = policy("limits");
        p.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let o = run(b"sleep 30", &p).unwrap();
        assert_eq!(o.ended, Ended::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // More output than the cap: kept up to it, the rest read and dropped.
        p.timeout = Duration::from_secs(10);
        let o = run(b"head -c 1000000 /dev/zero", &p).unwrap();
        assert_eq!(
            (o.stdout.len(), o.stderr.len(), o.truncated, o.ended),
            (4096, 0, true, Ended::Code(0))
        );
    }

    /// Whether `pid` has ended (gone, or a zombie no one reaps), waiting
    /// up to two seconds for it.
    fn ends(pid: u32) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if zombie(pid).unwrap_or(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn what_a_command_leaves_in_its_group_is_killed_but_not_what_left_it() {
        let mut p = policy("group");
        // A background process in the command's group, and (when `setsid`
        // is there) one that left it for a session of its own.
        let setsid = ["/usr/bin/setsid", "/bin/setsid"]
            .into_iter()
            .find(|s| Path::new(s).is_file());
        let mut script = String::from("sleep 30 & echo $!\n");
        if let Some(s) = setsid {
            script.push_str(&format!(
                "{s} sleep 31 </dev/null >/dev/null 2>&1 & echo $!\n"
            ));
            // Time for it to leave the group before the command ends.
            script.push_str("sleep 0.3\n");
        }
        std::fs::write(p.cwd.join("bg.sh"), script).unwrap();
        p.timeout = Duration::from_secs(10);
        let t = Instant::now();
        let o = run(b"sh bg.sh", &p).unwrap();
        assert_eq!(o.ended, Ended::Code(0), "{o:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let pids: Vec<u32> = text(&o).lines().map(|l| l.parse().unwrap()).collect();
        assert!(ends(pids[0]), "the process left in its group was killed");
        if let Some(&away) = pids.get(1) {
            // Out of reach of a group kill: it outlives the call (the
            // module doc says so); stopped here by hand.
            assert!(!ends_now(away), "a process that left the group survives");
            let _ = Command::new(kill_program().unwrap())
                .args(["-KILL", &away.to_string()])
                .status();
        }
    }

    /// Whether `pid` has ended already.
    fn ends_now(pid: u32) -> bool {
        zombie(pid).unwrap_or(true)
    }

    #[test]
    fn a_group_is_signalled_only_while_its_leader_is_unreaped() {
        // `kill` is run by absolute path, not looked up on PATH.
        assert!(kill_program().is_some_and(Path::is_absolute));
        // Running: its group is signalled (and the leader dies of it).
        let mut l = Leader::spawn(Command::new("sleep").arg("30")).unwrap();
        let g = l.group();
        assert_eq!(g.id(), l.id());
        assert!(g.kill());
        let s = l.finish().unwrap();
        assert_eq!(s.signal(), Some(9), "{s:?}");
        // Reaped: the group's id may be another's now; never signalled.
        assert!(!g.kill());
        // Exited by itself: seen without reaping (a zombie), its own
        // status kept through the kill of its group.
        let mut l = Leader::spawn(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        let g = l.group();
        let t = Instant::now();
        while !l.exited() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(zombie(l.id()), Some(true), "not reaped to learn it exited");
        assert_eq!(l.finish().and_then(|s| s.code()), Some(7));
        assert!(!g.kill());
        // Another thread's handle outlives the leader safely.
        drop(l);
        assert!(!g.kill());
    }

    #[test]
    fn both_streams_share_the_cap() {
        let mut p = policy("share");
        p.output_cap = 100;
        // Error output of a failing command survives a flood on its output:
        // `cat` writes the file, then complains about the missing one.
        std::fs::write(p.cwd.join("big"), vec![b'x'; 10_000]).unwrap();
        let o = run(b"cat big missing", &p).unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(o.stdout.len() + o.stderr.len(), 100);
        assert!(
            o.truncated && matches!(o.ended, Ended::Code(c) if c != 0),
            "{o:?}"
        );
    }
}
