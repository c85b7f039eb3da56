//! Serving one tool call: [`ToolServer::call`], what the loader runs for
//! each `ToolRequest` the hypervisor sends.
//!
//! The call is checked again on the host (a tool name, and a claim of the
//! partition that allows it, with `rvm_cap::claim`, the hypervisor's own
//! rule), then served by the partition's registrations
//! ([`crate::tools::registry`], read once at each call, so a change
//! applies to the next one). Nothing runs for a call whose answer could
//! not be sent: a capacity too small for the smallest answer of its kind
//! is refused first.
//!
//! * `Bash`: served only for a partition whose operator set a Bash policy
//!   (`rvm-loader tool set <partition>`; else the call fails, saying so).
//!   The command line runs as its words ([`crate::tools::command`]) under
//!   that policy, by default in `tools/<partition>.d/work/`; the response
//!   is
//!   `{"exit_code":n|null,"stdout":"…","stderr":"…","truncated":b,"timed_out":b}`,
//!   its output cut (and `truncated` set) until it fits the capacity;
//! * `mcp__<server>__<tool>` (split at the first `__` after `mcp__`): a
//!   `tools/call` of `<tool>` on the MCP server registered as `<server>`
//!   (run in `tools/<partition>.d/mcp/<server>/`, apart from the
//!   commands' folder), started at its first call and kept running;
//!   started again at the next
//!   call after it exited, crashed, broke the protocol or timed out (a
//!   timeout kills its process group), or after its registration changed.
//!   The response is its `result`; a JSON-RPC error is answered as an MCP
//!   error result (`{"isError":true,"content":[{"type":"text","text":…}]}`),
//!   as is a result larger than the capacity.
//!
//! Calls to different servers run side by side; calls to one server wait
//! for each other, within their own deadline.

use crate::diag::quote;
use crate::model::PartitionName;
use crate::tools::command::{self, CommandOutcome, Ended};
use crate::tools::mcp::{Launch, McpError, McpProcess, Response};
use crate::tools::registry::{self, Registrations};
use rvm_abi::tool::{AnswerStatus, MAX_REQUEST, MAX_RESPONSE};
use rvm_cap::claim::{self, Denial, COMMAND_TOOL};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The prefix of an MCP tool's name.
pub const MCP_PREFIX: &str = "mcp__";

/// The host's answer to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: AnswerStatus,
    /// At most the call's capacity (and [`MAX_RESPONSE`]).
    pub response: Vec<u8>,
    /// One line for the loader's log: what ran and how it ended, or why
    /// it did not run.
    pub note: String,
}

impl Answer {
    fn failed(note: impl Into<String>) -> Self {
        Self {
            status: AnswerStatus::Failed,
            response: Vec::new(),
            note: one_line(note.into()),
        }
    }
}

/// `s` on one line.
fn one_line(s: String) -> String {
    if s.contains(['\n', '\r']) {
        s.split(['\n', '\r'])
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        s
    }
}

/// One registered server of one partition: its process when started, and
/// whether a call is using it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    free: Condvar,
}

#[derive(Default)]
struct SlotState {
    busy: bool,
    /// The process between calls, and what it was started as.
    idle: Option<(McpProcess, Launch)>,
    /// The process's group while it lives (during a call too), for
    /// [`ToolServer::shutdown`] (signalled only while the process is
    /// unreaped).
    group: Option<command::Group>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A slot held by one call: given back (with its process, unless the
/// servers were shut down meanwhile) when dropped.
struct Held<'a> {
    slot: &'a Slot,
    process: Option<(McpProcess, Launch)>,
    epoch: u64,
    current: &'a AtomicU64,
}

impl Held<'_> {
    /// Keep `p` as the slot's process.
    fn set(&mut self, p: McpProcess, launch: Launch) {
        lock(&self.slot.state).group = Some(p.group());
        self.process = Some((p, launch));
    }

    /// Stop the slot's process (its group forgotten first, under the lock).
    fn discard(&mut self) {
        let mut st = lock(&self.slot.state);
        st.group = None;
        drop(self.process.take());
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.epoch != self.current.load(Ordering::SeqCst) {
            self.discard();
        }
        let mut st = lock(&self.slot.state);
        st.group = self.process.as_ref().map(|(p, _)| p.group());
        st.idle = self.process.take();
        st.busy = false;
        drop(st);
        self.slot.free.notify_one();
    }
}

/// Serves the tool calls of every partition of one `RVM_HOME`. `Send +
/// Sync`: call it from any number of threads.
pub struct ToolServer {
    root: PathBuf,
    /// By (partition, server).
    servers: Mutex<HashMap<(String, String), Arc<Slot>>>,
    /// Counts [`ToolServer::shutdown`]s: a process started before one is
    /// not kept after it.
    epoch: AtomicU64,
}

