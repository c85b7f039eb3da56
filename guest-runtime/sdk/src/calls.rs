//! Safe wrappers: each borrows its buffers for the duration of the call, so
//! the host only ever reads a slice it was lent or writes one lent mutably.

use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::{CapHandle, HvError, ObjectKind, Rights};

use crate::{decode_status, decode_value, mcp_name, raw};

/// A buffer length as the import's `i32`; longer buffers are refused here.
fn len(buf: &[u8]) -> Result<i32, HvError> {
    i32::try_from(buf.len()).map_err(|_| HvError::InvalidArgument)
}

fn raw_handle(h: CapHandle) -> i64 {
    // A raw handle is 48 bits wide, so it is always a non-negative i64.
    i64::try_from(h.to_raw()).unwrap_or(i64::MAX)
}

fn as_len(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Write text to the partition's console.
pub fn console_write(text: &[u8]) -> Result<(), HvError> {
    let n = len(text)?;
    // SAFETY: the host reads `n` bytes at `text`, which is borrowed for the call.
    decode_status(unsafe { raw::console_write(text.as_ptr(), n) }).map(drop)
}

/// The `n`-th (from 0) handle of `kind` the partition started with.
pub fn handle(kind: ObjectKind, n: u32) -> Result<CapHandle, HvError> {
    let n = i32::try_from(n).map_err(|_| HvError::InvalidArgument)?;
    // SAFETY: no memory is passed.
    let v = decode_value(unsafe { raw::handle(i32::from(kind as u8), n) })?;
    CapHandle::from_raw(v).ok_or(HvError::BadHandle)
}

/// The partition's virtual clock, ns since it started.
pub fn clock() -> Result<u64, HvError> {
    // SAFETY: no memory is passed.
    decode_value(unsafe { raw::clock() })
}

/// Give up the rest of the time slice.
pub fn yield_now() -> Result<(), HvError> {
    // SAFETY: no memory is passed.
    decode_status(unsafe { raw::yield_now() }).map(drop)
}

/// Take a snapshot of the agent's state now.
pub fn snapshot() -> Result<(), HvError> {
    // SAFETY: no memory is passed.
    decode_status(unsafe { raw::snapshot() }).map(drop)
}

/// Finish with `code`. Never returns.
pub fn exit(code: i32) -> ! {
    // SAFETY: no memory is passed; the host ends the run.
    unsafe { raw::exit(code) }
}

/// Derive a capability for `target_partition` from `parent`.
pub fn cap_derive(
    parent: CapHandle,
    target_partition: u32,
    rights: Rights,
    expiry_ns: u64,
    proof: Option<&[u8]>,
    nonce: u64,
) -> Result<CapHandle, HvError> {
    let target = i32::try_from(target_partition).map_err(|_| HvError::InvalidArgument)?;
    let expiry = i64::try_from(expiry_ns).map_err(|_| HvError::InvalidArgument)?;
    let nonce = i64::try_from(nonce).map_err(|_| HvError::InvalidArgument)?;
    let proof = proof.map_or(core::ptr::null(), <[u8]>::as_ptr);
    // SAFETY: the host reads the proof at `proof` (null = none), borrowed for the call.
    let v = decode_value(unsafe {
        raw::cap_derive(
            raw_handle(parent),
            target,
            i32::from(rights.bits()),
            expiry,
            proof,
            nonce,
        )
    })?;
    CapHandle::from_raw(v).ok_or(HvError::BadHandle)
}

/// Revoke everything derived from `handle`.
pub fn cap_revoke(handle: CapHandle) -> Result<(), HvError> {
    // SAFETY: no memory is passed.
    decode_status(unsafe { raw::cap_revoke(raw_handle(handle)) }).map(drop)
}

/// A signed attestation of `handle`'s object.
pub fn prove(handle: CapHandle) -> Result<[u8; PROVE_BUFFER_LEN], HvError> {
    let mut out = [0u8; PROVE_BUFFER_LEN];
    // SAFETY: the host writes exactly PROVE_BUFFER_LEN bytes into `out`, borrowed mutably.
    decode_status(unsafe { raw::prove(raw_handle(handle), out.as_mut_ptr()) })?;
    Ok(out)
}

/// Call tool `name` with `request` under the partition's claims (the
/// `Resource` capabilities it holds; [`rvm_abi::tool`]) and wait for the
/// answer: the host's response is written into `response`, and its length
/// returned. The host makes the response fit `response` (at most
/// [`rvm_abi::tool::MAX_RESPONSE`] bytes). While the agent waits, its
/// partition does not run.
///
/// Errors: `NoRights` when no claim allows the call; `InvalidArgument` for
/// a name that is not a tool name (1 to [`rvm_abi::tool::MAX_NAME`] bytes
/// of `A-Z a-z 0-9 _ - . /`) or a request longer than
/// [`rvm_abi::tool::MAX_REQUEST`]; `NotSupported` when the host serves no
/// tools; `TimedOut` when the tool did not finish in time; `ToolFailed`
/// when the host could not run it.
pub fn tool_call(name: &str, request: &[u8], response: &mut [u8]) -> Result<usize, HvError> {
    let (nl, rl, cap) = (len(name.as_bytes())?, len(request)?, len(response)?);
    // SAFETY: the host reads `nl` bytes at `name` and `rl` at `request`, and
    // writes at most `cap` into `response`; `response` is borrowed mutably,
    // so it overlaps neither of the others.
    decode_status(unsafe {
        raw::tool_call(
            name.as_ptr(),
            nl,
            request.as_ptr(),
            rl,
            response.as_mut_ptr(),
            cap,
        )
    })
    .map(as_len)
}

/// Run `command_line` with the `Bash` tool: the host splits it into words
/// at whitespace, without a shell (`;`, `|`, `$( )` and quotes are plain
/// bytes of the words), and runs the first word with the others as its
/// arguments. The response is the JSON object
/// `{"exit_code": n, "stdout": "…", "stderr": "…", "truncated": bool,
/// "timed_out": bool}`. A claim such as `Bash(echo *)` allows it; a line
/// with a control character or a `..` path component is allowed by none.
pub fn bash(command_line: &str, response: &mut [u8]) -> Result<usize, HvError> {
    tool_call("Bash", command_line.as_bytes(), response)
}

/// Call `tool` of the MCP server the operator registered for this
/// partition under `server` (the tool `mcp__<server>__<tool>`), with its
/// JSON arguments; the response is the tool's JSON result. A claim such as
/// `mcp__<server>__*` allows it. `InvalidArgument` when the tool's name
/// would be longer than [`rvm_abi::tool::MAX_NAME`].
pub fn mcp(
    server: &str,
    tool: &str,
    arguments_json: &str,
    response: &mut [u8],
) -> Result<usize, HvError> {
    let mut buf = [0u8; rvm_abi::tool::MAX_NAME];
    let name = mcp_name(server, tool, &mut buf)?;
    tool_call(name, arguments_json.as_bytes(), response)
}

/// A channel endpoint this partition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel(pub CapHandle);

impl Channel {
    /// The `n`-th channel the partition started with.
    pub fn nth(n: u32) -> Result<Self, HvError> {
        handle(ObjectKind::Channel, n).map(Self)
    }

    /// Send one message.
    pub fn send(&self, message: &[u8]) -> Result<(), HvError> {
        let n = len(message)?;
        // SAFETY: the host reads `n` bytes at `message`, borrowed for the call.
        decode_status(unsafe { raw::channel_send(raw_handle(self.0), message.as_ptr(), n) })
            .map(drop)
    }

    /// Receive one message into `buf`; its length. `WouldBlock` when empty.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, HvError> {
        let cap = len(buf)?;
        // SAFETY: the host writes at most `cap` bytes into `buf`, borrowed mutably.
        decode_status(unsafe { raw::channel_recv(raw_handle(self.0), buf.as_mut_ptr(), cap) })
            .map(as_len)
    }

    /// Receive one message into `buf`, waiting for it up to `timeout_ns`
    /// (`None`: no deadline); its length. `WouldBlock` when the deadline
    /// passed first. While it waits the partition does not run and costs no
    /// witness records; in a partition running several agents it answers at
    /// once, as [`Channel::recv`].
    pub fn recv_wait(&self, buf: &mut [u8], timeout_ns: Option<u64>) -> Result<usize, HvError> {
        let cap = len(buf)?;
        let timeout = timeout_ns.map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX));
        // SAFETY: the host writes at most `cap` bytes into `buf`, borrowed mutably.
        decode_status(unsafe { raw::channel_wait(raw_handle(self.0), buf.as_mut_ptr(), cap, timeout) })
            .map(as_len)
    }
}

