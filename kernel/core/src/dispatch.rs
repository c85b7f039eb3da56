//! Hypercall dispatch: decode, check the capability, witness, then act.
//!
//! Every privileged call — allowed or denied — appends one witness record
//! *before* it takes effect; if the record cannot be written the call fails
//! with `WitnessUnavailable` and nothing happens (fail-closed). `Null` and
//! `Yield` change no state and are not witnessed.

use alloc::vec;
use alloc::vec::Vec;

use rvm_abi::hypercall::{smccc_owner, SMCCC_OWNER_STANDARD};
use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, Outcome, Rights, WitnessOp, WitnessRecord};

use crate::addr::Ipa;
use crate::arch::Arch;
use crate::caps::Granted;
use crate::console;
use crate::guest_mem;
use crate::hypervisor::{Flow, Hypervisor};

/// Longest console write accepted in one call.
pub const MAX_CONSOLE_WRITE: u64 = 4096;

/// What a call wants witnessed about itself.
struct Witnessed {
    call: u16,
    tier: u8,
    cap: u32,
    args: [u8; 16],
}

impl Witnessed {
    fn new(call: Hypercall, regs: &[u64; 6]) -> Self {
        Self { call: call as u16, tier: 0, cap: NO_CAP, args: crate::digest::of_call(regs, &[]) }
    }

    fn granted(mut self, g: &Granted) -> Self {
        self.tier = g.tier as u8;
        self.cap = g.cap_id;
        self
    }

    fn handle(mut self, raw: u64) -> Self {
        self.cap = CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id);
        self
    }

    fn data(mut self, regs: &[u64; 6], data: &[u8]) -> Self {
        self.args = crate::digest::of_call(regs, data);
        self
    }
}

fn regs_of<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> [u64; 6] {
    let x = &hv.partitions[idx].vcpu.regs.x;
    [x[1], x[2], x[3], x[4], x[5], x[6]]
}

/// Append the call's record; `Err` if the log could not take it.
fn witness<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, outcome: Outcome) -> Result<(), HvError> {
    let p = &mut hv.partitions[idx];
    p.stats.hypercalls += 1;
    if outcome != Outcome::Done {
        p.stats.denied += 1;
    }
    let mut rec = WitnessRecord::new(WitnessOp::Call(Hypercall::Null), outcome, p.id.0);
    rec.op = w.call;
    rec.tier = w.tier;
    rec.cap = w.cap;
    rec.args = w.args;
    rec.timestamp = hv.arch.now_ns();
    let log = p.id.0;
    hv.witness.append(&mut hv.arch, log, rec).map(|_| ()).map_err(|_| HvError::WitnessUnavailable)
}

/// Witness a denial and return its status to the guest.
fn deny<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, err: HvError) -> Flow {
    let status = match witness(hv, idx, w, Outcome::Denied(err)) {
        Ok(()) => err,
        Err(e) => e,
    };
    hv.partitions[idx].vcpu.set_return(status.code(), &[]);
    Flow::Resume
}

/// Witness success, then run `apply` (which must not fail) and return its results.
fn allow<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    w: &Witnessed,
    apply: impl FnOnce(&mut Hypervisor<A>) -> [u64; 3],
) -> Flow {
    if let Err(e) = witness(hv, idx, w, Outcome::Done) {
        hv.partitions[idx].vcpu.set_return(e.code(), &[]);
        return Flow::Resume;
    }
    let results = apply(hv);
    hv.partitions[idx].vcpu.set_return(0, &results);
    Flow::Resume
}

fn read_guest<A: Arch>(hv: &Hypervisor<A>, idx: usize, ipa: u64, len: u64, max: u64) -> Result<Vec<u8>, HvError> {
    if len > max {
        return Err(HvError::InvalidArgument);
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| HvError::InvalidArgument)?];
    guest_mem::read(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(ipa), &mut buf)?;
    Ok(buf)
}

fn check<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, raw: u64, kind: ObjectKind, need: Rights) -> Result<Granted, HvError> {
    let id = hv.partitions[idx].id;
    let now = hv.arch.now_ns();
    hv.caps.check(id, raw, kind, need, now)
}

