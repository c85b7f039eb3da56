//! Tool calls: an agent names a tool and sends it a request; the host runs
//! it and answers ([`Hypercall::ToolCall`](crate::Hypercall::ToolCall),
//! import [`tool_call`](crate::imports::HostImport::ToolCall)).
//!
//! A tool's name is what the partition's claims speak of (the `resource`
//! of its `Resource` capabilities, with the `@metaharness/host-rvm`
//! adapter's claim semantics, `rvm_cap::claim`):
//!
//! * `Bash`: the request is a command line. The host splits it into words
//!   without a shell (no expansion, no `;`, `|` or `$( )`) and runs the
//!   first word as the program; the response is a JSON object
//!   `{"exit_code": n, "stdout": "…", "stderr": "…", "truncated": bool,
//!   "timed_out": bool}` (`exit_code` is null when the command was killed).
//! * `mcp__<server>__<tool>`: the request is the tool's JSON arguments; the
//!   host calls `tools/call` on the MCP server the operator registered for
//!   the partition under `<server>`; the response is the JSON result.
//!
//! The request travels to the host in a `ToolRequest` frame and the answer
//! comes back in a `ToolAnswer` frame on the control channel
//! ([`crate::control`]); a boot without a host that serves tools
//! ([`crate::bundle::BOOT_FLAG_TOOLS`]) refuses every allowed call with
//! `NotSupported`.

/// Longest tool name.
pub const MAX_NAME: usize = 128;
/// Longest request.
pub const MAX_REQUEST: usize = 16 << 10;
/// Most response bytes an answer carries (a larger capacity is used up to
/// this). The host makes its response fit the capacity the request names.
pub const MAX_RESPONSE: usize = 15 << 10;
/// How long the kernel waits for the host's answer before it answers
/// `TimedOut` itself (the host's own per-tool timeout is shorter).
pub const DEADLINE_NS: u64 = 600 * 1_000_000_000;

/// What the host says about a call in its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum AnswerStatus {
    /// The tool ran: the response is its result (a command's non-zero exit
    /// or an MCP error result included).
    Ran = 0,
    /// It did not finish in time (the host's timeout for it).
    TimedOut = 1,
    /// It could not be run (no server registered under that name, a start
    /// that failed, a broken protocol, the host's own claim check).
    Failed = 2,
}

impl AnswerStatus {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(AnswerStatus::Ran),
            1 => Some(AnswerStatus::TimedOut),
            2 => Some(AnswerStatus::Failed),
            _ => None,
        }
    }

    /// What the agent's call returns for it (`None`: the response).
    pub fn error(self) -> Option<crate::HvError> {
        match self {
            AnswerStatus::Ran => None,
            AnswerStatus::TimedOut => Some(crate::HvError::TimedOut),
            AnswerStatus::Failed => Some(crate::HvError::ToolFailed),
        }
    }
}
