//! A `Bash(…)` tool call run on the host. The command line is split by the
//! hypervisor's own rule ([`rvm_cap::claim::command_words`]: ASCII
//! whitespace, no quotes, no escapes, no expansion; control characters and
//! `..` path components refused), so the program and arguments that run
//! are the words the claim was matched against: `;`, `|`, `$( )` and
//! backticks are bytes of an argument. It runs with the operator's working
//! directory, an environment holding only `PATH` and what the operator
//! lists, no input, a deadline (the whole process group is killed at it)
//! and a cap on the output kept (the rest is read and dropped, so the
//! program is never blocked on a full pipe). When the program exits,
//! whatever it left running in its process group is killed too: nothing
//! a call started outlives it.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the output of a command that has ended is still waited for
/// (a process outside its group may hold its pipes open).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
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

/// Kill process group `pgid` (a program started with `process_group(0)`
/// has its own pid as its group's id; the id stays the group's while any
/// member lives, so once the program is reaped this reaches only what it
/// left behind).
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
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
        .stderr(Stdio::piped())
        // Its own process group: the deadline ends everything it started.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CommandError::Start(format!("{program}: {e}")))?;
    let streams = [
        child.stdout.take().map(|o| drain(o, policy.output_cap)),
        child.stderr.take().map(|e| drain(e, policy.output_cap)),
    ];
    let deadline = Instant::now() + policy.timeout;
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // What it left behind in its group goes with it.
                kill_group(child.id());
                break status
                    .code()
                    .map_or_else(|| Ended::Signal(status.signal().unwrap_or(0)), Ended::Code);
            }
            Ok(None) if Instant::now() >= deadline => {
                // The whole group, then the child itself (reaped).
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break Ended::TimedOut;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Start(format!("{program}: {e}")));
            }
        }
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
