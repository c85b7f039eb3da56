//! `witness replay` on the host, against a synthetic run of the real packet
//! agent (issue 6, scenario 1, without QEMU): a small emulation of the
//! kernel's side of the hypercalls the agent makes writes a chained witness
//! log and an input journal exactly as the hypervisor defines them
//! (`rvm_abi::journal`), including an F1 restart and an F2 rollback to the
//! turn-250 snapshot. The replay must reproduce every state hash, and
//! name the first record a tampered journal or log breaks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use rvm_abi::bootinfo::{exit, HandleInfo};
use rvm_abi::journal::{self, Entry};
use rvm_abi::recovery::{class, trigger, RecoveryArgs, StateEncoder};
use rvm_abi::witness::{flags, KernelEvent, Outcome};
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, WitnessOp, WitnessRecord};
use rvm_agent_engine::{
    Agent, AgentConfig, SnapshotReceipt, DeriveRequest, FuelPolicy, HandleList, HostCalls,
    RunOutcome,
};
use rvm_cap::claim;
use rvm_loader::replay::{self, ReplayFailure, ReplayInput};
use sha2::{Digest, Sha256};

const LOG: u32 = 1;
const PAGES: u32 = 16;
const TURNS: u32 = 500;

/// The packet agent's module (prebuilt under `RVM_AGENT_WASM_DIR`, or built
/// for wasm32 into this test's own target directory).
fn packet_wasm() -> Vec<u8> {
    agent_wasm("rvm-agent-packet")
}

