//! The host functions an agent's WASM module may import.
//!
//! Every import must come from module [`MODULE`] and name one entry of
//! [`HostImport`] with exactly its signature; the guest runtime refuses any
//! other import before instantiating the module.
//!
//! Conventions shared by all entries:
//! * pointers and lengths are `i32` offsets into the agent's linear memory
//!   (read as unsigned); an out-of-bounds buffer yields `BadAddress`;
//! * handles are `i64` raw handles ([`CapHandle::to_raw`](crate::CapHandle::to_raw));
//! * an `i32` result is `>= 0` on success (a length where one is returned,
//!   else `0`) and a negative [`HvError`](crate::HvError) code on failure; an
//!   `i64` result is the value (`>= 0`) or a negative `HvError` code;
//! * `exit` does not return: the agent's run ends with that code.

/// The one import module an agent may use.
pub const MODULE: &str = "rvm";

/// Length of the attestation buffer `prove` writes (see [`Hypercall::Prove`](crate::Hypercall::Prove)).
pub const PROVE_BUFFER_LEN: usize = 96;

/// A WASM value type used in the import signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValType {
    I32,
    I64,
}

use ValType::{I32, I64};

macro_rules! host_imports {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal ( $($p:ident),* ) -> ( $($r:ident),* ), )*) => {
        /// One host function of module [`MODULE`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum HostImport {
            $( $(#[$doc])* $variant, )*
        }

        impl HostImport {
            /// Every host function, in table order.
            pub const ALL: &'static [HostImport] = &[$(HostImport::$variant,)*];

            /// The import's field name in module [`MODULE`].
            pub const fn name(self) -> &'static str {
                match self { $(HostImport::$variant => $name,)* }
            }

            /// The name alone, as a one-element list.
            const fn name_slice(self) -> &'static [&'static str] {
                match self { $(HostImport::$variant => &[$name],)* }
            }

            /// Parameter types, in order.
            pub const fn params(self) -> &'static [ValType] {
                match self { $(HostImport::$variant => &[$($p),*],)* }
            }

            /// Result types, in order.
            pub const fn results(self) -> &'static [ValType] {
                match self { $(HostImport::$variant => &[$($r),*],)* }
            }

            /// The entry with this field name (or a former name), if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(HostImport::$variant),)*
                    SNAPSHOT_FORMER_NAME => Some(HostImport::Snapshot),
                    _ => None,
                }
            }
        }
    };
}

/// The former field name of [`HostImport::Snapshot`], still accepted and
/// linked so that agents built against it keep loading.
pub const SNAPSHOT_FORMER_NAME: &str = "checkpoint";

impl HostImport {
    /// Every field name the import is linked under: its name, then any
    /// former name.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            HostImport::Snapshot => &["snapshot", SNAPSHOT_FORMER_NAME],
            _ => self.name_slice(),
        }
    }
}