/// Wait until the first of `channels` (0 to 16; none with a deadline is
/// [`sleep`]) holds a message for this agent, up to `timeout_ns` (`None`: no deadline; `Some(0)`: just look);
/// its index in `channels` (the message stays queued: [`Channel::recv`] it).
/// `WouldBlock` when the deadline passed first. While it waits the
/// partition does not run; in a partition running several agents it only
/// looks. A small event loop:
///
/// ```ignore
/// loop {
///     match wait_any(&[inbox, control], None)? {
///         0 => handle_request(&inbox),
///         _ => handle_control(&control),
///     }
/// }
/// ```
pub fn wait_any(channels: &[Channel], timeout_ns: Option<u64>) -> Result<usize, HvError> {
    if channels.len() > 16 || (channels.is_empty() && timeout_ns.is_none()) {
        return Err(HvError::InvalidArgument);
    }
    let mut list = [0i64; 16];
    for (slot, c) in list.iter_mut().zip(channels) {
        *slot = raw_handle(c.0);
    }
    let n = i32::try_from(channels.len()).map_err(|_| HvError::InvalidArgument)?;
    let timeout = timeout_ns.map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX));
    // SAFETY: the host reads `n` handles at `list`, borrowed for the call.
    decode_status(unsafe { raw::wait_any(list.as_ptr(), n, timeout) }).map(as_len)
}