/// Agent package `package`'s module, as [`packet_wasm`] finds it.
fn agent_wasm(package: &str) -> Vec<u8> {
    let file = format!("{}.wasm", package.replace('-', "_"));
    if let Some(dir) = std::env::var_os("RVM_AGENT_WASM_DIR") {
        let path = PathBuf::from(dir).join(&file);
        return std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wasm-agents");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            package,
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap_or_else(|e| panic!("run cargo to build {package}: {e}"));
    assert!(status.success(), "{package} builds");
    std::fs::read(target.join("wasm32-unknown-unknown/release").join(file))
        .expect("the built module")
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn prefix(h: &[u8; 32]) -> [u8; 16] {
    let mut p = [0u8; 16];
    p.copy_from_slice(&h[..16]);
    p
}

/// A committed store's items.
type Items = BTreeMap<Vec<u8>, Vec<u8>>;

/// The kernel's side of one partition, as the hypervisor writes it: a
/// chained log, a journal, a state store, snapshots, and a source that
/// answers the agent's requests on its channel.
struct Kernel {
    records: Vec<[u8; 64]>,
    head: [u8; 32],
    journal: Vec<Entry>,
    committed: Items,
    staged: Vec<(Vec<u8>, Vec<u8>)>,
    snapshots: BTreeMap<u64, (Vec<u8>, Items)>,
    inbox: Vec<Vec<u8>>,
    /// Requests answered with `WouldBlock` once first (every 7th).
    requests: u32,
    /// Faults the source sends past the last packet.
    faults_left: u8,
    channel: CapHandle,
    store: CapHandle,
}

/// A fake guest address for a buffer (the replay compares lengths and
/// bytes, never addresses).
const IPA: u64 = 0x4000_0000;

impl Kernel {
    fn new(faults: u8) -> Self {
        Self {
            records: Vec::new(),
            head: [0; 32],
            journal: Vec::new(),
            committed: BTreeMap::new(),
            staged: Vec::new(),
            snapshots: BTreeMap::new(),
            inbox: Vec::new(),
            requests: 0,
            faults_left: faults,
            channel: CapHandle::from_raw(0x1_0000).unwrap(),
            store: CapHandle::from_raw(0x1_0001).unwrap(),
        }
    }

    fn handles(&self) -> Vec<HandleInfo> {
        vec![
            HandleInfo {
                raw: self.channel.to_raw(),
                kind: ObjectKind::Channel as u8,
                rights: 3,
                agent: 0,
            },
            HandleInfo {
                raw: self.store.to_raw(),
                kind: ObjectKind::StateStore as u8,
                rights: 3,
                agent: 0,
            },
        ]
    }

    fn append(&mut self, op: WitnessOp, outcome: Outcome, args: [u8; 16]) -> u64 {
        self.append_flagged(op, outcome, args, 0)
    }

    fn append_flagged(
        &mut self,
        op: WitnessOp,
        outcome: Outcome,
        args: [u8; 16],
        extra: u16,
    ) -> u64 {
        let mut r = WitnessRecord::new(op, outcome, LOG);
        r.seq = self.records.len() as u64;
        r.args = args;
        r.prev = prefix(&self.head);
        r.flags |= extra;
        if matches!(op, WitnessOp::Call(_)) {
            r.flags |= flags::JOURNALED;
        }
        let b = r.to_bytes();
        self.head = sha(&[&self.head, &b]);
        self.records.push(b);
        r.seq
    }

    fn event(&mut self, e: KernelEvent, args: [u8; 16]) -> u64 {
        self.append(WitnessOp::Event(e), Outcome::Done, args)
    }

    /// Witness and journal one call.
    fn call(
        &mut self,
        call: Hypercall,
        regs: [u64; 6],
        result: Result<[u64; 3], HvError>,
        data: &[u8],
    ) {
        self.call_flagged(call, regs, result, data, 0);
    }

    /// [`Kernel::call`], the record carrying `extra` flags too.
    fn call_flagged(
        &mut self,
        call: Hypercall,
        regs: [u64; 6],
        result: Result<[u64; 3], HvError>,
        data: &[u8],
        extra: u16,
    ) {
        let outcome = match result {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Denied(e),
        };
        let args = prefix(&sha(&[&journal::regs_bytes(&regs), data]));
        let seq = self.append_flagged(WitnessOp::Call(call), outcome, args, extra);
        let (status, results) = match result {
            Ok(r) => (0, r),
            Err(e) => (e.code(), [0; 3]),
        };
        self.journal.push(Entry::Call {
            seq,
            regs,
            status,
            results,
            data: data.to_vec(),
        });
    }

    fn start(&mut self) {
        let handles = self.handles();
        let mut input = Vec::new();
        journal::start_digest_input(&mut |b: &[u8]| input.extend_from_slice(b), &handles);
        let seq = self.event(KernelEvent::PartitionStart, prefix(&sha(&[&input])));
        self.journal.push(Entry::Start { seq, handles });
    }

    /// What the runtime writes when its agent ends: a console line and `Exit`.
    fn runtime_exit(&mut self, line: &str, code: u64) {
        let text = format!("runtime: {line}\n");
        self.call(
            Hypercall::ConsoleWrite,
            [IPA, text.len() as u64, 0, 0, 0, 0],
            Ok([text.len() as u64, 0, 0]),
            text.as_bytes(),
        );
        self.call(Hypercall::Exit, [code, 0, 0, 0, 0, 0], Ok([0; 3]), &[]);
    }

    fn recover(&mut self, event: KernelEvent, class: u8, snapshot_id: u64) {
        if let Some((_, store)) = self
            .snapshots
            .get(&snapshot_id)
            .filter(|_| class == class::ROLLBACK)
        {
            self.committed = store.clone();
        }
        self.staged.clear();
        let a = RecoveryArgs {
            class,
            trigger: trigger::TRAP,
            committed_items: self.committed.len() as u32,
            snapshot_id,
        };
        self.event(event, a.to_bytes());
    }

    /// The source's answer to request `k`.
    fn answer(&mut self, k: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(72);
        let tag: &[u8; 2] = if k <= TURNS {
            b"PK"
        } else if self.faults_left > 0 {
            self.faults_left -= 1;
            b"FT"
        } else {
            b"EN"
        };
        m.extend_from_slice(tag);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&k.to_le_bytes());
        if k <= TURNS {
            m.extend((0..64u32).map(|i| (k.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8));
        }
        m
    }
}

impl HostCalls for Kernel {
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError> {
        self.call(
            Hypercall::ConsoleWrite,
            [IPA, text.len() as u64, 0, 0, 0, 0],
            Ok([text.len() as u64, 0, 0]),
            text,
        );
        Ok(())
    }

    fn channel_send(&mut self, channel: CapHandle, message: &[u8]) -> Result<(), HvError> {
        let regs = [channel.to_raw(), IPA, message.len() as u64, 0, 0, 0];
        self.call(
            Hypercall::ChannelSend,
            regs,
            Ok([message.len() as u64, 0, 0]),
            message,
        );
        if message.len() == 8 && &message[..2] == b"RQ" {
            let k = u32::from_le_bytes([message[4], message[5], message[6], message[7]]);
            let answer = self.answer(k);
            self.inbox.push(answer);
        }
        Ok(())
    }

    fn channel_recv(&mut self, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError> {
        let regs = [channel.to_raw(), IPA, buf.len() as u64, 0, 0, 0];
        self.requests += 1;
        if self.inbox.is_empty() || self.requests.is_multiple_of(7) {
            self.call(Hypercall::ChannelRecv, regs, Err(HvError::WouldBlock), &[]);
            return Err(HvError::WouldBlock);
        }
        let m = self.inbox.remove(0);
        self.call(Hypercall::ChannelRecv, regs, Ok([m.len() as u64, 0, 0]), &m);
        buf[..m.len()].copy_from_slice(&m);
        Ok(m.len())
    }

    fn channel_wait(&mut self, channel: CapHandle, buf: &mut [u8], timeout_ns: u64) -> Result<usize, HvError> {
        let regs = [channel.to_raw(), IPA, buf.len() as u64, timeout_ns, 0, 0];
        self.requests += 1;
        if self.inbox.is_empty() {
            self.call(Hypercall::ChannelWait, regs, Err(HvError::WouldBlock), &[]);
            return Err(HvError::WouldBlock);
        }
        let m = self.inbox.remove(0);
        self.call(Hypercall::ChannelWait, regs, Ok([m.len() as u64, 1_000, 0]), &m);
        buf[..m.len()].copy_from_slice(&m);
        Ok(m.len())
    }

    fn wait_any(&mut self, channels: &[CapHandle], timeout_ns: u64) -> Result<usize, HvError> {
        let list: Vec<u8> = channels.iter().flat_map(|h| h.to_raw().to_le_bytes()).collect();
        let regs = [IPA, channels.len() as u64, timeout_ns, 0, 0, 0];
        if self.inbox.is_empty() {
            self.call(Hypercall::WaitAny, regs, Err(HvError::WouldBlock), &list);
            return Err(HvError::WouldBlock);
        }
        self.call(Hypercall::WaitAny, regs, Ok([0, 0, 0]), &list);
        Ok(0)
    }

    fn state_stage(&mut self, store: CapHandle, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        let regs = [
            store.to_raw(),
            IPA,
            key.len() as u64,
            IPA + 0x100,
            value.len() as u64,
            0,
        ];
        self.staged.push((key.to_vec(), value.to_vec()));
        self.call(
            Hypercall::StateStage,
            regs,
            Ok([self.staged.len() as u64, 0, 0]),
            &[key, value].concat(),
        );
        Ok(())
    }

    fn state_validate(&mut self, store: CapHandle) -> Result<(), HvError> {
        self.call(
            Hypercall::StateValidate,
            [store.to_raw(), 0, 0, 0, 0, 0],
            Ok([self.staged.len() as u64, self.committed.len() as u64, 0]),
            &[],
        );
        Ok(())
    }

    fn state_commit(&mut self, store: CapHandle) -> Result<(), HvError> {
        let n = self.staged.len() as u64;
        for (k, v) in self.staged.drain(..) {
            self.committed.insert(k, v);
        }
        self.call(
            Hypercall::StateCommit,
            [store.to_raw(), 0, 0, 0, 0, 0],
            Ok([n, self.committed.len() as u64, 0]),
            &[],
        );
        Ok(())
    }

    fn state_get(
        &mut self,
        store: CapHandle,
        key: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, HvError> {
        let regs = [
            store.to_raw(),
            IPA,
            key.len() as u64,
            IPA + 0x100,
            buf.len() as u64,
            0,
        ];
        match self.committed.get(key).cloned() {
            None => {
                self.call(
                    Hypercall::StateGet,
                    regs,
                    Err(HvError::InvalidArgument),
                    key,
                );
                Err(HvError::InvalidArgument)
            }
            Some(v) => {
                self.call(
                    Hypercall::StateGet,
                    regs,
                    Ok([v.len() as u64, 0, 0]),
                    &[key, &v].concat(),
                );
                buf[..v.len()].copy_from_slice(&v);
                Ok(v.len())
            }
        }
    }

    fn clock_read(&mut self) -> Result<u64, HvError> {
        let now = 1_000 * self.records.len() as u64;
        self.call(
            Hypercall::ClockRead,
            [0; 6],
            Ok([now, 0, 0]),
            &now.to_le_bytes(),
        );
        Ok(now)
    }

    fn yield_now(&mut self) -> Result<(), HvError> {
        Ok(())
    }

    fn cap_derive(&mut self, _: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        Err(HvError::NotSupported)
    }

    fn cap_revoke(&mut self, _: CapHandle, _: Option<&[u8]>, _: u64) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }

    fn prove(&mut self, _: CapHandle, _: &mut [u8; 96]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }

    /// The kernel's side of a tool call under the claims `Bash(echo *)`
    /// and `mcp__demo__*`, with [`host_tool`] as the host: the call's
    /// record (name ‖ request), then, when it was allowed, its `ANSWER`
    /// record (the response written).
    fn tool_call(
        &mut self,
        name: &[u8],
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, HvError> {
        let regs = [
            IPA,
            name.len() as u64,
            IPA + 0x100,
            request.len() as u64,
            IPA + 0x1000,
            response.len() as u64,
        ];
        let tool = std::str::from_utf8(name)
            .ok()
            .filter(|t| claim::valid_tool(t));
        let Some(tool) = tool else {
            self.call(
                Hypercall::ToolCall,
                regs,
                Err(HvError::InvalidArgument),
                &[name, request].concat(),
            );
            return Err(HvError::InvalidArgument);
        };
        let allowed = ["Bash(echo *)", "mcp__demo__*"]
            .iter()
            .any(|p| claim::parse(p).unwrap().allows(tool, request).is_ok());
        if !allowed {
            self.call(
                Hypercall::ToolCall,
                regs,
                Err(HvError::NoRights),
                &[name, request].concat(),
            );
            return Err(HvError::NoRights);
        }
        self.call(
            Hypercall::ToolCall,
            regs,
            Ok([0; 3]),
            &[name, request].concat(),
        );
        match host_tool(tool, request) {
            Ok(mut answer) => {
                answer.truncate(response.len());
                let n = answer.len();
                self.call_flagged(
                    Hypercall::ToolCall,
                    regs,
                    Ok([n as u64, 0, 0]),
                    &answer,
                    flags::ANSWER,
                );
                response[..n].copy_from_slice(&answer);
                Ok(n)
            }
            Err(e) => {
                self.call_flagged(Hypercall::ToolCall, regs, Err(e), &[], flags::ANSWER);
                Err(e)
            }
        }
    }

    fn snapshot(&mut self, header: &[u8], memory: &[u8]) -> Result<SnapshotReceipt, HvError> {
        let mut h = Sha256::new();
        {
            let mut e =
                StateEncoder::new(|b: &[u8]| h.update(b), (header.len() + memory.len()) as u64);
            e.image(header);
            e.image(memory);
            e.items(self.committed.len() as u64);
            for (k, v) in &self.committed {
                e.item(k, v);
            }
        }
        let hash: [u8; 32] = h.finalize().into();
        let id = self.snapshots.len() as u64 + 1;
        let regs = [
            IPA,
            header.len() as u64,
            IPA + 0x1000,
            memory.len() as u64,
            0,
            0,
        ];
        let p = prefix(&hash);
        let lo = u64::from_le_bytes(p[..8].try_into().unwrap());
        let hi = u64::from_le_bytes(p[8..].try_into().unwrap());
        self.call(Hypercall::Snapshot, regs, Ok([id, lo, hi]), &hash);
        self.event(KernelEvent::SnapshotTaken, p);
        self.snapshots
            .insert(id, ([header, memory].concat(), self.committed.clone()));
        Ok(SnapshotReceipt { id, hash_prefix: p })
    }
}

/// What the host answers an allowed tool call with: `Bash` runs `echo`
/// (its JSON answer, stdout the words after `echo`), `mcp__demo__sleep`
/// times out, `mcp__demo__echo` and `mcp__demo__add` answer their
/// arguments wrapped, and the rest fails.
fn host_tool(tool: &str, request: &[u8]) -> Result<Vec<u8>, HvError> {
    match tool {
        "Bash" => {
            let words: Vec<&str> = claim::command_words(request).unwrap().collect();
            let stdout = format!("{}\n", words[1..].join(" "));
            Ok(format!("{{\"exit_code\":0,\"stdout\":{stdout:?},\"stderr\":\"\",\"truncated\":false,\"timed_out\":false}}").into_bytes())
        }
        "mcp__demo__echo" | "mcp__demo__add" => Ok([&b"{\"result\":"[..], request, b"}"].concat()),
        "mcp__demo__sleep" => Err(HvError::TimedOut),
        _ => Err(HvError::ToolFailed),
    }
}

struct Recorded {
    records: Vec<[u8; 64]>,
    journal: Vec<Entry>,
    hashes: Vec<[u8; 16]>,
}

/// Scenario 1 against the emulated kernel: 500 turns with a snapshot
/// after turn 250, then three faults (F1, F1, F2 back to snapshot 1),
/// turns 251..=500 again, the end (and its snapshot).
fn record(wasm: &[u8]) -> Recorded {
    let mut kernel = Kernel::new(3);
    kernel.start();
    let config = |k: &Kernel| AgentConfig {
        wasm_pages: PAGES,
        fuel: FuelPolicy::Unmetered,
        handles: HandleList::new(k.handles()),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    let mut resume: Option<Vec<u8>> = None;
    let mut traps = 0;
    loop {
        let cfg = config(&kernel);
        let mut agent = Agent::load(wasm, cfg, kernel).expect("the packet agent loads");
        if let Some(image) = resume.take() {
            agent.restore(&image).expect("the snapshot restores");
        }
        let report = agent.run();
        kernel = agent.into_host();
        match report.outcome {
            RunOutcome::Finished { code: 0 } => {
                kernel.runtime_exit("agent finished with code 0", 0);
                kernel.event(KernelEvent::PartitionExit, [0; 16]);
                break;
            }
            RunOutcome::Trapped(_) => {
                traps += 1;
                kernel.runtime_exit("agent trapped", exit::TRAP);
                if traps < 3 {
                    kernel.recover(KernelEvent::RecoverRestart, class::RESTART, 0);
                } else {
                    kernel.recover(KernelEvent::RecoverRollback, class::ROLLBACK, 1);
                    resume = Some(kernel.snapshots[&1].0.clone());
                }
            }
            other => panic!("unexpected end of the recorded run: {other:?}"),
        }
    }
    let hashes = kernel
        .records
        .iter()
        .map(|b| WitnessRecord::from_bytes(b).unwrap())
        .filter(|r| r.op == KernelEvent::SnapshotTaken as u16)
        .map(|r| r.args)
        .collect();
    Recorded {
        records: kernel.records,
        journal: kernel.journal,
        hashes,
    }
}

fn input<'a>(wasm: &'a [u8], r: &Recorded) -> ReplayInput<'a> {
    ReplayInput {
        log: LOG,
        name: "replayed",
        records: r.records.clone(),
        journal: r.journal.clone(),
        wasm,
        wasm_pages: PAGES,
        fuel_per_slice: 0,
    }
}

#[test]
fn a_recorded_packet_run_replays_with_every_state_hash_and_tampering_is_named() {
    let wasm = packet_wasm();
    let rec = record(&wasm);
    assert_eq!(
        rec.hashes.len(),
        2,
        "snapshots after turn 250 and at the end of the re-run"
    );

    let started = Instant::now();
    let mut seen = Vec::new();
    let report = replay::replay_on_own_stack(input(&wasm, &rec), &mut |p| seen.push(p.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replay: {report}; {:.0} turns/s ({:.3} s)",
        report.turns as f64 / secs,
        secs
    );
    assert_eq!(report.snapshots_matched, 2);
    assert_eq!(
        report.instances, 4,
        "first run, two F1 restarts, one F2 rollback"
    );
    // 500 packet turns, then the re-run 251..=500 and the end turn; the
    // fault turns trap before they complete.
    assert_eq!(report.turns, 500 + 250 + 1);
    assert!(!report.log_ended_mid_run);
    assert_eq!(
        seen.iter()
            .filter(|p| matches!(p, replay::Progress::Snapshot { .. }))
            .count(),
        2
    );

    // One received byte changed in the journal: its binding fails there.
    let mut tampered = input(&wasm, &rec);
    let (i, seq) = tampered
        .journal
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            Entry::Call { seq, data, .. } if data.len() == 72 && seq > &5000 => Some((i, *seq)),
            _ => None,
        })
        .expect("a received packet late in the run");
    if let Entry::Call { data, .. } = &mut tampered.journal[i] {
        data[20] ^= 0x40;
    }
    let err = replay::replay_on_own_stack(tampered, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ReplayFailure::Tampered { seq: s, .. } if s == seq),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);

    // The same change made consistently (journal entry, record digest and
    // chain rewritten): the bindings hold, but the agent, fed the forged
    // packet of turn 1, stages other bytes than the log says it did.
    let mut forged = input(&wasm, &rec);
    let first_packet = forged
        .journal
        .iter()
        .position(
            |e| matches!(e, Entry::Call { data, .. } if data.len() == 72 && &data[..2] == b"PK"),
        )
        .unwrap();
    let Entry::Call {
        seq, regs, data, ..
    } = &mut forged.journal[first_packet]
    else {
        unreachable!()
    };
    data[20] ^= 0x40;
    let new_args = prefix(&sha(&[&journal::regs_bytes(regs), data]));
    let seq = *seq;
    let mut r = WitnessRecord::from_bytes(&forged.records[seq as usize]).unwrap();
    r.args = new_args;
    forged.records[seq as usize] = r.to_bytes();
    let mut head = [0u8; 32];
    for b in forged.records.iter_mut() {
        let mut r = WitnessRecord::from_bytes(b).unwrap();
        r.prev = prefix(&head);
        *b = r.to_bytes();
        head = sha(&[&head, b]);
    }
    let err = replay::replay_on_own_stack(forged, &mut |_| {}).unwrap_err();
    match &err {
        ReplayFailure::Diverged { turn, expected, .. } => {
            assert_eq!(*turn, 1, "{err}");
            assert!(expected.starts_with("staged item"), "{err}");
        }
        other => panic!("expected a divergence, got {other}"),
    }

    // A dropped entry is named at the record that says it has one.
    let mut dropped = input(&wasm, &rec);
    let gone = dropped.journal.remove(4000).seq();
    let err = replay::replay_on_own_stack(dropped, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ReplayFailure::Tampered { seq, .. } if seq == gone),
        "{err}"
    );

    // Without its journal the replay refuses clearly.
    let mut bare = input(&wasm, &rec);
    bare.journal.clear();
    let err = replay::replay_on_own_stack(bare, &mut |_| {}).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
}

