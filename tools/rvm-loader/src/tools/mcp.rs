//! A client of one MCP server over stdio: newline-delimited JSON-RPC 2.0
//! on the server's standard input and output, as the MCP stdio transport
//! says.
//!
//! The server runs as an argument vector (no shell) in its own process
//! group, with an environment of `PATH` and a `HOME` of its own, no
//! inherited descriptors but its pipes, and its error output kept in a
//! file (at most [`STDERR_CAP`] bytes of it). [`McpProcess::start`] makes
//! the `initialize` handshake; [`McpProcess::call`] sends `tools/call` and
//! waits for the response with that call's id, ignoring notifications and
//! answering the server's own requests with a JSON-RPC error (`-32601`;
//! `ping` gets its empty result). Everything is bounded: each wait by the
//! call's deadline, each line the server sends by [`MAX_LINE`] bytes, the
//! lines queued on either side by a few. After any [`McpError`] the
//! process is dropped, which kills its process group (see
//! [`crate::tools::command`] for what a group kill does not reach, and
//! why the group is signalled only while the server is unreaped).

use crate::tools::command::{Group, Leader};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The MCP revision this client speaks.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Longest line a server may send.
pub const MAX_LINE: usize = 1 << 20;
/// Most bytes of a server's error output kept in its file.
pub const STDERR_CAP: u64 = 1 << 20;
/// Lines queued from the server before its output is no longer read, and
/// to the server before a further one is refused.
const QUEUE: usize = 4;
/// The bytes of a server's error output kept for messages.
const STDERR_TAIL: usize = 160;
/// How long an exit code is waited for once a server's output closed.
const EXIT_WAIT: Duration = Duration::from_millis(200);

/// How to start a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Where it runs.
    pub cwd: PathBuf,
    /// Its `PATH`.
    pub path: String,
    /// Its `HOME`.
    pub home: PathBuf,
    /// Where its error output goes (`None`: discarded).
    pub stderr_log: Option<PathBuf>,
}

/// Why a server gave no answer. The process is not to be used again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McpError {
    /// It could not be started.
    Start(String),
    /// The deadline passed.
    TimedOut,
    /// It exited (or closed its output) before answering.
    Exited(String),
    /// It broke the protocol.
    Protocol(String),
}

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpError::Start(e) => write!(f, "could not be started: {e}"),
            McpError::TimedOut => f.write_str("did not answer in time"),
            McpError::Exited(e) => f.write_str(e),
            McpError::Protocol(e) => write!(f, "broke the protocol: {e}"),
        }
    }
}

/// A response to one of the client's requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// Its `result`.
    Result(Value),
    /// Its `error`.
    Error { code: i64, message: String },
}