host_imports! {
    /// `(ptr, len) -> status`: write UTF-8 text to the partition's console.
    ConsoleWrite = "console_write" (I32, I32) -> (I32),
    /// `(handle, ptr, len) -> status`: send one message.
    ChannelSend = "channel_send" (I64, I32, I32) -> (I32),
    /// `(handle, ptr, cap) -> length | WouldBlock`: receive one message.
    ChannelRecv = "channel_recv" (I64, I32, I32) -> (I32),
    /// `(handle, ptr, cap, timeout ns) -> length | WouldBlock`: receive one
    /// message, waiting for it up to `timeout` ns (-1: no deadline; 0: as
    /// `channel_recv`). While it waits the partition does not run. In a
    /// partition running several agents it answers at once, as
    /// `channel_recv` does (the others' turns must go on).
    ChannelWait = "channel_wait" (I64, I32, I32, I64) -> (I32),
    /// `(ptr, count, timeout ns) -> index | WouldBlock`: wait for the first
    /// of `count` channels (1 to 16 handles, i64 each, at `ptr`) to hold a
    /// message; its index in the list (receive it with `channel_recv`). As
    /// `channel_wait`: -1 no deadline, 0 just look, and in a partition
    /// running several agents it only looks.
    WaitAny = "wait_any" (I32, I32, I64) -> (I32),
    /// `(handle, kptr, klen, vptr, vlen) -> status`: stage one item.
    StateStage = "state_stage" (I64, I32, I32, I32, I32) -> (I32),
    /// `(handle) -> status`: validate what is staged.
    StateValidate = "state_validate" (I64) -> (I32),
    /// `(handle) -> status`: commit everything staged, or nothing.
    StateCommit = "state_commit" (I64) -> (I32),
    /// `(handle, kptr, klen, vptr, cap) -> value length`.
    StateGet = "state_get" (I64, I32, I32, I32, I32) -> (I32),
    /// `(kind, n) -> handle`: the `n`-th (from 0) handle of object kind `kind`
    /// the partition started with; `BadHandle` if there is none.
    Handle = "handle" (I32, I32) -> (I64),
    /// `() -> ns`: the partition's virtual clock.
    Clock = "clock" () -> (I64),
    /// `() -> status`: give up the rest of the time slice.
    Yield = "yield" () -> (I32),
    /// `(parent, target partition, rights, expiry ns, proof ptr (0 = none), nonce) -> new handle`.
    CapDerive = "cap_derive" (I64, I32, I32, I64, I32, I64) -> (I64),
    /// `(handle) -> status`: revoke everything derived from `handle`.
    CapRevoke = "cap_revoke" (I64) -> (I32),
    /// `(handle, ptr) -> status`: write a [`PROVE_BUFFER_LEN`]-byte attestation at `ptr`.
    Prove = "prove" (I64, I32) -> (I32),
    /// `() -> status`: take a snapshot of the agent's state. A turn agent's
    /// (see [`turn`]) is taken at the end of the current turn; an agent's
    /// with a `run` entry at once (such an image cannot be resumed).
    /// Also linked under its former name, [`SNAPSHOT_FORMER_NAME`].
    Snapshot = "snapshot" () -> (I32),
    /// `(name_ptr, name_len, req_ptr, req_len, resp_ptr, resp_cap) ->
    /// response length | error`: call a tool under the partition's claims
    /// ([`crate::tool`], [`Hypercall::ToolCall`](crate::Hypercall::ToolCall)).
    /// The agent waits for the answer; other partitions run.
    ToolCall = "tool_call" (I32, I32, I32, I32, I32, I32) -> (I32),
    /// `(code)`: finish; never returns.
    Exit = "exit" (I32) -> (),
}

/// The turn contract. An agent that exports [`turn::EXPORT`] of type
/// `[] -> [i32]` is a *turn agent*: the runtime calls it in a loop, once per
/// turn, until it returns [`turn::DONE`] (or calls `exit`). Between two calls
/// no WASM frame is live, so the agent's whole state is its linear memory,
/// its mutable globals and its table: that is where snapshots are taken
/// and where a restored agent resumes (at the turn after the snapshot).
/// Agents with only a `run`/`_start` entry run once, as before.
pub mod turn {
    /// The export called once per turn.
    pub const EXPORT: &str = "turn";
    /// `turn` returned this: call it again.
    pub const CONTINUE: i32 = 0;
    /// `turn` returned this: the agent is done (exit code 0).
    pub const DONE: i32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_round_trip() {
        for (i, &a) in HostImport::ALL.iter().enumerate() {
            assert_eq!(HostImport::from_name(a.name()), Some(a));
            for &b in &HostImport::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(HostImport::from_name("system"), None);
        for &i in HostImport::ALL {
            assert_eq!(i.names()[0], i.name());
            assert!(i.names().iter().all(|n| HostImport::from_name(n) == Some(i)));
        }
        assert_eq!(HostImport::Snapshot.names(), ["snapshot", "checkpoint"]);
    }

    #[test]
    fn only_exit_returns_nothing() {
        for &i in HostImport::ALL {
            assert_eq!(
                i.results().is_empty(),
                i == HostImport::Exit,
                "{}",
                i.name()
            );
        }
    }
}

/// The WASI (`wasm32-wasip1`) functions an agent may import besides
/// [`MODULE`]'s, so that ordinary WASI programs run unmodified. The guest
/// runtime provides them on top of the `rvm` calls, inside the partition;
/// the hypervisor sees only those calls:
///
/// * `fd_write` to fds 1 and 2 is console text (`ConsoleWrite`); other fds
///   are `BADF`;
/// * `fd_read` of fd 0 reads nothing (end of input); other fds are `BADF`;
/// * `clock_time_get` is the partition's virtual clock (`ClockRead`, ns
///   since the partition started) for every clock id;
/// * `random_get` draws from a generator seeded per partition (from its
///   name): deterministic, so a replay draws the same bytes — not a source
///   of secrets;
/// * `args_get`/`args_sizes_get`: one argument, the partition's name;
///   `environ_get`/`environ_sizes_get`: no variables;
/// * `proc_exit` ends the run with its code (as `exit`); `sched_yield` is
///   `yield`.
///
/// Any other import of this module is refused when the agent is deployed
/// (every name listed) and again when it is loaded.
pub mod wasi {
    use super::ValType::{self, I32, I64};

