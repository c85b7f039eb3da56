//! The `rvm` host functions: each decodes its WASM arguments, checks buffers
//! against the agent's linear memory, calls [`HostCalls`] and encodes the
//! result as the import table's conventions say.

use alloc::vec::Vec;
use core::ops::Range;

use rvm_abi::imports::{self, HostImport, PROVE_BUFFER_LEN};
use rvm_abi::{tool, CapHandle, HvError, ObjectKind, Rights};
use wasmi::{AsContext, Caller, Extern, Global, Instance, Linker, Memory, StoreLimits, Val};

use crate::snapshot::{self, GlobalValue, ImageMeta};
use crate::config::HandleList;
use crate::host::{DeriveRequest, HostCalls};

/// What the `snapshot` import does for this agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotMode {
    /// A turn agent: note the request; the engine snapshots when the turn ends.
    AtTurnEnd,
    /// A `run` agent: capture now (the image cannot be resumed mid-call).
    Immediate,
    /// The agent has state no image can hold (a mutable global it does not
    /// export, or code that changes a table): the import answers
    /// `NotSupported`.
    Unsupported,
}

/// The store's data: the host, the policy, and what the host functions need.
pub(crate) struct Ctx<H> {
    pub(crate) host: H,
    pub(crate) limits: StoreLimits,
    pub(crate) handles: HandleList,
    /// The instance and its exported linear memory, once instantiated.
    pub(crate) instance: Option<Instance>,
    pub(crate) memory: Option<Memory>,
    pub(crate) host_calls: u64,
    pub(crate) snapshot_mode: SnapshotMode,
    /// A turn agent asked for a snapshot during the current turn.
    pub(crate) snapshot_requested: bool,
    /// What the agent's receives met during the current turn.
    pub(crate) inbox: InboxSignal,
    /// What a WASI program finds around it ([`crate::wasi`]).
    pub(crate) wasi: crate::wasi::WasiEnv,
    pub(crate) wasi_random: crate::wasi::Random,
}

/// What an agent's `channel_recv` calls met during one turn: the signal
/// of an idle turn (the `Dormant` tier sleeps after one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InboxSignal {
    /// A receive found its channel empty (`WouldBlock`).
    pub(crate) found_empty: bool,
    /// A receive delivered a message.
    pub(crate) received: bool,
}

impl InboxSignal {
    fn note<T>(&mut self, result: &Result<T, HvError>) {
        match result {
            Ok(_) => self.received = true,
            Err(HvError::WouldBlock) => self.found_empty = true,
            Err(_) => {}
        }
    }

    /// The turn found the inbox empty and received nothing.
    pub(crate) fn idle(self) -> bool {
        self.found_empty && !self.received
    }
}

type C<'a, H> = Caller<'a, Ctx<H>>;

/// Status of a call that returns nothing: 0 or the error's code.
fn status(result: Result<(), HvError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => i32::from(e.outcome_code()),
    }
}

/// Status of a call that returns a length.
fn length(result: Result<usize, HvError>) -> i32 {
    result
        .and_then(|n| i32::try_from(n).map_err(|_| HvError::InvalidArgument))
        .unwrap_or_else(|e| i32::from(e.outcome_code()))
}

/// Status of a call that returns a 64-bit value.
fn value(result: Result<u64, HvError>) -> i64 {
    result
        .and_then(|v| i64::try_from(v).map_err(|_| HvError::InvalidArgument))
        .unwrap_or_else(|e| e.code())
}

fn unsigned(x: i32) -> u32 {
    u32::from_ne_bytes(x.to_ne_bytes())
}

fn handle(raw: i64) -> Result<CapHandle, HvError> {
    CapHandle::from_raw(u64::from_ne_bytes(raw.to_ne_bytes())).ok_or(HvError::BadHandle)
}

