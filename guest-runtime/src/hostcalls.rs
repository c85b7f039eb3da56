//! The engine's [`HostCalls`] at EL1: every method is one hypercall.

use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::{CapHandle, HvError, Hypercall};
use rvm_agent_engine::{SnapshotReceipt, DeriveRequest, HostCalls};

use crate::arch::{hypercall, Arg};

/// Hypercalls for the engine, issued from this partition.
#[derive(Clone, Copy, Debug, Default)]
pub struct El1Host {
    /// Whether a receive may park the partition (`ChannelWait`): only when
    /// it runs one agent alone. A runtime with an agent table runs turns
    /// round-robin, and one agent's wait must not hold the others.
    pub may_wait: bool,
}

impl El1Host {
    /// The host of a partition that runs one agent alone.
    pub const ALONE: El1Host = El1Host { may_wait: true };
    /// The host of one agent among the agents of a table.
    pub const SHARED: El1Host = El1Host { may_wait: false };
}

/// A length the hypervisor reported, checked against the buffer it filled.
fn filled(reported: u64, cap: usize) -> Result<usize, HvError> {
    usize::try_from(reported)
        .ok()
        .filter(|&n| n <= cap)
        .ok_or(HvError::InvalidArgument)
}

fn as_len(reported: u64) -> Result<usize, HvError> {
    usize::try_from(reported).map_err(|_| HvError::InvalidArgument)
}

/// What `AgentSwitch` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The kernel moves that agent to another partition
    /// (`agent_switch::DEPART`): snapshot it and drop it.
    pub depart: bool,
    /// How many slots the partition's agent table lists now (0: no
    /// table). More than the runtime knows: agents arrived (a merge).
    pub listed: usize,
}

/// `AgentSwitch`: the calls that follow are those of the agent in `slot`.
pub fn agent_switch(slot: usize) -> Result<Switch, HvError> {
    let slot = u64::try_from(slot).map_err(|_| HvError::InvalidArgument)?;
    hypercall(Hypercall::AgentSwitch, &mut [Arg::Val(slot)]).map(|[x1, x2, _]| Switch {
        depart: x1 == rvm_abi::hypercall::agent_switch::DEPART,
        listed: usize::try_from(x2).unwrap_or(0),
    })
}

impl HostCalls for El1Host {
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError> {
        hypercall(Hypercall::ConsoleWrite, &mut [Arg::In(text)]).map(drop)
    }

    fn channel_send(&mut self, channel: CapHandle, message: &[u8]) -> Result<(), HvError> {
        hypercall(
            Hypercall::ChannelSend,
            &mut [Arg::Val(channel.to_raw()), Arg::In(message)],
        )
        .map(drop)
    }