/// Handle `hvc #0` from partition `idx`.
pub(crate) fn hypercall<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Flow {
    let x0 = hv.partitions[idx].vcpu.regs.x[0];
    if u32::try_from(x0).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD) {
        return crate::psci::call(hv, idx);
    }
    let regs = regs_of(hv, idx);
    let Some(call) = Hypercall::from_function_id(x0) else {
        let w = Witnessed { call: (x0 & 0x7fff) as u16, tier: 0, cap: NO_CAP, args: crate::digest::of_call(&regs, &[]) };
        return deny(hv, idx, &w, HvError::NotSupported);
    };
    let w = Witnessed::new(call, &regs);
    match call {
        Hypercall::Null => {
            hv.partitions[idx].vcpu.set_return(0, &[]);
            Flow::Resume
        }
        Hypercall::Yield => {
            hv.partitions[idx].vcpu.set_return(0, &[]);
            Flow::Reschedule
        }
        Hypercall::ConsoleWrite => console_write(hv, idx, w, &regs),
        Hypercall::ChannelSend => channel_send(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::ChannelRecv => channel_recv(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::StateStage => state_stage(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::StateValidate | Hypercall::StateCommit => state_finish(hv, idx, call, w.handle(regs[0]), &regs),
        Hypercall::StateGet => state_get(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::CapQuery => cap_query(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::ClockRead => {
            let p = &hv.partitions[idx];
            let now = hv.arch.now_ns().saturating_sub(p.started_ns.unwrap_or(0));
            let w = w.data(&regs, &now.to_le_bytes());
            allow(hv, idx, &w, |_| [now, 0, 0])
        }
        Hypercall::Exit => {
            let code = regs[0];
            let _ = allow(hv, idx, &w, |_| [0; 3]);
            crate::psci::finish(hv, idx, code);
            Flow::Reschedule
        }
        // Not built yet: refused honestly, and witnessed like any denial.
        Hypercall::CapDerive
        | Hypercall::CapRevoke
        | Hypercall::RegionRead
        | Hypercall::RegionWrite
        | Hypercall::RegionMap
        | Hypercall::Checkpoint
        | Hypercall::Spawn
        | Hypercall::Prove
        | Hypercall::WitnessQuery => deny(hv, idx, &w, HvError::NotSupported),
    }
}

fn console_write<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let text = match read_guest(hv, idx, regs[0], regs[1], MAX_CONSOLE_WRITE) {
        Ok(t) => t,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &text);
    allow(hv, idx, &w, |hv| {
        console::guest_write(&mut hv.arch, &mut hv.partitions[idx], &text);
        [text.len() as u64, 0, 0]
    })
}

fn channel_index(g: &Granted) -> usize {
    usize::try_from(g.object).unwrap_or(usize::MAX)
}

fn channel_send<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::Channel, Rights::WRITE) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let msg = match read_guest(hv, idx, regs[1], regs[2], crate::channel::MAX_MESSAGE as u64) {
        Ok(m) => m,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &msg);
    let ch = channel_index(&g);
    let me = hv.partitions[idx].id;
    // Would the queue take it? Ask without changing anything.
    let room = hv.channels.get(ch).ok_or(HvError::BadHandle).and_then(|c| c.check_send(me, msg.len()));
    if let Err(e) = room {
        return deny(hv, idx, &w, e);
    }
    allow(hv, idx, &w, |hv| {
        let sent = hv.channels[ch].send(me, &msg);
        debug_assert!(sent.is_ok());
        [msg.len() as u64, 0, 0]
    })
}

fn channel_recv<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::Channel, Rights::READ) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let ch = channel_index(&g);
    let me = hv.partitions[idx].id;
    let len = match hv.channels.get(ch).map(|c| c.peek_len(me)) {
        None => return deny(hv, idx, &w, HvError::BadHandle),
        Some(Err(e)) => return deny(hv, idx, &w, e),
        Some(Ok(None)) => return deny(hv, idx, &w, HvError::WouldBlock),
        Some(Ok(Some(len))) => len,
    };
    if len as u64 > regs[2] {
        return deny(hv, idx, &w, HvError::InvalidArgument);
    }
    if let Err(e) = guest_mem::check_writable(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(regs[1]), len as u64) {
        return deny(hv, idx, &w, e);
    }
    let msg = match hv.channels[ch].peek(me) {
        Some(m) => m.to_vec(),
        None => return deny(hv, idx, &w, HvError::WouldBlock),
    };
    let w = w.data(regs, &msg);
    allow(hv, idx, &w, |hv| {
        let _ = hv.channels[ch].receive(me);
        let s2 = &hv.partitions[idx].stage2;
        let wrote = guest_mem::write(&mut hv.arch, s2, Ipa::new(regs[1]), &msg);
        debug_assert!(wrote.is_ok());
        [msg.len() as u64, 0, 0]
    })
}