/// Sleep for `ns`: the partition does not run until then (one witness
/// record when it wakes). In a partition running several agents it returns
/// at once, as [`wait_any`] only looks there.
pub fn sleep(ns: u64) -> Result<(), HvError> {
    match wait_any(&[], Some(ns)) {
        Err(HvError::WouldBlock) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(HvError::InvalidArgument),
    }
}

/// A state store this partition holds: stage, validate, commit, get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateStore(pub CapHandle);

impl StateStore {
    /// The `n`-th state store the partition started with.
    pub fn nth(n: u32) -> Result<Self, HvError> {
        handle(ObjectKind::StateStore, n).map(Self)
    }

    /// Stage one item.
    pub fn stage(&self, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        let (kl, vl) = (len(key)?, len(value)?);
        // SAFETY: the host reads `kl` bytes at `key` and `vl` at `value`, both borrowed.
        decode_status(unsafe {
            raw::state_stage(raw_handle(self.0), key.as_ptr(), kl, value.as_ptr(), vl)
        })
        .map(drop)
    }

    /// Validate what is staged.
    pub fn validate(&self) -> Result<(), HvError> {
        // SAFETY: no memory is passed.
        decode_status(unsafe { raw::state_validate(raw_handle(self.0)) }).map(drop)
    }

    /// Commit everything staged, or nothing.
    pub fn commit(&self) -> Result<(), HvError> {
        // SAFETY: no memory is passed.
        decode_status(unsafe { raw::state_commit(raw_handle(self.0)) }).map(drop)
    }

    /// Read the committed value of `key` into `buf`; the value's length.
    pub fn get(&self, key: &[u8], buf: &mut [u8]) -> Result<usize, HvError> {
        let (kl, cap) = (len(key)?, len(buf)?);
        // SAFETY: the host reads `kl` bytes at `key` and writes at most `cap`
        // into `buf`; the two are distinct borrows, so they cannot overlap.
        decode_status(unsafe {
            raw::state_get(raw_handle(self.0), key.as_ptr(), kl, buf.as_mut_ptr(), cap)
        })
        .map(as_len)
    }
}
