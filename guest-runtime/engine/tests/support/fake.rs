//! A fake hypervisor: partitions with capability tables, channels with a
//! bounded queue per direction, staged/committed state stores, consoles, a
//! clock, and a yield counter that can bound a run.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use rvm_abi::bootinfo::HandleInfo;
use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::{CapHandle, HvError, ObjectKind, Rights};
use rvm_agent_engine::{SnapshotReceipt, DeriveRequest, HandleList, HostCalls};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Channel(usize),
    Store(usize),
}

struct ChannelObj {
    ends: [usize; 2],
    /// `queues[i]`: messages waiting for `ends[i]`.
    queues: [VecDeque<Vec<u8>>; 2],
    capacity: usize,
}

#[derive(Default)]
pub struct StoreObj {
    pub staged: BTreeMap<Vec<u8>, Vec<u8>>,
    pub validated: bool,
    pub committed: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What to do when a partition yields more often than its limit.
#[derive(Clone, Copy, Debug)]
pub enum YieldLimit {
    /// Panic: a watchdog against a test that would otherwise hang.
    Panic(u64),
    /// Refuse the yield with `QuotaExceeded`.
    Refuse(u64),
}

pub struct World {
    channels: Vec<ChannelObj>,
    pub stores: Vec<StoreObj>,
    pub consoles: Vec<String>,
    pub snapshots: Vec<Vec<Vec<u8>>>,
    /// The partition's committed store when each snapshot was taken.
    pub snapshot_stores: Vec<Vec<BTreeMap<Vec<u8>, Vec<u8>>>>,
    pub yields: Vec<u64>,
    /// Every tool call the host ran or refused: (partition, name, request).
    pub tool_calls: Vec<(usize, Vec<u8>, Vec<u8>)>,
    clock_ns: u64,
}

impl World {
    pub fn channel_backlog(&self, channel: usize) -> usize {
        self.channels[channel]
            .queues
            .iter()
            .map(VecDeque::len)
            .sum()
    }
}

/// One partition's view of the world: its table of (handle, object).
pub struct FakeHost {
    pub world: Arc<Mutex<World>>,
    pub partition: usize,
    table: Vec<(CapHandle, Object, Rights)>,
    yield_limit: YieldLimit,
}

/// Two partitions, each holding one channel end (to the other) and its own
/// state store. Returns the two hosts.
pub fn two_partitions(channel_capacity: usize, yield_limit: YieldLimit) -> (FakeHost, FakeHost) {
    let world = Arc::new(Mutex::new(World {
        channels: vec![ChannelObj {
            ends: [0, 1],
            queues: Default::default(),
            capacity: channel_capacity,
        }],
        stores: vec![StoreObj::default(), StoreObj::default()],
        consoles: vec![String::new(), String::new()],
        snapshots: vec![Vec::new(), Vec::new()],
        snapshot_stores: vec![Vec::new(), Vec::new()],
        yields: vec![0, 0],
        tool_calls: Vec::new(),
        clock_ns: 0,
    }));
    let host = |p: usize| FakeHost {
        world: world.clone(),
        partition: p,
        // Generation 1 and indexes that differ per partition, so a handle
        // from the other partition's table is not accidentally valid.
        table: vec![
            (
                CapHandle::new(2 + p as u16, 1),
                Object::Channel(0),
                Rights::READ | Rights::WRITE,
            ),
            (
                CapHandle::new(5 + p as u16, 1),
                Object::Store(p),
                Rights::READ | Rights::WRITE,
            ),
        ],
        yield_limit,
    };
    (host(0), host(1))
}

impl FakeHost {
    /// The handle list this partition's boot-info page would carry.
    pub fn handle_list(&self) -> HandleList {
        HandleList::new(
            self.table
                .iter()
                .map(|(h, o, r)| HandleInfo {
                    raw: h.to_raw(),
                    kind: match o {
                        Object::Channel(_) => ObjectKind::Channel as u8,
                        Object::Store(_) => ObjectKind::StateStore as u8,
                    },
                    rights: r.bits(),
                    agent: 0,
                })
                .collect(),
        )
    }

    pub fn console(&self) -> String {
        self.world.lock().unwrap().consoles[self.partition].clone()
    }

    fn lookup(&self, h: CapHandle, need: Rights) -> Result<Object, HvError> {
        let (_, o, r) = self
            .table
            .iter()
            .find(|(x, _, _)| x.index == h.index)
            .ok_or(HvError::BadHandle)?;
        let (_, _, _) = self
            .table
            .iter()
            .find(|(x, _, _)| *x == h)
            .ok_or(HvError::StaleHandle)?;
        if !r.contains(need) {
            return Err(HvError::NoRights);
        }
        Ok(*o)
    }