fn store_index<A: Arch>(hv: &Hypervisor<A>, g: &Granted) -> Option<usize> {
    // A state-store object id is the id of the partition that owns it.
    let id = usize::try_from(g.object).ok()?;
    (id >= 1 && id <= hv.stores.len()).then(|| id - 1)
}

fn state_stage<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::StateStore, Rights::WRITE) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(hv, &g) else { return deny(hv, idx, &w, HvError::BadHandle) };
    let key = match read_guest(hv, idx, regs[1], regs[2], 4096) {
        Ok(k) => k,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let value = match read_guest(hv, idx, regs[3], regs[4], 1 << 16) {
        Ok(v) => v,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &[key.as_slice(), value.as_slice()].concat());
    if let Err(e) = hv.stores[s].check_stage(&key, &value) {
        return deny(hv, idx, &w, e);
    }
    allow(hv, idx, &w, |hv| {
        let staged = hv.stores[s].stage(&key, &value);
        debug_assert!(staged.is_ok());
        [hv.stores[s].staged_items() as u64, 0, 0]
    })
}

fn state_finish<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, call: Hypercall, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::StateStore, Rights::WRITE) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(hv, &g) else { return deny(hv, idx, &w, HvError::BadHandle) };
    if let Err(e) = hv.stores[s].would_validate() {
        // A failed validation discards the transaction: nothing is committed.
        let flow = deny(hv, idx, &w, e);
        let _ = hv.stores[s].validate();
        return flow;
    }
    allow(hv, idx, &w, |hv| {
        let store = &mut hv.stores[s];
        let n = if call == Hypercall::StateCommit {
            store.commit().unwrap_or(0)
        } else {
            let _ = store.validate();
            store.staged_items()
        };
        [n as u64, store.committed_items() as u64, 0]
    })
}

fn state_get<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::StateStore, Rights::READ) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(hv, &g) else { return deny(hv, idx, &w, HvError::BadHandle) };
    let key = match read_guest(hv, idx, regs[1], regs[2], 4096) {
        Ok(k) => k,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let Some(value) = hv.stores[s].get(&key).map(<[u8]>::to_vec) else {
        let w = w.data(regs, &key);
        return deny(hv, idx, &w, HvError::InvalidArgument);
    };
    if value.len() as u64 > regs[4] {
        return deny(hv, idx, &w, HvError::Full);
    }
    if let Err(e) = guest_mem::check_writable(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(regs[3]), value.len() as u64) {
        return deny(hv, idx, &w, e);
    }
    let w = w.data(regs, &[key.as_slice(), value.as_slice()].concat());
    allow(hv, idx, &w, |hv| {
        let s2 = &hv.partitions[idx].stage2;
        let wrote = guest_mem::write(&mut hv.arch, s2, Ipa::new(regs[3]), &value);
        debug_assert!(wrote.is_ok());
        [value.len() as u64, 0, 0]
    })
}

fn cap_query<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let id = hv.partitions[idx].id;
    match hv.caps.query(id, regs[0]) {
        Ok(q) => allow(hv, idx, &w, |_| [q.kind as u64, u64::from(q.rights.bits()), q.tier_mask]),
        Err(e) => deny(hv, idx, &w, e),
    }
}