/// What the server's output reader passes on.
enum Incoming {
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`]: nothing more is read.
    TooLong,
}

/// A started server.
pub struct McpProcess {
    leader: Leader,
    to_server: SyncSender<Vec<u8>>,
    from_server: Receiver<Incoming>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    /// The thread keeping its error output (done when that output closes).
    stderr_kept: std::thread::JoinHandle<()>,
    next_id: u64,
    /// Which server, for messages.
    what: String,
}

/// Read `out` line by line (each at most [`MAX_LINE`] bytes) into `tx`.
fn read_lines(out: ChildStdout, tx: SyncSender<Incoming>) {
    let mut r = BufReader::with_capacity(64 << 10, out);
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok([]) => return,
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE {
            let _ = tx.send(Incoming::TooLong);
            return;
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(complete));
        if complete && tx.send(Incoming::Line(std::mem::take(&mut line))).is_err() {
            return;
        }
    }
}

/// Write each line of `rx` to `input`.
fn write_lines(mut input: ChildStdin, rx: Receiver<Vec<u8>>) {
    for line in rx {
        if input.write_all(&line).and_then(|()| input.flush()).is_err() {
            return;
        }
    }
}

/// Copy `err` into `log` up to [`STDERR_CAP`] bytes, keep its last bytes in
/// `tail`, and read and drop the rest.
fn keep_stderr(mut err: impl Read, mut log: Option<File>, tail: Arc<Mutex<Vec<u8>>>) {
    let mut written = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let n = match err.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if let Some(f) = log.as_mut() {
            let room = usize::try_from(STDERR_CAP.saturating_sub(written))
                .unwrap_or(usize::MAX)
                .min(n);
            if room > 0 && f.write_all(&buf[..room]).is_ok() {
                written += room as u64;
            }
        }
        if let Ok(mut t) = tail.lock() {
            t.extend_from_slice(&buf[..n]);
            let excess = t.len().saturating_sub(STDERR_TAIL);
            t.drain(..excess);
        }
    }
}

/// The id of a response, when `v` is one to request `id`.
fn is_response_to(v: &Value, id: u64) -> bool {
    v.get("id").and_then(Value::as_u64) == Some(id)
        && (v.get("result").is_some() || v.get("error").is_some())
}

impl McpProcess {
    /// Start the server and make the `initialize` handshake by `deadline`.
    pub fn start(launch: &Launch, what: &str, deadline: Instant) -> Result<Self, McpError> {
        let (program, args) = launch
            .argv
            .split_first()
            .ok_or_else(|| McpError::Start("no program".into()))?;
        // A new file each start (whatever is at its path, a link
        // included, is removed first, not written through); discarded when
        // it cannot be made.
        let log = launch.stderr_log.as_ref().and_then(|p| {
            let _ = std::fs::remove_file(p);
            rvm_witness_host::files::create_new(p, 0o600).ok()
        });
        let mut leader = Leader::spawn(
            Command::new(program)
                .args(args)
                .current_dir(&launch.cwd)
                .env_clear()
                .env("PATH", &launch.path)
                .env("HOME", &launch.home)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| McpError::Start(format!("{program}: {e}")))?;
        let (Some(input), Some(output), Some(err)) = leader.pipes() else {
            // Dropped: its group killed, it reaped.
            return Err(McpError::Start(format!("{program}: no pipes")));
        };
        let (to_server, rx) = mpsc::sync_channel(QUEUE);
        let (tx, from_server) = mpsc::sync_channel(QUEUE);
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn(move || write_lines(input, rx));
        std::thread::spawn(move || read_lines(output, tx));
        let tail = Arc::clone(&stderr_tail);
        let stderr_kept = std::thread::spawn(move || keep_stderr(err, log, tail));
        let mut me = Self {
            leader,
            to_server,
            from_server,
            stderr_tail,
            stderr_kept,
            next_id: 1,
            what: what.to_string(),
        };
        let init = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "rvm-loader", "version": env!("CARGO_PKG_VERSION")},
        });
        match me.request("initialize", init, deadline)? {
            Response::Result(Value::Object(_)) => {}
            Response::Result(other) => {
                return Err(McpError::Protocol(format!(
                    "its initialize result is not an object: {}",
                    excerpt(&other)
                )))
            }
            Response::Error { code, message } => {
                return Err(McpError::Protocol(format!(
                    "it refused initialize ({code}): {}",
                    crate::diag::quote(&message)
                )))
            }
        }
        me.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(me)
    }

    /// The server's process id (its process group's id too).
    pub fn pid(&self) -> u32 {
        self.leader.id()
    }

    /// Its process group, for another thread to kill.
    pub fn group(&self) -> Group {
        self.leader.group()
    }

    /// Whether the server still runs (learnt without reaping it).
    pub fn alive(&mut self) -> bool {
        !self.leader.exited()
    }

    /// `tools/call` of `tool` with `arguments`, answered by `deadline`.
    pub fn call(
        &mut self,
        tool: &str,
        arguments: Value,
        deadline: Instant,
    ) -> Result<Response, McpError> {
        self.request(
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
            deadline,
        )
    }

    fn send(&mut self, msg: &Value) -> Result<(), McpError> {
        let mut line = serde_json::to_vec(msg).map_err(|e| McpError::Protocol(e.to_string()))?;
        line.push(b'\n');
        match self.to_server.try_send(line) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err(McpError::Protocol("it does not read its input".into()))
            }
            Err(TrySendError::Disconnected(_)) => Err(self.exited()),
        }
    }

    /// Send request `method` and wait for its response.
    fn request(
        &mut self,
        method: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Response, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.from_server.recv_timeout(left) {
                Ok(Incoming::Line(l)) => l,
                Ok(Incoming::TooLong) => {
                    return Err(McpError::Protocol(format!(
                        "it sent a line longer than {MAX_LINE} bytes"
                    )))
                }
                Err(RecvTimeoutError::Timeout) => return Err(McpError::TimedOut),
                Err(RecvTimeoutError::Disconnected) => return Err(self.exited()),
            };
            // Not JSON (a banner, a blank line): not a message; ignored.
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if is_response_to(&v, id) {
                return Ok(match v.get("error") {
                    Some(e) => Response::Error {
                        code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                        message: match e.get("message") {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        },
                    },
                    None => Response::Result(v.get("result").cloned().unwrap_or(Value::Null)),
                });
            }
            // The server's own request: nothing is offered to it.
            if let (Some(method), Some(rid)) =
                (v.get("method").and_then(Value::as_str), v.get("id"))
            {
                let answer = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": rid, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "method not found"}})
                };
                // A server that does not read its input is answered no
                // further; its own deadline holds.
                let mut line = serde_json::to_vec(&answer).unwrap_or_default();
                line.push(b'\n');
                let _ = self.to_server.try_send(line);
            }
            // Notifications, stale responses: ignored.
        }
    }

    /// What became of a server whose output closed.
    fn exited(&mut self) -> McpError {
        let until = Instant::now() + EXIT_WAIT;
        let status = loop {
            if self.leader.exited() {
                // Reaped (what it left in its group killed first).
                break self.leader.finish();
            }
            if Instant::now() >= until {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let how = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(sig)) => format!("was ended by signal {sig}"),
                _ => "exited".to_string(),
            },
            None => "closed its output".to_string(),
        };
        // Its last error output, once it is all read (bounded: a process it
        // left running may hold it open).
        while status.is_some()
            && !self.stderr_kept.is_finished()
            && Instant::now() < until + EXIT_WAIT
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail);
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        if last.is_empty() {
            McpError::Exited(format!("{how} before answering"))
        } else {
            McpError::Exited(format!(
                "{how} before answering; its last error output: {}",
                crate::diag::quote(last)
            ))
        }
    }
}

impl Drop for McpProcess {
    fn drop(&mut self) {
        // Its group (what it started), then the server itself, reaped.
        self.leader.finish();
    }
}

impl std::fmt::Debug for McpProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "McpProcess({}, pid {})", self.what, self.leader.id())
    }
}

/// A short excerpt of a value for a message.
fn excerpt(v: &Value) -> String {
    crate::diag::quote(&v.to_string())
}