    fn channel(&self, h: CapHandle, need: Rights) -> Result<usize, HvError> {
        match self.lookup(h, need)? {
            Object::Channel(c) => Ok(c),
            Object::Store(_) => Err(HvError::BadHandle),
        }
    }

    fn store(&self, h: CapHandle, need: Rights) -> Result<usize, HvError> {
        match self.lookup(h, need)? {
            Object::Store(s) => Ok(s),
            Object::Channel(_) => Err(HvError::BadHandle),
        }
    }
}

/// The fake host's tools, under the claims `Bash(echo *)` and
/// `mcp__demo__*`: the response of an allowed call, or why it is refused.
///
/// * `Bash` runs `echo` only: its response is the JSON object a host
///   answers with, its stdout the words after `echo` joined by one space;
///   a line with a control character or a `..` path component is not
///   allowed (`NoRights`), nor any other program.
/// * `mcp__demo__echo` answers `{"echo":<its arguments>}`,
///   `mcp__demo__add` answers `{"sum":<the sum of the numbers in its
///   arguments>}`, and
///   `mcp__demo__sleep` times out (`TimedOut`); another `mcp__demo__` tool
///   fails (`ToolFailed`).
/// * A name with a character no tool name has: `InvalidArgument`.
pub fn fake_tool(name: &[u8], request: &[u8]) -> Result<Vec<u8>, HvError> {
    let name = std::str::from_utf8(name).map_err(|_| HvError::InvalidArgument)?;
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/'))
    {
        return Err(HvError::InvalidArgument);
    }
    if name == "Bash" {
        let line = std::str::from_utf8(request).map_err(|_| HvError::NoRights)?;
        if line
            .bytes()
            .any(|b| b.is_ascii_control() && b != b' ' && b != b'\t')
        {
            return Err(HvError::NoRights);
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if words.first() != Some(&"echo") || words.iter().any(|w| w.split('/').any(|p| p == "..")) {
            return Err(HvError::NoRights);
        }
        let stdout = format!("{}\n", words[1..].join(" "));
        return Ok(format!(
            "{{\"exit_code\":0,\"stdout\":{stdout:?},\"stderr\":\"\",\"truncated\":false,\"timed_out\":false}}"
        )
        .into_bytes());
    }
    match name.strip_prefix("mcp__demo__") {
        Some("echo") => Ok([&b"{\"echo\":"[..], request, b"}"].concat()),
        Some("add") => {
            let sum: u64 = String::from_utf8_lossy(request)
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
            Ok(format!("{{\"sum\":{sum}}}").into_bytes())
        }
        Some("sleep") => Err(HvError::TimedOut),
        Some(_) => Err(HvError::ToolFailed),
        None => Err(HvError::NoRights),
    }
}

impl HostCalls for FakeHost {
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError> {
        let text = std::str::from_utf8(text).map_err(|_| HvError::InvalidArgument)?;
        self.world.lock().unwrap().consoles[self.partition].push_str(text);
        Ok(())
    }

    fn channel_send(&mut self, channel: CapHandle, message: &[u8]) -> Result<(), HvError> {
        let c = self.channel(channel, Rights::WRITE)?;
        let mut w = self.world.lock().unwrap();
        let ch = &mut w.channels[c];
        let me = ch
            .ends
            .iter()
            .position(|&e| e == self.partition)
            .ok_or(HvError::BadHandle)?;
        let queue = &mut ch.queues[1 - me];
        if queue.len() >= ch.capacity {
            return Err(HvError::Full);
        }
        queue.push_back(message.to_vec());
        Ok(())
    }

    fn channel_recv(&mut self, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError> {
        let c = self.channel(channel, Rights::READ)?;
        let mut w = self.world.lock().unwrap();
        let ch = &mut w.channels[c];
        let me = ch
            .ends
            .iter()
            .position(|&e| e == self.partition)
            .ok_or(HvError::BadHandle)?;
        let queue = &mut ch.queues[me];
        let len = queue.front().ok_or(HvError::WouldBlock)?.len();
        if len > buf.len() {
            return Err(HvError::InvalidArgument);
        }
        let m = queue.pop_front().ok_or(HvError::WouldBlock)?;
        buf[..len].copy_from_slice(&m);
        Ok(len)
    }

    /// The fake world has no clock to wait on: a wait finds what a receive
    /// finds now (a deadline passing at once).
    fn channel_wait(&mut self, channel: CapHandle, buf: &mut [u8], _timeout_ns: u64) -> Result<usize, HvError> {
        self.channel_recv(channel, buf)
    }

    /// As `channel_wait`: what is there now.
    fn wait_any(&mut self, channels: &[CapHandle], _timeout_ns: u64) -> Result<usize, HvError> {
        for (i, &channel) in channels.iter().enumerate() {
            let c = self.channel(channel, Rights::READ)?;
            let w = self.world.lock().unwrap();
            let ch = &w.channels[c];
            let me = ch.ends.iter().position(|&e| e == self.partition).ok_or(HvError::BadHandle)?;
            if !ch.queues[me].is_empty() {
                return Ok(i);
            }
        }
        Err(HvError::WouldBlock)
    }

    fn state_stage(&mut self, store: CapHandle, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        let s = self.store(store, Rights::WRITE)?;
        let mut w = self.world.lock().unwrap();
        w.stores[s].staged.insert(key.to_vec(), value.to_vec());
        w.stores[s].validated = false;
        Ok(())
    }

    fn state_validate(&mut self, store: CapHandle) -> Result<(), HvError> {
        let s = self.store(store, Rights::WRITE)?;
        self.world.lock().unwrap().stores[s].validated = true;
        Ok(())
    }

    fn state_commit(&mut self, store: CapHandle) -> Result<(), HvError> {
        let s = self.store(store, Rights::WRITE)?;
        let mut w = self.world.lock().unwrap();
        let st = &mut w.stores[s];
        if !st.validated {
            return Err(HvError::ValidationFailed);
        }
        let staged = std::mem::take(&mut st.staged);
        st.committed.extend(staged);
        st.validated = false;
        Ok(())
    }

    fn state_get(
        &mut self,
        store: CapHandle,
        key: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, HvError> {
        let s = self.store(store, Rights::READ)?;
        let w = self.world.lock().unwrap();
        let v = w.stores[s]
            .committed
            .get(key)
            .ok_or(HvError::InvalidArgument)?;
        let n = v.len().min(buf.len());
        buf[..n].copy_from_slice(&v[..n]);
        Ok(v.len())
    }

    fn clock_read(&mut self) -> Result<u64, HvError> {
        let mut w = self.world.lock().unwrap();
        w.clock_ns += 1_000;
        Ok(w.clock_ns)
    }

    fn yield_now(&mut self) -> Result<(), HvError> {
        let n = {
            let mut w = self.world.lock().unwrap();
            w.yields[self.partition] += 1;
            w.yields[self.partition]
        };
        match self.yield_limit {
            YieldLimit::Panic(limit) if n > limit => {
                panic!(
                    "partition {} yielded {n} times without finishing",
                    self.partition
                )
            }
            YieldLimit::Refuse(limit) if n > limit => return Err(HvError::QuotaExceeded),
            _ => {}
        }
        std::thread::yield_now();
        Ok(())
    }

    fn cap_derive(&mut self, _request: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        Err(HvError::NotSupported)
    }

    fn cap_revoke(
        &mut self,
        _handle: CapHandle,
        _proof: Option<&[u8]>,
        _nonce: u64,
    ) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }

    fn prove(
        &mut self,
        _handle: CapHandle,
        _out: &mut [u8; PROVE_BUFFER_LEN],
    ) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }

    /// [`fake_tool`]'s answer, cut to the response buffer as a host makes
    /// it fit the capacity.
    fn tool_call(
        &mut self,
        name: &[u8],
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, HvError> {
        let mut w = self.world.lock().unwrap();
        w.tool_calls
            .push((self.partition, name.to_vec(), request.to_vec()));
        let answer = fake_tool(name, request)?;
        let n = answer.len().min(response.len());
        response[..n].copy_from_slice(&answer[..n]);
        Ok(n)
    }

    fn snapshot(&mut self, header: &[u8], memory: &[u8]) -> Result<SnapshotReceipt, HvError> {
        let mut w = self.world.lock().unwrap();
        let store = w.stores[self.partition].committed.clone();
        w.snapshot_stores[self.partition].push(store);
        let list = &mut w.snapshots[self.partition];
        list.push([header, memory].concat());
        Ok(SnapshotReceipt {
            id: list.len() as u64,
            hash_prefix: [0; 16],
        })
    }
}