/// The byte range `ptr..ptr+len` of a memory of `size` bytes.
fn range(size: usize, ptr: i32, len: i32) -> Result<Range<usize>, HvError> {
    let start = usize::try_from(unsigned(ptr)).map_err(|_| HvError::BadAddress)?;
    let len = usize::try_from(unsigned(len)).map_err(|_| HvError::BadAddress)?;
    let end = start.checked_add(len).ok_or(HvError::BadAddress)?;
    if end > size {
        return Err(HvError::BadAddress);
    }
    Ok(start..end)
}

/// One range read and one written by the same call: they must not overlap.
fn split(
    mem: &mut [u8],
    read: Range<usize>,
    write: Range<usize>,
) -> Result<(&[u8], &mut [u8]), HvError> {
    if read.is_empty() {
        return Ok((&[], &mut mem[write]));
    }
    if write.is_empty() {
        return Ok((&mem[read], &mut []));
    }
    if read.start < write.end && write.start < read.end {
        return Err(HvError::InvalidArgument);
    }
    if read.end <= write.start {
        let (lo, hi) = mem.split_at_mut(write.start);
        Ok((&lo[read], &mut hi[..write.len()]))
    } else {
        let (lo, hi) = mem.split_at_mut(read.start);
        Ok((&hi[..read.len()], &mut lo[write]))
    }
}

fn memory<H>(caller: &C<'_, H>) -> Result<Memory, HvError> {
    caller.data().memory.ok_or(HvError::BadAddress)
}

/// Count the call, then run `f` with the linear memory and the host.
fn with_memory<H, R>(
    caller: &mut C<'_, H>,
    f: impl FnOnce(&mut [u8], &mut H) -> Result<R, HvError>,
) -> Result<R, HvError> {
    caller.data_mut().host_calls += 1;
    let memory = memory(caller)?;
    let (mem, ctx) = memory.data_and_store_mut(caller);
    f(mem, &mut ctx.host)
}

fn count<'a, H>(caller: &'a mut C<'_, H>) -> &'a mut Ctx<H> {
    let ctx = caller.data_mut();
    ctx.host_calls += 1;
    ctx
}

/// The agent's exported mutable numeric globals, in export order, and its
/// first exported table's length: what an image records besides memory.
pub(crate) fn capture_meta<H>(ctx: impl AsContext<Data = Ctx<H>>, turn: u64) -> ImageMeta {
    let store = ctx.as_context();
    let mut meta = ImageMeta {
        globals: Vec::new(),
        table_len: 0,
        turn,
    };
    let Some(instance) = store.data().instance else {
        return meta;
    };
    let mut table = None;
    for export in instance.exports(store) {
        match export.into_extern() {
            Extern::Global(g) if g.ty(store).mutability().is_mut() => {
                if let Some(v) = global_value(g.get(store)) {
                    meta.globals.push(v);
                }
            }
            Extern::Table(t) if table.is_none() => table = Some(t),
            _ => {}
        }
    }
    meta.table_len = table.map_or(0, |t| u32::try_from(t.size(store)).unwrap_or(u32::MAX));
    meta
}

/// The agent's exported mutable globals (in export order), as handles.
pub(crate) fn mutable_globals<H>(ctx: impl AsContext<Data = Ctx<H>>) -> Vec<Global> {
    let store = ctx.as_context();
    let Some(instance) = store.data().instance else {
        return Vec::new();
    };
    instance
        .exports(store)
        .filter_map(|export| match export.into_extern() {
            Extern::Global(g)
                if g.ty(store).mutability().is_mut() && global_value(g.get(store)).is_some() =>
            {
                Some(g)
            }
            _ => None,
        })
        .collect()
}

/// A numeric global's value.
pub(crate) fn global_value(v: Val) -> Option<GlobalValue> {
    match v {
        Val::I32(v) => Some(GlobalValue::I32(v)),
        Val::I64(v) => Some(GlobalValue::I64(v)),
        Val::F32(v) => Some(GlobalValue::F32(v.to_bits())),
        Val::F64(v) => Some(GlobalValue::F64(v.to_bits())),
        _ => None,
    }
}