/// The toolbox agent's run against the emulated kernel: its tool calls,
/// allowed, refused and timed out, then its commit of the echo's response.
fn record_toolbox(wasm: &[u8]) -> Recorded {
    let mut kernel = Kernel::new(0);
    kernel.start();
    let cfg = AgentConfig {
        wasm_pages: PAGES,
        fuel: FuelPolicy::Unmetered,
        handles: HandleList::new(kernel.handles()),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    let mut agent = Agent::load(wasm, cfg, kernel).expect("the toolbox agent loads");
    let report = agent.run();
    let mut kernel = agent.into_host();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    kernel.runtime_exit("agent finished with code 0", 0);
    kernel.event(KernelEvent::PartitionExit, [0; 16]);
    Recorded {
        records: kernel.records,
        journal: kernel.journal,
        hashes: Vec::new(),
    }
}

/// Every record rechained after a change (its `prev` links rewritten).
fn rechain(records: &mut [[u8; 64]]) {
    let mut head = [0u8; 32];
    for b in records.iter_mut() {
        let mut r = WitnessRecord::from_bytes(b).unwrap();
        r.prev = prefix(&head);
        *b = r.to_bytes();
        head = sha(&[&head, b]);
    }
}

#[test]
fn a_recorded_toolbox_run_replays_its_tool_calls_from_the_answers_without_running_a_tool() {
    let wasm = agent_wasm("rvm-agent-toolbox");
    // The agent runs on a stack of the replay's size (its 1 KiB response
    // buffers and an unoptimised engine outgrow a test thread's 2 MiB).
    let rec = {
        let wasm = wasm.clone();
        std::thread::Builder::new()
            .stack_size(replay::REPLAY_STACK_BYTES)
            .spawn(move || record_toolbox(&wasm))
            .unwrap()
            .join()
            .unwrap()
    };
    let records: Vec<WitnessRecord> = rec
        .records
        .iter()
        .map(|b| WitnessRecord::from_bytes(b).unwrap())
        .collect();
    let tool_records = |answer: bool| {
        records
            .iter()
            .filter(|r| {
                r.op == Hypercall::ToolCall as u16 && (r.flags & flags::ANSWER != 0) == answer
            })
            .count()
    };
    assert_eq!(tool_records(false), 9, "one record per call");
    assert_eq!(
        tool_records(true),
        5,
        "an answer per allowed call: echo, inject, mcp, mcp-add, slow"
    );

    let report = replay::replay_on_own_stack(input(&wasm, &rec), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.instances, 1);
    assert!(!report.log_ended_mid_run);

    // The echo's answer changed consistently (entry, digest, chain): the
    // bindings hold, but the agent, handed the forged response, prints
    // another line than the log says it did.
    let mut forged = input(&wasm, &rec);
    let at = forged
        .journal
        .iter()
        .position(|e| matches!(e, Entry::Call { data, .. } if data.windows(14).any(|w| w == b"hello-from-rvm") && data.starts_with(b"{")))
        .expect("the echo's answer");
    let Entry::Call {
        seq, regs, data, ..
    } = &mut forged.journal[at]
    else {
        unreachable!()
    };
    let i = data.windows(5).position(|w| w == b"hello").unwrap();
    data[i] = b'j';
    let seq = *seq;
    let mut r = WitnessRecord::from_bytes(&forged.records[seq as usize]).unwrap();
    assert_ne!(r.flags & flags::ANSWER, 0);
    r.args = prefix(&sha(&[&journal::regs_bytes(regs), data]));
    forged.records[seq as usize] = r.to_bytes();
    rechain(&mut forged.records);
    let err = replay::replay_on_own_stack(forged, &mut |_| {}).unwrap_err();
    match &err {
        ReplayFailure::Diverged { expected, .. } => {
            assert!(
                expected.starts_with("console text") && expected.contains("hello-from-rvm"),
                "{err}"
            )
        }
        other => panic!("expected a divergence, got {other}"),
    }

    // An answer record without its flag: the replay finds no answer where
    // the agent waits for one.
    let mut unflagged = input(&wasm, &rec);
    let first_answer = records
        .iter()
        .find(|r| r.op == Hypercall::ToolCall as u16 && r.flags & flags::ANSWER != 0)
        .unwrap()
        .seq;
    let mut r = WitnessRecord::from_bytes(&unflagged.records[first_answer as usize]).unwrap();
    r.flags &= !flags::ANSWER;
    unflagged.records[first_answer as usize] = r.to_bytes();
    rechain(&mut unflagged.records);
    let err = replay::replay_on_own_stack(unflagged, &mut |_| {}).unwrap_err();
    match &err {
        ReplayFailure::Diverged { seq, got, .. } => {
            assert_eq!(*seq, first_answer, "{err}");
            assert!(
                got.contains("an answer record after the ToolCall call"),
                "{err}"
            );
        }
        other => panic!("expected a divergence, got {other}"),
    }

    // A request the agent did not make: the record's name and request differ.
    let mut other = input(&wasm, &rec);
    let first_call = first_answer - 1;
    let at = other
        .journal
        .iter()
        .position(|e| e.seq() == first_call)
        .unwrap();
    let Entry::Call { regs, data, .. } = &mut other.journal[at] else {
        unreachable!()
    };
    let i = data.windows(4).position(|w| w == b"echo").unwrap();
    data[i] = b'E';
    let mut r = WitnessRecord::from_bytes(&other.records[first_call as usize]).unwrap();
    r.args = prefix(&sha(&[&journal::regs_bytes(regs), data]));
    other.records[first_call as usize] = r.to_bytes();
    rechain(&mut other.records);
    let err = replay::replay_on_own_stack(other, &mut |_| {}).unwrap_err();
    match &err {
        ReplayFailure::Diverged { seq, expected, .. } => {
            assert_eq!(*seq, first_call, "{err}");
            assert!(expected.starts_with("tool call"), "{err}");
        }
        other => panic!("expected a divergence, got {other}"),
    }
}