    fn channel_recv(&mut self, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError> {
        let cap = buf.len();
        let [n, _, _] = hypercall(
            Hypercall::ChannelRecv,
            &mut [Arg::Val(channel.to_raw()), Arg::Out(buf)],
        )?;
        filled(n, cap)
    }

    fn channel_wait(&mut self, channel: CapHandle, buf: &mut [u8], timeout_ns: u64) -> Result<usize, HvError> {
        let cap = buf.len();
        let timeout_ns = if self.may_wait { timeout_ns } else { 0 };
        let [n, _, _] = hypercall(
            Hypercall::ChannelWait,
            &mut [Arg::Val(channel.to_raw()), Arg::Out(buf), Arg::Val(timeout_ns)],
        )?;
        filled(n, cap)
    }

    fn wait_any(&mut self, channels: &[CapHandle], timeout_ns: u64) -> Result<usize, HvError> {
        let mut list = [0u8; 16 * 8];
        let n = channels.len();
        if n > 16 {
            return Err(HvError::InvalidArgument);
        }
        for (slot, h) in list.chunks_exact_mut(8).zip(channels) {
            slot.copy_from_slice(&h.to_raw().to_le_bytes());
        }
        let timeout_ns = if self.may_wait { timeout_ns } else { 0 };
        let [i, _, _] = hypercall(
            Hypercall::WaitAny,
            &mut [Arg::InPtr((n > 0).then_some(&list[..n * 8])), Arg::Val(n as u64), Arg::Val(timeout_ns)],
        )?;
        usize::try_from(i).ok().filter(|&i| i < n).ok_or(HvError::InvalidArgument)
    }

    fn state_stage(&mut self, store: CapHandle, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        hypercall(
            Hypercall::StateStage,
            &mut [Arg::Val(store.to_raw()), Arg::In(key), Arg::In(value)],
        )
        .map(drop)
    }

    fn state_validate(&mut self, store: CapHandle) -> Result<(), HvError> {
        hypercall(Hypercall::StateValidate, &mut [Arg::Val(store.to_raw())]).map(drop)
    }

    fn state_commit(&mut self, store: CapHandle) -> Result<(), HvError> {
        hypercall(Hypercall::StateCommit, &mut [Arg::Val(store.to_raw())]).map(drop)
    }

    fn state_get(
        &mut self,
        store: CapHandle,
        key: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, HvError> {
        // The value's full length comes back even when it exceeds `buf`.
        let [n, _, _] = hypercall(
            Hypercall::StateGet,
            &mut [Arg::Val(store.to_raw()), Arg::In(key), Arg::Out(buf)],
        )?;
        as_len(n)
    }

    fn clock_read(&mut self) -> Result<u64, HvError> {
        hypercall(Hypercall::ClockRead, &mut []).map(|[ns, _, _]| ns)
    }

    fn yield_now(&mut self) -> Result<(), HvError> {
        hypercall(Hypercall::Yield, &mut []).map(drop)
    }

    fn cap_derive(&mut self, r: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        let [h, _, _] = hypercall(
            Hypercall::CapDerive,
            &mut [
                Arg::Val(r.parent.to_raw()),
                Arg::Val(u64::from(r.target_partition)),
                Arg::Val(u64::from(r.rights.bits())),
                Arg::Val(r.expiry_ns),
                Arg::InPtr(r.proof),
                Arg::Val(r.nonce),
            ],
        )?;
        CapHandle::from_raw(h).ok_or(HvError::BadHandle)
    }

    fn cap_revoke(
        &mut self,
        handle: CapHandle,
        proof: Option<&[u8]>,
        nonce: u64,
    ) -> Result<(), HvError> {
        // x2-x4 are unused by CapRevoke; the proof and nonce are x5 and x6.
        hypercall(
            Hypercall::CapRevoke,
            &mut [
                Arg::Val(handle.to_raw()),
                Arg::Val(0),
                Arg::Val(0),
                Arg::Val(0),
                Arg::InPtr(proof),
                Arg::Val(nonce),
            ],
        )
        .map(drop)
    }

    fn prove(
        &mut self,
        handle: CapHandle,
        out: &mut [u8; PROVE_BUFFER_LEN],
    ) -> Result<(), HvError> {
        hypercall(
            Hypercall::Prove,
            &mut [Arg::Val(handle.to_raw()), Arg::OutPtr(out)],
        )
        .map(drop)
    }

    fn tool_call(
        &mut self,
        name: &[u8],
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, HvError> {
        // The partition is parked until the host answers (or the deadline
        // passes); x1 is the length of the response written.
        let cap = response.len();
        let [n, _, _] = hypercall(
            Hypercall::ToolCall,
            &mut [Arg::In(name), Arg::In(request), Arg::Out(response)],
        )?;
        filled(n, cap)
    }

    fn idle(&mut self, snapshot_id: u64) -> Result<bool, HvError> {
        // Asked with a snapshot id, the call returns only if a message
        // arrived meanwhile: asleep, this partition is recreated instead.
        hypercall(Hypercall::Idle, &mut [Arg::Val(snapshot_id)]).map(|[may, _, _]| may == 1)
    }

    fn snapshot(&mut self, header: &[u8], memory: &[u8]) -> Result<SnapshotReceipt, HvError> {
        let before = crate::arch::bench::now_ns();
        let result = hypercall(
            Hypercall::Snapshot,
            &mut [Arg::In(header), Arg::In(memory)],
        );
        let ns = crate::arch::bench::now_ns().wrapping_sub(before);
        let len = header.len() + memory.len();
        match result {
            Ok([id, lo, hi]) => {
                let mut hash_prefix = [0u8; 16];
                hash_prefix[..8].copy_from_slice(&lo.to_le_bytes());
                hash_prefix[8..].copy_from_slice(&hi.to_le_bytes());
                crate::el1_println!(
                    "runtime: snapshot {id} of {len} bytes handed over in {ns} ns, state hash {:016x}{:016x}",
                    u64::from_be_bytes(lo.to_le_bytes()),
                    u64::from_be_bytes(hi.to_le_bytes())
                );
                Ok(SnapshotReceipt { id, hash_prefix })
            }
            Err(e) => {
                crate::el1_println!("runtime: snapshot of {len} bytes refused: {}", e.name());
                Err(e)
            }
        }
    }
}