/// Define every entry of the import table, and the WASI subset, in `linker`.
pub(crate) fn define<H: HostCalls + 'static>(
    linker: &mut Linker<Ctx<H>>,
) -> Result<(), wasmi::Error> {
    crate::wasi::define(linker)?;
    let m = imports::MODULE;
    for &import in HostImport::ALL {
        // Under its name and any former name.
        for &name in import.names() {
            match import {
                HostImport::ConsoleWrite => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>, ptr: i32, len: i32| -> i32 {
                        status(with_memory(&mut c, |mem, host| {
                            let r = range(mem.len(), ptr, len)?;
                            host.console_write(&mem[r])
                        }))
                    })?;
                }
                HostImport::ChannelSend => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, h: i64, ptr: i32, len: i32| -> i32 {
                            status(with_memory(&mut c, |mem, host| {
                                let r = range(mem.len(), ptr, len)?;
                                host.channel_send(handle(h)?, &mem[r])
                            }))
                        },
                    )?;
                }
                HostImport::ChannelRecv => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, h: i64, ptr: i32, cap: i32| -> i32 {
                            let got = with_memory(&mut c, |mem, host| {
                                let r = range(mem.len(), ptr, cap)?;
                                host.channel_recv(handle(h)?, &mut mem[r])
                            });
                            c.data_mut().inbox.note(&got);
                            length(got)
                        },
                    )?;
                }
                HostImport::ChannelWait => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, h: i64, ptr: i32, cap: i32, timeout: i64| -> i32 {
                            // Any negative timeout is "no deadline".
                            let timeout_ns = u64::try_from(timeout).unwrap_or(u64::MAX);
                            let got = with_memory(&mut c, |mem, host| {
                                let r = range(mem.len(), ptr, cap)?;
                                host.channel_wait(handle(h)?, &mut mem[r], timeout_ns)
                            });
                            c.data_mut().inbox.note(&got);
                            length(got)
                        },
                    )?;
                }
                HostImport::WaitAny => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, ptr: i32, count: i32, timeout: i64| -> i32 {
                            let timeout_ns = u64::try_from(timeout).unwrap_or(u64::MAX);
                            let got = with_memory(&mut c, |mem, host| {
                                // No channel is a sleep, which needs a deadline.
                                let n = usize::try_from(count)
                                    .ok()
                                    .filter(|&n| n <= 16 && (n > 0 || timeout_ns != u64::MAX))
                                    .ok_or(HvError::InvalidArgument)?;
                                let r = range(mem.len(), ptr, i32::try_from(n * 8).map_err(|_| HvError::InvalidArgument)?)?;
                                let handles = mem[r]
                                    .chunks_exact(8)
                                    .map(|b| handle(i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
                                    .collect::<Result<alloc::vec::Vec<CapHandle>, HvError>>()?;
                                host.wait_any(&handles, timeout_ns)
                            });
                            // A wait on channels looked at the inbox, as a
                            // receive does (an empty one lets an idle turn
                            // put a Dormant partition to sleep); a sleep
                            // did not.
                            if count > 0 {
                                c.data_mut().inbox.note(&got);
                            }
                            length(got)
                        },
                    )?;
                }
                HostImport::StateStage => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, h: i64, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                            status(with_memory(&mut c, |mem, host| {
                                let k = range(mem.len(), kp, kl)?;
                                let v = range(mem.len(), vp, vl)?;
                                host.state_stage(handle(h)?, &mem[k], &mem[v])
                            }))
                        },
                    )?;
                }
                HostImport::StateValidate => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>, h: i64| -> i32 {
                        let ctx = count(&mut c);
                        status(handle(h).and_then(|h| ctx.host.state_validate(h)))
                    })?;
                }
                HostImport::StateCommit => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>, h: i64| -> i32 {
                        let ctx = count(&mut c);
                        status(handle(h).and_then(|h| ctx.host.state_commit(h)))
                    })?;
                }
                HostImport::StateGet => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, h: i64, kp: i32, kl: i32, vp: i32, cap: i32| -> i32 {
                            length(with_memory(&mut c, |mem, host| {
                                let k = range(mem.len(), kp, kl)?;
                                let v = range(mem.len(), vp, cap)?;
                                let (key, buf) = split(mem, k, v)?;
                                host.state_get(handle(h)?, key, buf)
                            }))
                        },
                    )?;
                }
                HostImport::Handle => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>, kind: i32, n: i32| -> i64 {
                        let ctx = count(&mut c);
                        let kind = u8::try_from(kind).ok().and_then(ObjectKind::from_u8);
                        let n = usize::try_from(n).ok();
                        value(match (kind, n) {
                            (Some(kind), Some(n)) => ctx
                                .handles
                                .nth(kind, n)
                                .map(CapHandle::to_raw)
                                .ok_or(HvError::BadHandle),
                            _ => Err(HvError::InvalidArgument),
                        })
                    })?;
                }
                HostImport::Clock => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>| -> i64 {
                        value(count(&mut c).host.clock_read())
                    })?;
                }
                HostImport::Yield => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>| -> i32 {
                        status(count(&mut c).host.yield_now())
                    })?;
                }
                HostImport::CapDerive => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>,
                         parent: i64,
                         target: i32,
                         rights: i32,
                         expiry: i64,
                         proof: i32,
                         nonce: i64|
                         -> i64 {
                            value(with_memory(&mut c, |mem, host| {
                                let rights = u8::try_from(rights)
                                    .ok()
                                    .and_then(Rights::from_bits)
                                    .ok_or(HvError::InvalidArgument)?;
                                let proof = match usize::try_from(unsigned(proof)) {
                                    Ok(0) => None,
                                    Ok(p) => Some(mem.get(p..).ok_or(HvError::BadAddress)?),
                                    Err(_) => return Err(HvError::BadAddress),
                                };
                                let request = DeriveRequest {
                                    parent: handle(parent)?,
                                    target_partition: unsigned(target),
                                    rights,
                                    expiry_ns: u64::from_ne_bytes(expiry.to_ne_bytes()),
                                    proof,
                                    nonce: u64::from_ne_bytes(nonce.to_ne_bytes()),
                                };
                                host.cap_derive(&request).map(CapHandle::to_raw)
                            }))
                        },
                    )?;
                }
                HostImport::CapRevoke => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>, h: i64| -> i32 {
                        let ctx = count(&mut c);
                        status(handle(h).and_then(|h| ctx.host.cap_revoke(h, None, 0)))
                    })?;
                }
                HostImport::Prove => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>, h: i64, ptr: i32| -> i32 {
                        status(with_memory(&mut c, |mem, host| {
                            let len = i32::try_from(PROVE_BUFFER_LEN)
                                .map_err(|_| HvError::InvalidArgument)?;
                            let r = range(mem.len(), ptr, len)?;
                            let out = <&mut [u8; PROVE_BUFFER_LEN]>::try_from(&mut mem[r])
                                .map_err(|_| HvError::BadAddress)?;
                            host.prove(handle(h)?, out)
                        }))
                    })?;
                }
                HostImport::Snapshot => {
                    linker.func_wrap(m, name, |mut c: C<'_, H>| -> i32 {
                        let mode = count(&mut c).snapshot_mode;
                        match mode {
                            SnapshotMode::AtTurnEnd => {
                                c.data_mut().snapshot_requested = true;
                                0
                            }
                            SnapshotMode::Unsupported => status(Err(HvError::NotSupported)),
                            SnapshotMode::Immediate => {
                                let meta = capture_meta(&c, 0);
                                status(match memory(&c) {
                                    Ok(mem) => {
                                        let (data, ctx) = mem.data_and_store_mut(&mut c);
                                        let header = snapshot::encode_header(&meta, data.len());
                                        ctx.host.snapshot(&header, data).map(drop)
                                    }
                                    Err(_) => {
                                        let header = snapshot::encode_header(&meta, 0);
                                        c.data_mut().host.snapshot(&header, &[]).map(drop)
                                    }
                                })
                            }
                        }
                    })?;
                }
                HostImport::ToolCall => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>,
                         np: i32,
                         nl: i32,
                         rp: i32,
                         rl: i32,
                         op: i32,
                         cap: i32|
                         -> i32 {
                            length(with_memory(&mut c, |mem, host| {
                                // Lengths the ABI does not allow are refused
                                // first, as the hypervisor does, and before
                                // anything is copied.
                                let len =
                                    |l: i32| usize::try_from(unsigned(l)).unwrap_or(usize::MAX);
                                if !(1..=tool::MAX_NAME).contains(&len(nl))
                                    || len(rl) > tool::MAX_REQUEST
                                {
                                    return Err(HvError::InvalidArgument);
                                }
                                let n = range(mem.len(), np, nl)?;
                                let r = range(mem.len(), rp, rl)?;
                                let o = range(mem.len(), op, cap)?;
                                // Copied out first: the response buffer may
                                // overlap them.
                                let tool_name = mem[n].to_vec();
                                let request = mem[r].to_vec();
                                host.tool_call(&tool_name, &request, &mut mem[o])
                            }))
                        },
                    )?;
                }
                HostImport::Exit => {
                    linker.func_wrap(
                        m,
                        name,
                        |mut c: C<'_, H>, code: i32| -> Result<(), wasmi::Error> {
                            count(&mut c);
                            Err(wasmi::Error::i32_exit(code))
                        },
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert_eq!(range(100, 10, 20), Ok(10..30));
        assert_eq!(range(100, 90, 10), Ok(90..100));
        assert_eq!(range(100, 90, 11), Err(HvError::BadAddress));
        assert_eq!(range(100, -1, 1), Err(HvError::BadAddress));
        assert_eq!(range(100, 0, -1), Err(HvError::BadAddress));
    }

    #[test]
    fn overlapping_in_and_out_buffers_are_refused() {
        let mut mem = [0u8; 16];
        assert_eq!(
            split(&mut mem, 0..4, 2..6).map(|_| ()),
            Err(HvError::InvalidArgument)
        );
        let (k, v) = split(&mut mem, 0..4, 4..8).unwrap();
        assert_eq!((k.len(), v.len()), (4, 4));
        let (k, v) = split(&mut mem, 8..12, 0..8).unwrap();
        assert_eq!((k.len(), v.len()), (4, 8));
        let (k, v) = split(&mut mem, 5..5, 0..8).unwrap();
        assert_eq!((k.len(), v.len()), (0, 8));
        let (k, v) = split(&mut mem, 0..8, 3..3).unwrap();
        assert_eq!((k.len(), v.len()), (8, 0));
    }

    #[test]
    fn statuses_use_the_abi_codes() {
        assert_eq!(status(Ok(())), 0);
        assert_eq!(
            i64::from(status(Err(HvError::WouldBlock))),
            HvError::WouldBlock.code()
        );
        assert_eq!(length(Ok(7)), 7);
        assert_eq!(
            i64::from(length(Ok(usize::MAX))),
            HvError::InvalidArgument.code()
        );
        assert_eq!(value(Ok(5)), 5);
        assert_eq!(handle(-1), Err(HvError::BadHandle));
    }

    #[test]
    fn a_turn_is_idle_when_a_receive_found_nothing_and_none_delivered() {
        let mut s = InboxSignal::default();
        assert!(!s.idle(), "a turn that never received is not idle");
        s.note::<usize>(&Err(HvError::WouldBlock));
        assert!(s.idle());
        s.note::<usize>(&Err(HvError::BadHandle));
        assert!(s.idle(), "other errors say nothing about the inbox");
        s.note(&Ok(3usize));
        assert!(!s.idle(), "a message was received this turn");
    }
}
