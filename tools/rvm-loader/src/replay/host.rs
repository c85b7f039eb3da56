//! The agent's hypercalls answered from the journal. Each call must be the
//! log's next call record, with the same handle, lengths and outgoing
//! bytes; the journaled status and incoming bytes are handed back. State
//! calls drive the replayed store as the kernel's verdicts say, `StateGet`
//! is checked against it, and a `Snapshot` must reproduce the state hash
//! the journal and the `SnapshotTaken` record hold. A `ToolCall` runs no
//! tool: its response is the one its answer record journaled.

use std::cell::RefCell;
use std::rc::Rc;

use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::witness::{flags, KernelEvent};
use rvm_abi::{CapHandle, HvError, Hypercall};
use rvm_agent_engine::{SnapshotReceipt, DeriveRequest, HostCalls};
use rvm_state::digest;

use super::log::{Shared, Taken};
use super::{hex, Progress, ReplayFailure};

/// The engine's host calls, answered from the journal.
pub struct ReplayHost {
    pub(super) shared: Rc<RefCell<Shared>>,
}

impl ReplayHost {
    fn call(&self) -> std::cell::RefMut<'_, Shared> {
        self.shared.borrow_mut()
    }
}

impl ReplayHost {
    /// A receive (`op`: `ChannelRecv` or `ChannelWait`) answered from the
    /// journal: the message it got, or its status.
    fn receive(&mut self, op: Hypercall, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError> {
        let mut s = self.call();
        let m = s.next(op, None)?;
        s.expect(&m, "channel handle", m.regs[0], channel.to_raw())?;
        s.expect(&m, "receive capacity", m.regs[2], buf.len() as u64)?;
        m.status()?;
        if m.data.len() > buf.len() {
            return Err(s.diverged(
                m.seq,
                format!("a message of {} bytes", m.data.len()),
                format!("room for {}", buf.len()),
            ));
        }
        buf[..m.data.len()].copy_from_slice(&m.data);
        Ok(m.data.len())
    }
}

impl HostCalls for ReplayHost {
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ConsoleWrite, Some(text))?;
        if !m.data.is_empty() && m.data != text {
            return Err(s.diverged(
                m.seq,
                format!("console text {:?}", String::from_utf8_lossy(&m.data)),
                format!("{:?}", String::from_utf8_lossy(text)),
            ));
        }
        m.status()
    }

    fn channel_send(&mut self, channel: CapHandle, message: &[u8]) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ChannelSend, None)?;
        s.expect(&m, "channel handle", m.regs[0], channel.to_raw())?;
        s.expect(&m, "message length", m.regs[2], message.len() as u64)?;
        if !m.data.is_empty() && m.data != message {
            return Err(s.diverged(
                m.seq,
                format!("message {}", hex(&m.data)),
                format!("message {}", hex(message)),
            ));
        }
        m.status()
    }

    fn channel_recv(&mut self, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError> {
        self.receive(Hypercall::ChannelRecv, channel, buf)
    }

    fn wait_any(&mut self, channels: &[CapHandle], _timeout_ns: u64) -> Result<usize, HvError> {
        let list: Vec<u8> = channels.iter().flat_map(|h| h.to_raw().to_le_bytes()).collect();
        let mut s = self.call();
        let m = s.next(Hypercall::WaitAny, None)?;
        s.expect(&m, "handle count", m.regs[1], channels.len() as u64)?;
        if !m.data.is_empty() && m.data != list {
            return Err(s.diverged(m.seq, format!("handles {}", hex(&m.data)), hex(&list)));
        }
        m.status()?;
        usize::try_from(m.results[0]).ok().filter(|&i| i < channels.len()).ok_or_else(|| {
            s.diverged(m.seq, format!("position {}", m.results[0]), format!("one of {}", channels.len()))
        })
    }

    fn channel_wait(&mut self, channel: CapHandle, buf: &mut [u8], _timeout_ns: u64) -> Result<usize, HvError> {
        // How long it waited is the runtime's and the kernel's business (a
        // runtime with several agents does not wait): the journal's answer
        // is what counts.
        self.receive(Hypercall::ChannelWait, channel, buf)
    }

    fn state_stage(&mut self, store: CapHandle, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateStage, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        s.expect(&m, "key length", m.regs[2], key.len() as u64)?;
        s.expect(&m, "value length", m.regs[4], value.len() as u64)?;
        if !m.data.is_empty() && m.data != [key, value].concat() {
            return Err(s.diverged(
                m.seq,
                format!("staged item {}", hex(&m.data)),
                format!("{}{}", hex(key), hex(value)),
            ));
        }
        m.status()?;
        s.store.stage(key, value).map_err(|e| {
            s.diverged(
                m.seq,
                "the item staged".into(),
                format!("the replayed store refusing it ({})", e.name()),
            )
        })
    }

    fn state_validate(&mut self, store: CapHandle) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateValidate, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        let r = m.status();
        if r == Err(HvError::ValidationFailed) {
            s.store.abort();
        }
        r
    }

    fn state_commit(&mut self, store: CapHandle) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateCommit, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        match m.status() {
            Ok(()) => match s.store.commit() {
                Ok(_) => Ok(()),
                Err(e) => Err(s.diverged(
                    m.seq,
                    "the transaction committed".into(),
                    format!("the replayed store refusing it ({})", e.name()),
                )),
            },
            Err(HvError::ValidationFailed) => {
                s.store.abort();
                Err(HvError::ValidationFailed)
            }
            Err(e) => Err(e),
        }
    }

    fn state_get(
        &mut self,
        store: CapHandle,
        key: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateGet, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        s.expect(&m, "key length", m.regs[2], key.len() as u64)?;
        s.expect(&m, "value capacity", m.regs[4], buf.len() as u64)?;
        if m.data.len() >= key.len() && !m.data.is_empty() && &m.data[..key.len()] != key {
            return Err(s.diverged(
                m.seq,
                format!("key {}", hex(&m.data[..key.len()])),
                format!("key {}", hex(key)),
            ));
        }
        let modelled = s.store.get(key).map(<[u8]>::to_vec);
        if let Err(e) = m.status() {
            // A key with no value is `InvalidArgument`; the model must agree.
            if e == HvError::InvalidArgument && modelled.is_some() {
                return Err(s.diverged(
                    m.seq,
                    "no committed value".into(),
                    "a value in the replayed store".into(),
                ));
            }
            return Err(e);
        }
        let value = &m.data[key.len().min(m.data.len())..];
        if modelled.as_deref() != Some(value) {
            return Err(s.diverged(
                m.seq,
                format!("committed value {}", hex(value)),
                format!(
                    "{} in the replayed store",
                    modelled.map_or("no value".into(), |v| hex(&v))
                ),
            ));
        }
        let n = value.len().min(buf.len());
        buf[..n].copy_from_slice(&value[..n]);
        Ok(value.len())
    }

    fn clock_read(&mut self) -> Result<u64, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ClockRead, None)?;
        m.status()?;
        let v = m.results[0];
        if m.data != v.to_le_bytes() {
            return Err(s.diverged(
                m.seq,
                format!("clock {}", hex(&m.data)),
                format!("result register {v}"),
            ));
        }
        Ok(v)
    }

    fn yield_now(&mut self) -> Result<(), HvError> {
        // Not witnessed; a replay that has failed stops the agent here.
        if self.call().failure.is_some() {
            Err(HvError::WitnessUnavailable)
        } else {
            Ok(())
        }
    }

    fn cap_derive(&mut self, _request: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        let mut s = self.call();
        let seq = s.cursor as u64;
        Err(s.fail(ReplayFailure::Unsupported {
            seq,
            what: "CapDerive".into(),
        }))
    }

    fn cap_revoke(
        &mut self,
        _handle: CapHandle,
        _proof: Option<&[u8]>,
        _nonce: u64,
    ) -> Result<(), HvError> {
        let mut s = self.call();
        let seq = s.cursor as u64;
        Err(s.fail(ReplayFailure::Unsupported {
            seq,
            what: "CapRevoke".into(),
        }))
    }

    fn prove(
        &mut self,
        _handle: CapHandle,
        _out: &mut [u8; PROVE_BUFFER_LEN],
    ) -> Result<(), HvError> {
        let mut s = self.call();
        let seq = s.cursor as u64;
        Err(s.fail(ReplayFailure::Unsupported {
            seq,
            what: "Prove".into(),
        }))
    }

    /// Nothing is run: the call must be the log's next `ToolCall` record
    /// with the same lengths (name, request, response capacity) and, where
    /// the kernel read them, the same name and request; when it was
    /// allowed, the response is its answer record's (the next `ToolCall`
    /// record, flagged `ANSWER`, with the same registers).
    fn tool_call(
        &mut self,
        name: &[u8],
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ToolCall, None)?;
        if m.flags & flags::ANSWER != 0 {
            return Err(s.diverged(
                m.seq,
                "the answer to a tool call".into(),
                "a new tool call".into(),
            ));
        }
        s.expect(&m, "tool name length", m.regs[1], name.len() as u64)?;
        s.expect(&m, "request length", m.regs[3], request.len() as u64)?;
        s.expect(&m, "response capacity", m.regs[5], response.len() as u64)?;
        // Empty when the call was refused before the kernel read the buffers.
        if !m.data.is_empty() && m.data != [name, request].concat() {
            return Err(s.diverged(
                m.seq,
                format!("tool call {}", hex(&m.data)),
                format!("{}{}", hex(name), hex(request)),
            ));
        }
        m.status()?;
        let a = s.answer(Hypercall::ToolCall, &m)?;
        if a.regs != m.regs {
            return Err(s.diverged(
                a.seq,
                format!("an answer to registers {:x?}", a.regs),
                format!("the tool call's {:x?}", m.regs),
            ));
        }
        a.status()?;
        if a.data.len() > response.len() {
            return Err(s.diverged(
                a.seq,
                format!("a response of {} bytes", a.data.len()),
                format!("room for {}", response.len()),
            ));
        }
        if a.results[0] != a.data.len() as u64 {
            return Err(s.diverged(
                a.seq,
                format!("a response length of {}", a.results[0]),
                format!("{} response bytes journaled", a.data.len()),
            ));
        }
        response[..a.data.len()].copy_from_slice(&a.data);
        Ok(a.data.len())
    }

    fn snapshot(&mut self, header: &[u8], memory: &[u8]) -> Result<SnapshotReceipt, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::Snapshot, None)?;
        s.expect(&m, "image header length", m.regs[1], header.len() as u64)?;
        s.expect(&m, "image memory length", m.regs[3], memory.len() as u64)?;
        m.status()?;
        let image = [header, memory].concat();
        let turn =
            rvm_agent_engine::snapshot::decode(&image).map_or(s.turn_base, |i| i.meta.turn);
        let store = s.store.snapshot();
        let hash = digest::state_hash(
            image.len() as u64,
            |feed| {
                feed(header);
                feed(memory);
            },
            &store,
        );
        if m.data != hash {
            // Taken as turn `turn` ended: the difference shows in that turn.
            let (expected, got) = (
                format!("state hash {}", hex(&m.data)),
                format!("state hash {}", hex(&hash)),
            );
            return Err(s.fail(ReplayFailure::Diverged {
                seq: m.seq,
                turn,
                expected,
                got,
            }));
        }
        // The kernel's SnapshotTaken record follows the call's.
        let i = s.cursor;
        let taken = s.records.get(i).copied();
        match taken {
            Some(r) if r.op == KernelEvent::SnapshotTaken as u16 => {
                if r.args[..] != hash[..16] {
                    let (expected, got) = (
                        format!("SnapshotTaken {}", hex(&r.args)),
                        format!("state hash {}", hex(&hash[..16])),
                    );
                    return Err(s.fail(ReplayFailure::Diverged {
                        seq: i as u64,
                        turn,
                        expected,
                        got,
                    }));
                }
                s.cursor += 1;
            }
            _ => {
                return Err(s.diverged(
                    i as u64,
                    "the log to go on".into(),
                    "a SnapshotTaken record after the Snapshot call".into(),
                ))
            }
        }
        let id = m.results[0];
        s.taken.insert(id, Taken { image, store });
        s.snapshots += 1;
        s.progress.push(Progress::Snapshot {
            id,
            turn,
            seq: m.seq,
        });
        let mut hash_prefix = [0u8; 16];
        hash_prefix.copy_from_slice(&hash[..16]);
        Ok(SnapshotReceipt { id, hash_prefix })
    }
}