    /// The WASI import module.
    pub const MODULE: &str = "wasi_snapshot_preview1";

    /// WASI error numbers the runtime answers with.
    pub mod errno {
        pub const SUCCESS: i32 = 0;
        pub const BADF: i32 = 8;
        pub const FAULT: i32 = 21;
        pub const INVAL: i32 = 28;
        pub const IO: i32 = 29;
    }

    macro_rules! wasi_imports {
        ($( $(#[$doc:meta])* $variant:ident = $name:literal ( $($p:ident),* ) -> ( $($r:ident),* ), )*) => {
            /// One function of [`MODULE`] the runtime provides.
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub enum WasiImport {
                $( $(#[$doc])* $variant, )*
            }

            impl WasiImport {
                /// Every one, in table order.
                pub const ALL: &'static [WasiImport] = &[$(WasiImport::$variant,)*];

                /// Its field name in [`MODULE`].
                pub const fn name(self) -> &'static str {
                    match self { $(WasiImport::$variant => $name,)* }
                }

                /// Parameter types, in order.
                pub const fn params(self) -> &'static [ValType] {
                    match self { $(WasiImport::$variant => &[$($p),*],)* }
                }

                /// Result types, in order.
                pub const fn results(self) -> &'static [ValType] {
                    match self { $(WasiImport::$variant => &[$($r),*],)* }
                }

                /// The entry with this field name, if any.
                pub fn from_name(name: &str) -> Option<Self> {
                    match name {
                        $($name => Some(WasiImport::$variant),)*
                        _ => None,
                    }
                }
            }
        };
    }

    wasi_imports! {
        /// `(fd, iovs, iovs_len, nwritten_ptr) -> errno`.
        FdWrite = "fd_write" (I32, I32, I32, I32) -> (I32),
        /// `(fd, iovs, iovs_len, nread_ptr) -> errno`.
        FdRead = "fd_read" (I32, I32, I32, I32) -> (I32),
        /// `(clock_id, precision, time_ptr) -> errno`.
        ClockTimeGet = "clock_time_get" (I32, I64, I32) -> (I32),
        /// `(buf, len) -> errno`.
        RandomGet = "random_get" (I32, I32) -> (I32),
        /// `(argc_ptr, argv_buf_size_ptr) -> errno`.
        ArgsSizesGet = "args_sizes_get" (I32, I32) -> (I32),
        /// `(argv, argv_buf) -> errno`.
        ArgsGet = "args_get" (I32, I32) -> (I32),
        /// `(count_ptr, buf_size_ptr) -> errno`.
        EnvironSizesGet = "environ_sizes_get" (I32, I32) -> (I32),
        /// `(environ, environ_buf) -> errno`.
        EnvironGet = "environ_get" (I32, I32) -> (I32),
        /// `(code)`: finish; never returns.
        ProcExit = "proc_exit" (I32) -> (),
        /// `() -> errno`.
        SchedYield = "sched_yield" () -> (I32),
    }
}
