//! The engine's only door to the outside: one method per hypercall.

use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::{CapHandle, HvError, Rights};

/// A capability derivation, as the `cap_derive` import asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeriveRequest<'a> {
    /// The capability to derive from.
    pub parent: CapHandle,
    /// The partition that receives the new capability.
    pub target_partition: u32,
    /// The rights of the new capability (a subset of the parent's).
    pub rights: Rights,
    /// Expiry in ns, 0 for the parent's.
    pub expiry_ns: u64,
    /// The P3 proof, if any: the agent's linear memory from the proof's first
    /// byte to the end of memory (the hypercall passes only its address; the
    /// hypervisor reads as much as its proof format needs).
    pub proof: Option<&'a [u8]>,
    /// Monotonic nonce (P2 replay guard).
    pub nonce: u64,
}

/// The hypercalls an agent can reach, as the engine issues them.
///
/// Buffers are slices of the agent's linear memory; an implementation that
/// issues real hypercalls passes their addresses (at EL1 a pointer's address
/// is its IPA). Each method returns the hypervisor's status as
/// `Result<_, HvError>`.
pub trait HostCalls {
    /// `ConsoleWrite`: write text to the partition's console.
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError>;
    /// `ChannelSend`: send one message on `channel`.
    fn channel_send(&mut self, channel: CapHandle, message: &[u8]) -> Result<(), HvError>;
    /// `ChannelRecv`: receive one message into `buf`; its length.
    /// `WouldBlock` when the channel is empty.
    fn channel_recv(&mut self, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError>;
    /// `ChannelWait`: [`HostCalls::channel_recv`], waiting up to
    /// `timeout_ns` (`u64::MAX`: no deadline) for a message.
    fn channel_wait(&mut self, channel: CapHandle, buf: &mut [u8], timeout_ns: u64) -> Result<usize, HvError>;
    /// `WaitAny`: the index in `channels` of the first with a message,
    /// waiting up to `timeout_ns` (`u64::MAX`: no deadline) for one.
    fn wait_any(&mut self, channels: &[CapHandle], timeout_ns: u64) -> Result<usize, HvError>;
    /// `StateStage`: stage one item in `store`.
    fn state_stage(&mut self, store: CapHandle, key: &[u8], value: &[u8]) -> Result<(), HvError>;
    /// `StateValidate`: validate what is staged in `store`.
    fn state_validate(&mut self, store: CapHandle) -> Result<(), HvError>;
    /// `StateCommit`: commit everything staged in `store`, or nothing.
    fn state_commit(&mut self, store: CapHandle) -> Result<(), HvError>;
    /// `StateGet`: read the committed value of `key` into `buf`; the value's
    /// length as the hypervisor reports it.
    fn state_get(&mut self, store: CapHandle, key: &[u8], buf: &mut [u8])
        -> Result<usize, HvError>;
    /// `ClockRead`: the partition's virtual clock, ns since it started.
    fn clock_read(&mut self) -> Result<u64, HvError>;
    /// `Yield`: give up the rest of the time slice.
    ///
    /// The engine also calls this when a slice's fuel runs out; an error
    /// then stops the run ([`RunOutcome::Stopped`](crate::RunOutcome::Stopped)),
    /// which is how a host-side driver bounds a run. At EL1 it never fails.
    fn yield_now(&mut self) -> Result<(), HvError>;
    /// `CapDerive`: a new handle, in the target partition's table.
    fn cap_derive(&mut self, request: &DeriveRequest<'_>) -> Result<CapHandle, HvError>;
    /// `CapRevoke`: revoke everything derived from `handle`.
    fn cap_revoke(
        &mut self,
        handle: CapHandle,
        proof: Option<&[u8]>,
        nonce: u64,
    ) -> Result<(), HvError>;
    /// `Prove`: a signed attestation of `handle`'s object.
    fn prove(&mut self, handle: CapHandle, out: &mut [u8; PROVE_BUFFER_LEN])
        -> Result<(), HvError>;
    /// `Snapshot`: hand a snapshot image to the hypervisor, as two parts
    /// of one image — `header` (the [`snapshot`](crate::snapshot) header
    /// and globals) followed by `memory` (the linear memory, in place).
    fn snapshot(&mut self, header: &[u8], memory: &[u8]) -> Result<SnapshotReceipt, HvError>;
    /// `ToolCall`: call tool `name` with `request` under the partition's
    /// claims ([`rvm_abi::tool`]); the host's response is written into
    /// `response` (at most its length, and at most
    /// [`rvm_abi::tool::MAX_RESPONSE`] bytes), and its length returned. The
    /// call waits for the answer. `NoRights` when no claim allows it,
    /// `NotSupported` when the host serves no tools, `TimedOut` when the
    /// answer did not come in time, `ToolFailed` when the host could not
    /// run the tool.
    fn tool_call(
        &mut self,
        name: &[u8],
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, HvError>;
    /// `Idle` (the `Dormant` memory tier), at a turn boundary after a turn
    /// that found the inbox empty and received nothing. `snapshot_id` 0
    /// asks whether the partition may sleep now (`Ok(true)`); then the
    /// engine snapshots and calls again with that snapshot's id, which
    /// does not return on a real machine unless a message arrived meanwhile
    /// (`Ok(false)`). A host without a dormant tier keeps the default.
    fn idle(&mut self, snapshot_id: u64) -> Result<bool, HvError> {
        let _ = snapshot_id;
        Ok(false)
    }
}

/// What the hypervisor answers a snapshot with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotReceipt {
    /// The snapshot's id (1, 2, ... per partition).
    pub id: u64,
    /// The first 16 bytes of its state hash.
    pub hash_prefix: [u8; 16],
}