impl ToolServer {
    /// A server of `home`'s registrations. Starts nothing.
    pub fn new(home: &crate::home::Home) -> Self {
        Self {
            root: home.root().to_path_buf(),
            servers: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// Serve one call of partition `partition`, whose claims (its
    /// capability table's resource patterns) are `claims`: tool `name` with
    /// `request`, answered in at most `capacity` bytes (and
    /// [`MAX_RESPONSE`]).
    pub fn call(
        &self,
        partition: &str,
        claims: &[String],
        name: &[u8],
        request: &[u8],
        capacity: usize,
    ) -> Answer {
        let limit = capacity.min(MAX_RESPONSE);
        let Ok(partition) = PartitionName::new(partition) else {
            return Answer::failed(format!(
                "partition {} is not a partition name",
                quote(partition)
            ));
        };
        let Some(tool) = std::str::from_utf8(name)
            .ok()
            .filter(|t| claim::valid_tool(t))
        else {
            return Answer::failed(format!(
                "{partition}: {} is not a tool name (1 to {} bytes of A-Z a-z 0-9 _ - . /)",
                quote(&String::from_utf8_lossy(name)),
                claim::MAX_TOOL_NAME
            ));
        };
        if request.len() > MAX_REQUEST {
            return Answer::failed(format!(
                "{partition}: {tool}: a request of {} bytes (at most {MAX_REQUEST})",
                request.len()
            ));
        }
        if let Err(why) = allowed(&partition, claims, tool, request) {
            return Answer::failed(format!(
                "{partition}: {tool} refused by the host's claim check: {why}"
            ));
        }
        enum Kind<'t> {
            Bash,
            Mcp { server: &'t str, tool: &'t str },
        }
        let kind = if tool == COMMAND_TOOL {
            Kind::Bash
        } else {
            let Some(rest) = tool.strip_prefix(MCP_PREFIX) else {
                return Answer::failed(format!(
                    "{partition}: no tool {tool} is served by this host (it serves Bash and mcp__<server>__<tool>)"
                ));
            };
            match rest.split_once("__") {
                Some((server, t))
                    if registry::check_server_name(server).is_ok() && !t.is_empty() =>
                {
                    Kind::Mcp { server, tool: t }
                }
                _ => return Answer::failed(format!(
                    "{partition}: {tool} is not mcp__<server>__<tool> with a server name (letters, digits, - and _, no __) and a tool"
                )),
            }
        };
        // The registrations, read once for this call (they may change
        // between calls, never within one).
        let reg = match registry::load(&self.root, &partition) {
            Ok(r) => r,
            Err(e) => {
                return Answer::failed(format!("{partition}: {tool}: its registrations: {e}"))
            }
        };
        match kind {
            Kind::Bash => self.bash(&partition, reg.as_ref(), request, capacity, limit),
            Kind::Mcp { server, tool: t } => self.mcp(
                &partition,
                reg.as_ref(),
                tool,
                server,
                t,
                request,
                capacity,
                limit,
            ),
        }
    }

    /// Stop every started server (at the end of a run): idle ones now, and
    /// those in a call too (that call fails). A later call starts its
    /// server again.
    pub fn shutdown(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let slots: Vec<Arc<Slot>> = lock(&self.servers).values().cloned().collect();
        for slot in slots {
            let mut st = lock(&slot.state);
            match st.idle.take() {
                Some(p) => drop(p),
                None => {
                    if let Some(group) = &st.group {
                        group.kill();
                    }
                }
            }
            st.group = None;
        }
    }

    /// Stop the process of a server no longer registered (if it is not in
    /// a call: then it stops when that call ends).
    fn forget(&self, partition: &PartitionName, server: &str) {
        let Some(slot) = lock(&self.servers).remove(&(partition.to_string(), server.to_string()))
        else {
            return;
        };
        let mut st = lock(&slot.state);
        if let Some(p) = st.idle.take() {
            st.group = None;
            drop(p);
        }
    }

    fn slot(&self, partition: &PartitionName, server: &str) -> Arc<Slot> {
        let mut all = lock(&self.servers);
        Arc::clone(
            all.entry((partition.to_string(), server.to_string()))
                .or_default(),
        )
    }

    /// Wait (until `deadline`) for the slot to be free and take it.
    fn acquire<'a>(&'a self, slot: &'a Slot, deadline: Instant) -> Option<Held<'a>> {
        let mut st = lock(&slot.state);
        while st.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = slot
                .free
                .wait_timeout(st, left)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        st.busy = true;
        let process = st.idle.take();
        Some(Held {
            slot,
            process,
            epoch: self.epoch.load(Ordering::SeqCst),
            current: &self.epoch,
        })
    }

    fn bash(
        &self,
        partition: &PartitionName,
        reg: Option<&Registrations>,
        request: &[u8],
        capacity: usize,
        limit: usize,
    ) -> Answer {
        let line = quote(&String::from_utf8_lossy(request));
        // Served only when the operator chose to serve commands.
        let Some(bash) = reg.and_then(|r| r.bash.as_ref()) else {
            return Answer::failed(format!(
                "{partition}: Bash {line}: not run: commands are not served for partition {partition} \
                 ({}); `rvm-loader tool set {partition}` serves them",
                if reg.is_some() {
                    "its registrations set no Bash policy"
                } else {
                    "it has no tool registrations"
                }
            ));
        };
        // Nothing runs whose answer could not be sent.
        let floor = bash_floor();
        if limit < floor {
            return Answer::failed(format!(
                "{partition}: Bash {line}: not run: the agent's response buffer of {capacity} bytes cannot hold even an empty answer ({floor} bytes)"
            ));
        }
        let policy = if bash.cwd.is_some() {
            bash.command_policy(&registry::bash_dir(&self.root, partition))
        } else {
            match registry::ensure_bash_dir(&self.root, partition) {
                Ok(d) => bash.command_policy(&d),
                Err(e) => return Answer::failed(format!("{partition}: Bash {line}: {e}")),
            }
        };
        let started = Instant::now();
        let o = match command::run(request, &policy) {
            Ok(o) => o,
            Err(e) => return Answer::failed(format!("{partition}: Bash {line}: {e}")),
        };
        let took = started.elapsed();
        let how = match o.ended {
            Ended::Code(c) => format!("exit {c}"),
            Ended::Signal(s) => format!("ended by signal {s}"),
            Ended::TimedOut => format!(
                "timed out after {} ms (its process group killed)",
                policy.timeout.as_millis()
            ),
        };
        let status = if o.ended == Ended::TimedOut {
            AnswerStatus::TimedOut
        } else {
            AnswerStatus::Ran
        };
        let sizes = format!(
            "stdout {} bytes, stderr {} bytes{}",
            o.stdout.len(),
            o.stderr.len(),
            if o.truncated { ", output capped" } else { "" }
        );
        match bash_response(&o, limit) {
            Some((response, cut)) => Answer {
                status,
                note: format!(
                    "{partition}: Bash {line}: {how} in {} ms ({sizes}){}",
                    took.as_millis(),
                    if cut { format!(", cut to fit {limit} bytes") } else { String::new() }
                ),
                response,
            },
            None => Answer::failed(format!(
                "{partition}: Bash {line}: {how} in {} ms, but no answer fits the call's {limit} bytes",
                took.as_millis()
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mcp(
        &self,
        partition: &PartitionName,
        reg: Option<&Registrations>,
        name: &str,
        server: &str,
        tool: &str,
        request: &[u8],
        capacity: usize,
        limit: usize,
    ) -> Answer {
        let arguments = match serde_json::from_slice::<Value>(request) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Answer::failed(format!(
                    "{partition}: {name}: the request is not a JSON object (an MCP tool's arguments are one; {{}} for none)"
                ))
            }
        };
        // Nothing is called whose answer (at the least an error result)
        // could not be sent.
        let floor = error_floor();
        if limit < floor {
            return Answer::failed(format!(
                "{partition}: {name}: not called: the agent's response buffer of {capacity} bytes cannot hold even an empty error result ({floor} bytes)"
            ));
        }
        let Some(spec) = reg.and_then(|r| r.mcp_servers.get(server)) else {
            self.forget(partition, server);
            return Answer::failed(format!(
                "{partition}: {name}: no MCP server {server} is registered for partition {partition} \
                 (rvm-loader tool add {partition} mcp {server} -- <program> <arguments…>)"
            ));
        };
        let timeout = Duration::from_millis(spec.timeout_ms);
        let deadline = Instant::now() + timeout;
        let dirs = match registry::ensure_mcp_dirs(&self.root, partition, server) {
            Ok(d) => d,
            Err(e) => return Answer::failed(format!("{partition}: {name}: {e}")),
        };
        let launch = Launch {
            argv: spec.argv.clone(),
            cwd: dirs.cwd,
            path: registry::DEFAULT_PATH.to_string(),
            home: dirs.home,
            stderr_log: Some(dirs.stderr_log),
        };
        let slot = self.slot(partition, server);
        let Some(mut held) = self.acquire(&slot, deadline) else {
            return Answer {
                status: AnswerStatus::TimedOut,
                response: Vec::new(),
                note: format!(
                    "{partition}: {name}: server {server} was busy with other calls for all of its {} ms",
                    timeout.as_millis()
                ),
            };
        };
        // Started as registered now and still running, or started again.
        let stale = held
            .process
            .as_mut()
            .is_some_and(|(p, l)| *l != launch || !p.alive());
        if stale {
            held.discard();
        }
        let started = held.process.is_none();
        if started {
            match McpProcess::start(&launch, &format!("{partition}/{server}"), deadline) {
                Ok(p) => held.set(p, launch.clone()),
                Err(e) => return mcp_error(partition, name, server, &e, timeout, true),
            }
        }
        let Some((process, _)) = held.process.as_mut() else {
            return Answer::failed(format!(
                "{partition}: {name}: server {server} is not running"
            ));
        };
        let pid = process.pid();
        let outcome = process.call(tool, arguments, deadline);
        let whose = format!(
            "server {server} (pid {pid}{})",
            if started {
                ", started for this call"
            } else {
                ""
            }
        );
        match outcome {
            Ok(Response::Result(result)) => {
                let bytes = serde_json::to_vec(&result).unwrap_or_default();
                if bytes.len() <= limit {
                    let error = result.get("isError").and_then(Value::as_bool) == Some(true);
                    return Answer {
                        status: AnswerStatus::Ran,
                        note: format!(
                            "{partition}: {name}: {whose} answered {} bytes{}",
                            bytes.len(),
                            if error { " (an error result)" } else { "" }
                        ),
                        response: bytes,
                    };
                }
                let text = format!(
                    "the result of {name} was {} bytes, more than the {limit} bytes this call can take",
                    bytes.len()
                );
                match error_result(&text, limit) {
                    Some(response) => Answer {
                        status: AnswerStatus::Ran,
                        note: format!("{partition}: {name}: {whose} answered {} bytes, more than the call's {limit}: answered with an error result", bytes.len()),
                        response,
                    },
                    None => Answer::failed(format!("{partition}: {name}: {whose} answered {} bytes; not even an error result fits the call's {limit}", bytes.len())),
                }
            }
            Ok(Response::Error { code, message }) => match error_result(&message, limit) {
                Some(response) => Answer {
                    status: AnswerStatus::Ran,
                    note: format!("{partition}: {name}: {whose} answered error {code}: {}", quote(&message)),
                    response,
                },
                None => Answer::failed(format!(
                    "{partition}: {name}: {whose} answered error {code}; no error result fits the call's {limit} bytes"
                )),
            },
            Err(e) => {
                held.discard();
                mcp_error(partition, name, server, &e, timeout, started)
            }
        }
    }
}

impl Drop for ToolServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The answer to a call whose server gave none.
fn mcp_error(
    partition: &PartitionName,
    name: &str,
    server: &str,
    e: &McpError,
    timeout: Duration,
    starting: bool,
) -> Answer {
    let again = "it starts again at the next call";
    match e {
        McpError::TimedOut => Answer {
            status: AnswerStatus::TimedOut,
            response: Vec::new(),
            note: format!(
                "{partition}: {name}: server {server} did not answer within {} ms{}: its process group was killed; {again}",
                timeout.as_millis(),
                if starting { " (its start included)" } else { "" }
            ),
        },
        e => Answer::failed(format!(
            "{partition}: {name}: server {server} {e}{}; {again}",
            if starting { " (at its start)" } else { "" }
        )),
    }
}

/// Whether a claim of `claims` allows `tool` with `request`; else why not.
fn allowed(
    partition: &PartitionName,
    claims: &[String],
    tool: &str,
    request: &[u8],
) -> Result<(), String> {
    let mut bad_command = false;
    for c in claims {
        let Ok(parsed) = claim::parse(c) else {
            continue;
        };
        match parsed.allows(tool, request) {
            Ok(()) => return Ok(()),
            Err(Denial::BadCommand) => bad_command = true,
            Err(_) => {}
        }
    }
    if bad_command {
        return Err("the command line is not one the hypervisor passes on (not UTF-8, a control character, or a `..` path component)".into());
    }
    let wanted = if tool == COMMAND_TOOL {
        format!("Bash({})", String::from_utf8_lossy(request).trim())
    } else {
        tool.to_string()
    };
    Err(format!(
        "no claim of partition {partition} allows {tool} {} (it would need a claim such as {})",
        quote(&String::from_utf8_lossy(request)),
        quote(&wanted)
    ))
}

/// Bytes `c` takes inside a JSON string as `serde_json` writes it.
fn escaped(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn escaped_len(s: &str) -> usize {
    s.chars().map(escaped).sum()
}

/// The longest prefix of `s` that takes at most `room` bytes in a JSON
/// string.
fn prefix_within(s: &str, room: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += escaped(c);
        if used > room {
            return &s[..i];
        }
    }
    s
}

/// The size of the largest answer [`bash_response`] may have to make for
/// an empty output: no exit code (a signal, a timeout) and `truncated`
/// (an answer cut to fit). With at least this many bytes every command's
/// answer fits; with fewer, some may not, so nothing is run.
pub fn bash_floor() -> usize {
    let empty = |exit_code, truncated, timed_out| {
        serde_json::to_vec(&BashResponse {
            exit_code,
            stdout: "",
            stderr: "",
            truncated,
            timed_out,
        })
        .map_or(usize::MAX, |v| v.len())
    };
    // What `bash_response` falls back to: the cut answer (`truncated`),
    // for each way a command can end (an exit code is at most 3 digits).
    [
        empty(Some(255), true, false),
        empty(None, true, false),
        empty(None, true, true),
    ]
    .into_iter()
    .max()
    .unwrap_or(usize::MAX)
}

/// The size of the smallest MCP error result (an empty text): less room
/// than that and not even a server's failure can be answered.
pub fn error_floor() -> usize {
    error_result("", MAX_RESPONSE).map_or(usize::MAX, |v| v.len())
}

/// A `Bash` call's response, in its field order.
#[derive(serde::Serialize)]
struct BashResponse<'a> {
    exit_code: Option<i32>,
    stdout: &'a str,
    stderr: &'a str,
    truncated: bool,
    timed_out: bool,
}

/// `o` as a `Bash` response of at most `limit` bytes (output cut and
/// `truncated` set when it would not fit; the cut is the second value);
/// `None` when not even an empty one fits.
fn bash_response(o: &CommandOutcome, limit: usize) -> Option<(Vec<u8>, bool)> {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let make = |stdout: &str, stderr: &str, truncated: bool| {
        serde_json::to_vec(&BashResponse {
            exit_code: match o.ended {
                Ended::Code(c) => Some(c),
                Ended::Signal(_) | Ended::TimedOut => None,
            },
            stdout,
            stderr,
            truncated,
            timed_out: o.ended == Ended::TimedOut,
        })
        .ok()
    };
    let whole = make(&out, &err, o.truncated)?;
    if whole.len() <= limit {
        return Some((whole, false));
    }
    let room = limit.checked_sub(make("", "", true)?.len())?;
    let (a, b) = crate::tools::share(room, escaped_len(&out), escaped_len(&err));
    let cut = make(prefix_within(&out, a), prefix_within(&err, b), true)?;
    (cut.len() <= limit).then_some((cut, true))
}

/// An MCP error result saying `text` (cut to fit), in at most `limit`
/// bytes; `None` when not even an empty one fits.
fn error_result(text: &str, limit: usize) -> Option<Vec<u8>> {
    let make = |t: &str| {
        serde_json::to_vec(
            &serde_json::json!({"isError": true, "content": [{"type": "text", "text": t}]}),
        )
        .ok()
    };
    let room = limit.checked_sub(make("")?.len())?;
    let bytes = make(prefix_within(text, room))?;
    (bytes.len() <= limit).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;
    use std::sync::atomic::AtomicU32;

    /// A home under the temporary folder, removed when dropped.
    struct TmpHome(Home);

    impl TmpHome {
        fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "rvm-loader-tools-serve-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            Self(Home::new(p))
        }
    }

    impl Drop for TmpHome {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.root());
        }
    }

    fn claims(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    /// Serve partition `tenant`'s commands under `change`d defaults.
    fn serve_bash(h: &TmpHome, change: impl FnOnce(&mut registry::BashPolicy)) {
        let name = PartitionName::new("tenant").unwrap();
        registry::update(h.0.root(), &name, |r| {
            change(r.bash.get_or_insert_with(Default::default));
            Ok(())
        })
        .unwrap();
    }

    fn json(a: &Answer) -> Value {
        serde_json::from_slice(&a.response)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&a.response)))
    }

    #[test]
    fn the_escaped_length_is_serde_json_s() {
        let mut chars: Vec<char> = (0u8..0x80).map(char::from).collect();
        chars.extend(['é', '€', '𝄞', '\u{7f}', '\u{2028}', '\u{fffd}']);
        for c in chars {
            let s = c.to_string();
            assert_eq!(
                escaped_len(&s),
                serde_json::to_string(&s).unwrap().len() - 2,
                "{c:?}"
            );
        }
        assert_eq!(prefix_within("a\nbé", 3), "a\n");
        assert_eq!(prefix_within("a\nbé", 4), "a\nb");
        assert_eq!(prefix_within("a\nbé", 6), "a\nbé");
    }

    #[test]
    fn a_command_s_answer_fits_any_capacity_it_can() {
        let o = CommandOutcome {
            stdout: (0..3000u32).flat_map(|i| i.to_le_bytes()).collect(),
            stderr: "error: \"quoted\"\n\u{1}é".repeat(50).into_bytes(),
            truncated: false,
            ended: Ended::Code(3),
        };
        assert_eq!(bash_response(&o, 73), None, "nothing fits 73 bytes");
        let mut fitted = 0;
        for limit in (60..400).chain([1000, 5000, MAX_RESPONSE]) {
            let Some((bytes, cut)) = bash_response(&o, limit) else {
                continue;
            };
            fitted += 1;
            assert!(bytes.len() <= limit, "{limit}: {}", bytes.len());
            assert!(cut);
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                (
                    v["exit_code"].as_i64(),
                    v["truncated"].as_bool(),
                    v["timed_out"].as_bool()
                ),
                (Some(3), Some(true), Some(false))
            );
            let (out, err) = (v["stdout"].as_str().unwrap(), v["stderr"].as_str().unwrap());
            assert!(String::from_utf8_lossy(&o.stdout).starts_with(out));
            assert!(String::from_utf8_lossy(&o.stderr).starts_with(err));
            // Nearly all of the room is used (an escaped character takes
            // up to 6 bytes, so each output may leave 5 unused).
            assert!(bytes.len() + 10 >= limit, "{limit}: {}", bytes.len());
        }
        assert!(fitted > 300);
        // Small enough: whole, not marked.
        let small = CommandOutcome {
            stdout: b"hi\n".to_vec(),
            stderr: vec![],
            truncated: false,
            ended: Ended::TimedOut,
        };
        let (bytes, cut) = bash_response(&small, 200).unwrap();
        assert!(!cut);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"exit_code":null,"stdout":"hi\n","stderr":"","truncated":false,"timed_out":true}"#
        );
    }

    #[test]
    fn commands_run_as_inert_words_and_answer_within_the_capacity() {
        let h = TmpHome::new("bash");
        serve_bash(&h, |_| {});
        let tools = ToolServer::new(&h.0);
        let c = claims(&["Bash(echo*)", "Bash(seq*)", "Bash(pwd)"]);
        // Shell syntax arrives as arguments of echo (found through PATH).
        let a = tools.call(
            "tenant",
            &c,
            b"Bash",
            b"echo a; rm -rf / $(id) `id` | cat",
            4096,
        );
        assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
        let v = json(&a);
        assert_eq!(v["stdout"], "a; rm -rf / $(id) `id` | cat\n");
        assert_eq!(
            (v["exit_code"].as_i64(), v["truncated"].as_bool()),
            (Some(0), Some(false))
        );
        assert!(
            a.note.contains("exit 0") && !a.note.contains('\n'),
            "{}",
            a.note
        );
        // The default folder was made, and the command ran there: the
        // commands' own, not the partition's folder the servers' are in.
        let a = tools.call("tenant", &c, b"Bash", b"pwd", 4096);
        let work = h.0.root().join("tools/tenant.d/work");
        assert!(work.is_dir());
        assert_eq!(
            json(&a)["stdout"].as_str().unwrap().trim_end(),
            work.canonicalize().unwrap().to_str().unwrap()
        );
        // A tiny capacity: cut to fit.
        let a = tools.call("tenant", &c, b"Bash", b"seq 1 5000", 120);
        assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
        assert!(a.response.len() <= 120, "{}", a.response.len());
        let v = json(&a);
        assert_eq!(v["truncated"], true);
        assert!(v["stdout"].as_str().unwrap().starts_with("1\n2\n"), "{v}");
        assert!(a.note.contains("cut to fit 120 bytes"), "{}", a.note);
        // The policy's cap cuts first (8 KiB by default), then the ABI's.
        let a = tools.call("tenant", &c, b"Bash", b"seq 1 100000", 1 << 20);
        assert!(
            a.response.len() <= MAX_RESPONSE && json(&a)["truncated"] == true,
            "{}",
            a.note
        );
        // Too small for any answer: refused before it runs.
        let a = tools.call("tenant", &c, b"Bash", b"echo x", 10);
        assert_eq!(a.status, AnswerStatus::Failed);
        assert!(
            a.note.contains(
                "the agent's response buffer of 10 bytes cannot hold even an empty answer"
            ),
            "{}",
            a.note
        );
    }

    #[test]
    fn a_command_past_its_deadline_answers_timed_out_with_its_response() {
        let h = TmpHome::new("deadline");
        serve_bash(&h, |b| b.timeout_ms = 200);
        let tools = ToolServer::new(&h.0);
        let t = Instant::now();
        let a = tools.call(
            "tenant",
            &claims(&["Bash(sleep*)"]),
            b"Bash",
            b"sleep 10",
            4096,
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(a.status, AnswerStatus::TimedOut, "{}", a.note);
        let v = json(&a);
        assert_eq!(
            (v["exit_code"].clone(), v["timed_out"].clone()),
            (Value::Null, Value::Bool(true))
        );
        assert!(a.note.contains("timed out after 200 ms"), "{}", a.note);
    }

    #[test]
    fn every_command_s_answer_fits_the_floor_and_not_below_it() {
        let floor = bash_floor();
        assert!(floor > 60 && floor < 100, "{floor}");
        let big = CommandOutcome {
            stdout: vec![b'x'; 500],
            stderr: vec![b'"'; 500],
            truncated: true,
            ended: Ended::Code(0),
        };
        for ended in [
            Ended::Code(0),
            Ended::Code(255),
            Ended::Signal(9),
            Ended::TimedOut,
        ] {
            for o in [
                CommandOutcome {
                    ended,
                    ..big.clone()
                },
                CommandOutcome {
                    ended,
                    stdout: vec![],
                    stderr: vec![],
                    truncated: false,
                },
            ] {
                let (bytes, _) = bash_response(&o, floor).unwrap_or_else(|| panic!("{o:?}"));
                assert!(bytes.len() <= floor);
            }
        }
        // One byte less: a command killed by a signal has no answer.
        let killed = CommandOutcome {
            ended: Ended::Signal(9),
            ..big
        };
        assert_eq!(bash_response(&killed, floor - 1), None);
        // The smallest error result an MCP call can be answered with.
        assert_eq!(
            error_result("", error_floor()).map(|r| r.len()),
            Some(error_floor())
        );
        assert_eq!(error_result("", error_floor() - 1), None);
    }

    #[test]
    fn commands_are_served_only_once_the_operator_set_a_policy() {
        let h = TmpHome::new("optin");
        let name = PartitionName::new("tenant").unwrap();
        let tools = ToolServer::new(&h.0);
        let marker = h.0.root().with_extension("ran");
        let _ = std::fs::remove_file(&marker);
        let touch = format!("touch {}", marker.display());
        let c = claims(&["Bash(touch*)"]);
        let refused = |a: &Answer, why: &str| {
            assert_eq!(a.status, AnswerStatus::Failed, "{}", a.note);
            assert!(
                a.note
                    .contains("not run: commands are not served for partition tenant")
                    && a.note.contains(why)
                    && a.note.contains("`rvm-loader tool set tenant` serves them"),
                "{}",
                a.note
            );
            assert!(a.response.is_empty());
            assert!(!marker.exists(), "the command ran");
        };
        // Nothing registered.
        refused(
            &tools.call("tenant", &c, b"Bash", touch.as_bytes(), 4096),
            "it has no tool registrations",
        );
        assert!(!h.0.root().join("tools").exists(), "nothing made");
        // A file made by registering a server alone.
        registry::update(h.0.root(), &name, |r| {
            r.mcp_servers.insert(
                "demo".into(),
                registry::McpServer {
                    argv: vec!["x".into()],
                    timeout_ms: 1000,
                },
            );
            Ok(())
        })
        .unwrap();
        refused(
            &tools.call("tenant", &c, b"Bash", touch.as_bytes(), 4096),
            "its registrations set no Bash policy",
        );
        // The operator's `tool set`: served.
        serve_bash(&h, |_| {});
        let a = tools.call("tenant", &c, b"Bash", touch.as_bytes(), 4096);
        assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
        assert!(marker.exists());
        std::fs::remove_file(&marker).unwrap();
        // `tool set --off`: no longer.
        registry::update(h.0.root(), &name, |r| {
            r.bash = None;
            Ok(())
        })
        .unwrap();
        refused(
            &tools.call("tenant", &c, b"Bash", touch.as_bytes(), 4096),
            "its registrations set no Bash policy",
        );
    }

    #[test]
    fn a_command_whose_answer_could_not_be_sent_is_not_run() {
        let h = TmpHome::new("tiny");
        serve_bash(&h, |_| {});
        let tools = ToolServer::new(&h.0);
        let marker = h.0.root().with_extension("ran");
        let _ = std::fs::remove_file(&marker);
        let touch = format!("touch {}", marker.display());
        let c = claims(&["Bash(touch*)"]);
        let floor = bash_floor();
        for capacity in [0, 1, 40, floor - 1] {
            let a = tools.call("tenant", &c, b"Bash", touch.as_bytes(), capacity);
            assert_eq!(a.status, AnswerStatus::Failed, "{}", a.note);
            assert!(
                a.note.contains(&format!(
                    "not run: the agent's response buffer of {capacity} bytes cannot hold even an empty answer ({floor} bytes)"
                )),
                "{}",
                a.note
            );
            assert!(!marker.exists(), "{capacity}: the command ran");
        }
        // At the floor: it runs and its answer fits.
        let a = tools.call("tenant", &c, b"Bash", touch.as_bytes(), floor);
        assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
        assert!(a.response.len() <= floor && marker.exists());
        std::fs::remove_file(&marker).unwrap();
    }

    #[test]
    fn the_host_checks_the_claims_again() {
        let h = TmpHome::new("claims");
        let tools = ToolServer::new(&h.0);
        let c = claims(&["Bash(echo*)", "mcp__demo__*", "not a claim("]);
        let a = tools.call("tenant", &c, b"Bash", b"rm -rf /tmp/nothing", 4096);
        assert_eq!(a.status, AnswerStatus::Failed);
        assert!(
            a.note
                .contains("no claim of partition tenant allows Bash \"rm -rf /tmp/nothing\"")
                && a.note.contains("Bash(rm -rf /tmp/nothing)"),
            "{}",
            a.note
        );
        let a = tools.call("tenant", &c, b"mcp__other__x", b"{}", 4096);
        assert_eq!(a.status, AnswerStatus::Failed);
        assert!(
            a.note.contains("allows mcp__other__x") && a.note.contains("\"mcp__other__x\""),
            "{}",
            a.note
        );
        // A line the hypervisor would not pass on, whatever the claim.
        let any = claims(&["*", "Bash"]);
        let a = tools.call("tenant", &any, b"Bash", b"echo a\nid", 4096);
        assert_eq!(a.status, AnswerStatus::Failed);
        assert!(
            a.note.contains("control character") && !a.note.contains('\n'),
            "{}",
            a.note
        );
        // No claims at all.
        assert_eq!(
            tools.call("tenant", &[], b"Bash", b"echo a", 4096).status,
            AnswerStatus::Failed
        );
        // Not tool names.
        for bad in [&b""[..], b"Bash ", b"a\nb", &[0xff, b'a'], &[b'a'; 129]] {
            let a = tools.call("tenant", &claims(&["*"]), bad, b"", 4096);
            assert_eq!(a.status, AnswerStatus::Failed);
            assert!(
                a.note.contains("is not a tool name") && !a.note.contains('\n'),
                "{}",
                a.note
            );
        }
        // Nothing ran: no folder was made.
        assert!(!h.0.root().join("tools").exists());
    }

    #[test]
    fn other_tools_and_unregistered_servers_fail_saying_why() {
        let h = TmpHome::new("unknown");
        let tools = ToolServer::new(&h.0);
        let any = claims(&["*"]);
        let a = tools.call("tenant", &any, b"Read", b"/etc/passwd", 4096);
        assert_eq!(a.status, AnswerStatus::Failed);
        assert!(a.note.contains("no tool Read is served"), "{}", a.note);
        let a = tools.call("tenant", &any, b"mcp__nosuch__echo", b"{}", 4096);
        assert_eq!(a.status, AnswerStatus::Failed);
        assert!(
            a.note.contains("rvm-loader tool add tenant mcp nosuch -- "),
            "{}",
            a.note
        );
        for bad in ["[]", "1", "", "{", "\"x\""] {
            let a = tools.call("tenant", &any, b"mcp__nosuch__echo", bad.as_bytes(), 4096);
            assert!(a.note.contains("not a JSON object"), "{bad}: {}", a.note);
        }
        for bad in [&b"mcp___a__x"[..], b"mcp__a__", b"mcp__a", b"mcp____x"] {
            let a = tools.call("tenant", &any, bad, b"{}", 4096);
            assert_eq!(a.status, AnswerStatus::Failed);
            assert!(
                a.note.contains("is not mcp__<server>__<tool>"),
                "{}",
                a.note
            );
        }
        assert!(tools
            .call("../x", &any, b"Bash", b"echo", 4096)
            .note
            .contains("not a partition name"));
    }

    #[test]
    fn error_results_fit() {
        let r = error_result("boom \"x\"", 100).unwrap();
        let v: Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"isError": true, "content": [{"type": "text", "text": "boom \"x\""}]})
        );
        let long = "x".repeat(1000);
        let r = error_result(&long, 100).unwrap();
        assert_eq!(r.len(), 100);
        assert_eq!(error_result(&long, 20), None);
    }

    #[test]
    fn a_tool_server_is_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<ToolServer>();
        both::<Answer>();
    }
}
