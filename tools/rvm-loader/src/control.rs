//! The control socket of a running instance, and what travels through it:
//! the operator's orders (`partition unfence|evict NAME`, `instance stop`)
//! and admissions of tenants into a running instance ([`crate::admission`]).
//!
//! A booting loader listens on `RVM_HOME/run/loader-<pid>.sock` (removed
//! when the run ends) and hands the hypervisor's input ([`Input`]: its
//! control channel, else QEMU's standard input, the PL011's receive side)
//! to the socket. One connection carries one request:
//!
//! ```text
//! server: rvm-control 1 <64 hex digits: SHA-256 of the bundle booted>
//! client: @O <nonce> <order> <partition> <signature>      (rvm_abi::frame::OrderFrame)
//!      or @A <nonce> <128 hex digits: signature> <len>    then exactly <len> bytes:
//!         an admission bundle (1 to rvm_abi::control::MAX_ADMISSION bytes)
//! server: answer <the hypervisor's console line about that nonce>
//!      or refused <why the loader will not carry it>
//!      or error <why it was not delivered>
//! ```
//!
//! The client signs with the operator key of `RVM_HOME`
//! (`keys/operator.seed`, created with the other keys at the first boot;
//! its public half travels in every bundle as `OperatorKey`): an order over
//! `OrderFrame::message`, an admission over
//! `rvm_abi::control::admission_message`; both bind the booted bundle's
//! digest, so a request is good for that running instance only. The server
//! checks the request's form, writes it into the hypervisor's input (an
//! order as its `@O` line on the UART or an `Order` frame on the channel;
//! an admission as an `Admission` frame, on the channel only: an instance
//! without one answers `refused`), and passes back the line the hypervisor
//! prints about that nonce (`rvm: order <nonce> ...`,
//! `rvm: admission <nonce> ...`). Nonces are the client's clock in
//! nanoseconds: the hypervisor refuses any nonce not above the last one it
//! accepted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use rvm_abi::bundle::PartitionDesc;
use rvm_abi::control::MAX_ADMISSION;
use rvm_abi::frame::{OrderFrame, OrderKind};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::keys::KeyRole;
use crate::model::PartitionName;

/// Protocol version in the greeting.
pub const PROTOCOL: u32 = 1;
/// Folder of the sockets under `RVM_HOME`.
pub const RUN_DIR: &str = "run";
/// How long a request waits for the hypervisor to be ready for input.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a client waits for the hypervisor's answer to an order.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request line (an order, or an admission's header).
const REQUEST_LINE_MAX: u64 = 1024;

/// The socket of the loader with process id `pid`.
pub fn socket_path(home: &Path, pid: u32) -> PathBuf {
    home.join(RUN_DIR).join(format!("loader-{pid}.sock"))
}

/// The hypervisor's input, where requests go once QEMU runs.
pub enum Input {
    /// The console UART's receive side (QEMU's standard input): orders as
    /// their `@O` lines. Admissions, binary, never travel here.
    Uart(Box<dyn Write + Send>),
    /// The control channel ([`crate::channel::FrameWriter`]): orders and
    /// admissions as binary frames, each written whole in one call.
    Channel(Box<dyn Write + Send>),
}

/// What one connection asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Request {
    Order(OrderFrame),
    Admission { nonce: u64, signature: [u8; 64], bundle: Vec<u8> },
}

impl Request {
    fn nonce(&self) -> u64 {
        match self {
            Request::Order(o) => o.nonce,
            Request::Admission { nonce, .. } => *nonce,
        }
    }
}

impl Input {
    /// The frames that carry `req` on this transport (each written whole,
    /// in order), or the reply line that refuses it.
    fn encode(&self, req: &Request) -> std::result::Result<Vec<Vec<u8>>, String> {
        let mut frames = Vec::new();
        match (self, req) {
            (Input::Uart(_), Request::Order(o)) => frames.push(o.encode().as_bytes().to_vec()),
            (Input::Uart(_), Request::Admission { .. }) => {
                return Err("refused this instance has no control channel, and admissions travel only on it, never on the console UART; stop the instance and start it again (its log says why the channel could not be made)".into())
            }
            (Input::Channel(_), Request::Order(o)) => {
                // One frame, written whole (`write_order` writes it in parts).
                let mut frame = Vec::new();
                rvm_abi::control::write_order(&mut |b| frame.extend_from_slice(b), o);
                frames.push(frame);
            }
            (Input::Channel(_), Request::Admission { nonce, signature, bundle }) => {
                rvm_abi::control::write_admission(&mut |f| frames.push(f.to_vec()), *nonce, signature, bundle)
            }
        }
        Ok(frames)
    }

    fn writer(&mut self) -> &mut (dyn Write + Send) {
        match self {
            Input::Uart(w) | Input::Channel(w) => w.as_mut(),
        }
    }
}

/// Where requests go, once the hypervisor can take them.
type InputSlot = Arc<Mutex<Option<Input>>>;

/// Requests delivered and waiting for their answer, by nonce.
type Waiting = Arc<Mutex<BTreeMap<u64, UnixStream>>>;

/// A running instance's control socket.
pub struct ControlServer {
    path: PathBuf,
    input: InputSlot,
    waiting: Waiting,
    /// The hypervisor's input until it has spoken: the PL011 empties its
    /// receive FIFO when the hypervisor sets it up, so bytes written before
    /// that would be lost (a truncated order).
    pending: Mutex<Option<Input>>,
    /// The serial line's unfinished last line.
    partial: Vec<u8>,
}

impl ControlServer {
    /// Listen at `path` for requests to the instance that booted `bundle`.
    pub fn listen(path: PathBuf, bundle: &[u8]) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| Error::failed(format!("control socket {}: {e}", path.display())))?;
        let digest = rvm_abi::hex::to_string(&crate::bundler::digest(bundle));
        let greeting = format!("rvm-control {PROTOCOL} {digest}\n");
        let input: InputSlot = Arc::new(Mutex::new(None));
        let waiting: Waiting = Arc::new(Mutex::new(BTreeMap::new()));
        let (i, w) = (input.clone(), waiting.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (i, w, g) = (i.clone(), w.clone(), greeting.clone());
                std::thread::spawn(move || serve(stream, &g, &i, &w));
            }
        });
        Ok(Self { path, input, waiting, pending: Mutex::new(None), partial: Vec::new() })
    }

    /// QEMU is running: requests go to `input` once the hypervisor has
    /// printed its first line (its console, and so its receive side, is set
    /// up by then).
    pub fn attach(&self, input: Input) {
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(input);
        }
    }

    /// Serial output: pass each answer back to whoever sent its request.
    pub fn output(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        if self.partial.contains(&b'\n') {
            if let Some(input) = self.pending.get_mut().ok().and_then(Option::take) {
                if let Ok(mut i) = self.input.lock() {
                    *i = Some(input);
                }
            }
        }
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if let Some(nonce) = answered_nonce(text) {
                if let Some(mut client) = self.waiting.lock().ok().and_then(|mut w| w.remove(&nonce)) {
                    let _ = writeln!(client, "answer {text}");
                }
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Ok(mut w) = self.waiting.lock() {
            for (_, mut client) in std::mem::take(&mut *w) {
                let _ = writeln!(client, "error the run ended before the hypervisor answered");
            }
        }
    }
}

/// The nonce a hypervisor line `rvm: order <nonce> ...` or
/// `rvm: admission <nonce> ...` answers.
fn answered_nonce(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("rvm: order ").or_else(|| line.strip_prefix("rvm: admission "))?;
    rest.split(' ').next()?.parse().ok()
}

/// The request line of an admission: `@A <nonce> <signature hex> <len>`
/// (the `len` bytes of its bundle follow).
pub fn admission_line(nonce: u64, signature: &[u8; 64], len: usize) -> String {
    format!("@A {nonce} {} {len}\n", rvm_abi::hex::to_string(signature))
}

/// Nonce, signature and bundle length of an admission's request line.
fn parse_admission_line(line: &str) -> Option<(u64, [u8; 64], usize)> {
    let mut parts = line.trim_end_matches(['\n', '\r']).strip_prefix("@A ")?.split(' ');
    let nonce = parts.next()?.parse::<u64>().ok().filter(|&n| n != 0)?;
    let mut signature = [0u8; 64];
    rvm_abi::hex::decode(parts.next()?.as_bytes(), &mut signature)?;
    let len = parts.next()?.parse::<usize>().ok()?;
    parts.next().is_none().then_some((nonce, signature, len))
}

/// Read one request: an order line, or an admission's line and its
/// bundle. `Err` is the reply line saying why not.
fn read_request(reader: &mut impl BufRead) -> std::result::Result<Request, String> {
    let mut line = String::new();
    reader.by_ref().take(REQUEST_LINE_MAX).read_line(&mut line).map_err(|e| format!("error the request did not arrive: {e}"))?;
    if let Some(order) = OrderFrame::parse(&line) {
        return Ok(Request::Order(order));
    }
    let (nonce, signature, len) =
        parse_admission_line(&line).ok_or_else(|| "error not an order or admission line".to_string())?;
    if len == 0 || len > MAX_ADMISSION {
        return Err(format!("error an admission of {len} bytes: 1 to {MAX_ADMISSION} are taken"));
    }
    let mut bundle = vec![0u8; len];
    reader
        .read_exact(&mut bundle)
        .map_err(|e| format!("error the admission's {len} bytes did not all arrive: {e}"))?;
    Ok(Request::Admission { nonce, signature, bundle })
}

/// Wait (up to [`START_WAIT`]: the socket opens just before QEMU starts)
/// until the hypervisor takes input; `None` (the client told) if it does
/// not.
fn ready_input<'a>(input: &'a InputSlot, out: &mut UnixStream) -> Option<std::sync::MutexGuard<'a, Option<Input>>> {
    let since = std::time::Instant::now();
    loop {
        let g = input.lock().ok()?;
        if g.is_some() {
            return Some(g);
        }
        drop(g);
        if since.elapsed() > START_WAIT {
            let _ = writeln!(out, "error the hypervisor is not running yet");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One connection: greet, take one request, deliver it; its answer is
/// written back by [`ControlServer::output`].
fn serve(stream: UnixStream, greeting: &str, input: &InputSlot, waiting: &Waiting) {
    let Ok(mut out) = stream.try_clone() else { return };
    if out.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let request = match read_request(&mut BufReader::new(&stream)) {
        Ok(r) => r,
        Err(reply) => {
            let _ = writeln!(out, "{reply}");
            return;
        }
    };
    let Some(mut guard) = ready_input(input, &mut out) else { return };
    let Some(input) = guard.as_mut() else { return };
    let frames = match input.encode(&request) {
        Ok(f) => f,
        Err(reply) => {
            let _ = writeln!(out, "{reply}");
            return;
        }
    };
    let nonce = request.nonce();
    if let Ok(mut w) = waiting.lock() {
        w.insert(nonce, out.try_clone().unwrap_or(out));
    }
    let writer = input.writer();
    // Frame by frame: acknowledgements go between them, and each waits
    // for room in the hypervisor's window.
    let written = frames.iter().try_for_each(|f| writer.write_all(f)).and_then(|()| writer.flush());
    if let Err(e) = written {
        if let Some(mut client) = waiting.lock().ok().and_then(|mut w| w.remove(&nonce)) {
            let _ = writeln!(client, "error the hypervisor's input did not take it: {e}");
        }
    }
}

/// What came back for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The hypervisor carried it out: its line (`... done: ...`).
    Done(String),
    /// The hypervisor refused it: its line.
    Refused(String),
    /// The loader serving the instance would not carry it: why.
    NotCarried(String),
}

/// A greeted connection to the control socket of a running instance.
pub(crate) struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// SHA-256 of the bundle the instance booted, from the greeting: what
    /// every request is signed over.
    pub digest: [u8; 32],
    timeout: Duration,
}

impl Client {
    /// Connect to the control socket of loader `pid` (which runs
    /// `subject`, for messages) and read its greeting; answers are waited
    /// for up to `timeout`.
    pub fn connect(home: &Path, pid: u32, subject: &str, timeout: Duration) -> Result<Self> {
        let path = socket_path(home, pid);
        let stream = UnixStream::connect(&path).map_err(|e| {
            Error::failed(format!("{subject} runs under loader {pid}, but its control socket {} cannot be reached: {e}", path.display()))
        })?;
        let _ = stream.set_read_timeout(Some(timeout));
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| Error::failed(format!("control socket: {e}")))?);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).map_err(|e| Error::failed(format!("control socket {}: {e}", path.display())))?;
        let digest = parse_greeting(&greeting)
            .ok_or_else(|| Error::failed(format!("control socket {}: unexpected greeting {greeting:?}", path.display())))?;
        Ok(Self { reader, writer: stream, digest, timeout })
    }

    /// Send the request's bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).map_err(|e| Error::failed(format!("control socket: {e}")))
    }

    /// Wait for the answer to a request (`what`: order, admission).
    pub fn answer(&mut self, what: &str) -> Result<Answer> {
        let mut answer = String::new();
        self.reader.read_line(&mut answer).map_err(|e| {
            Error::failed(format!("no answer from the hypervisor within {} s: {e}", self.timeout.as_secs()))
        })?;
        let answer = answer.trim_end();
        if let Some(text) = answer.strip_prefix("answer ") {
            return Ok(if text.contains(" done: ") { Answer::Done(text.into()) } else { Answer::Refused(text.into()) });
        }
        if let Some(why) = answer.strip_prefix("refused ") {
            return Ok(Answer::NotCarried(why.into()));
        }
        Err(Error::failed(format!(
            "{what} not delivered: {}",
            answer.strip_prefix("error ").unwrap_or(if answer.is_empty() { "the run ended" } else { answer })
        )))
    }
}

/// This home's operator key, which signs orders and admissions.
pub(crate) fn operator_key(home: &Home) -> Result<SigningKey> {
    let key = home
        .key(&KeyRole::Operator)?
        .ok_or_else(|| Error::failed(format!("no operator key in {} (it is created when a run boots)", home.root().display())))?;
    Ok(SigningKey::from_bytes(&key.seed))
}

/// `partition unfence|evict NAME`: sign the order, deliver it to the
/// running instance that booted or admitted `name`, print the hypervisor's
/// answer.
pub fn order(home: &Home, kind: OrderKind, name: &PartitionName) -> Result<()> {
    let reg = home.load()?;
    let record = reg.partitions.get(name).ok_or_else(|| {
        Error::refused(format!("partition {}", kind.name()), format!("no partition named {name} is registered"))
    })?;
    let pid = record
        .last_run
        .as_ref()
        .filter(|r| r.ended_unix.is_none())
        .and_then(|r| r.loader_pid)
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .ok_or_else(|| Error::failed(format!("{name} is not running (no running instance booted it; `rvm-loader up` boots it)")))?;
    let text = deliver(home, kind, name.as_str(), pid)?;
    println!("{text}");
    Ok(())
}

/// Sign order `kind` for `target` (a partition, or
/// [`HYPERVISOR_TARGET`](rvm_abi::frame::HYPERVISOR_TARGET)) and deliver it
/// through the control socket of loader `pid`; the hypervisor's answer
/// line when it carried the order out.
pub fn deliver(home: &Home, kind: OrderKind, target: &str, pid: u32) -> Result<String> {
    let name = target;
    let key = operator_key(home)?;
    let mut client = Client::connect(home.root(), pid, name, ANSWER_TIMEOUT)?;
    let partition = PartitionDesc::name_field(name)
        .map_err(|_| Error::refused(format!("partition {}", kind.name()), format!("{name} is not a safe identifier")))?;
    let nonce = clock_nonce();
    let signature = key.sign(&OrderFrame::message(kind, nonce, &partition, &client.digest)).to_bytes();
    client.send(OrderFrame { kind, nonce, partition, signature }.encode().as_bytes())?;
    let refused = |why: String| Error::refused(format!("partition {} {name}", kind.name()), why);
    match client.answer("order")? {
        Answer::Done(text) => Ok(text),
        Answer::Refused(text) => Err(refused(format!("the hypervisor refused the order: {text}"))),
        Answer::NotCarried(why) => Err(refused(why)),
    }
}

/// The bundle digest a greeting names.
fn parse_greeting(line: &str) -> Option<[u8; 32]> {
    let mut parts = line.trim_end().split(' ');
    if parts.next()? != "rvm-control" || parts.next()?.parse::<u32>().ok()? != PROTOCOL {
        return None;
    }
    let mut digest = [0u8; 32];
    rvm_abi::hex::decode(parts.next()?.as_bytes(), &mut digest)?;
    Some(digest)
}

/// Nanoseconds since the Unix epoch: above every nonce an earlier order
/// or admission from this host used.
pub(crate) fn clock_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_and_answers_parse() {
        let digest = [0xab; 32];
        let line = format!("rvm-control 1 {}\n", "ab".repeat(32));
        assert_eq!(parse_greeting(&line), Some(digest));
        assert_eq!(parse_greeting("rvm-control 2 00\n"), None);
        assert_eq!(answered_nonce("rvm: order 42 unfence 'a' done: resumed from snapshot 3"), Some(42));
        assert_eq!(answered_nonce("[a] rvm: order 42"), None);
        assert_eq!(answered_nonce("rvm: admission 43 refused: bad signature"), Some(43));
        assert_eq!(answered_nonce("[a] rvm: admission 43 done: admitted a as partition 2"), None);
    }

    #[test]
    fn admission_lines_round_trip_and_bad_ones_are_refused() {
        let line = admission_line(77, &[0xcd; 64], 4096);
        assert_eq!(parse_admission_line(&line), Some((77, [0xcd; 64], 4096)));
        let sig = "cd".repeat(64);
        for bad in [
            format!("@A 0 {sig} 10\n"),
            format!("@A 1 {} 10\n", &sig[2..]),
            format!("@A 1 {sig}\n"),
            format!("@A 1 {sig} 10 more\n"),
            format!("@A x {sig} 10\n"),
        ] {
            assert_eq!(parse_admission_line(&bad), None, "{bad}");
        }
        // Read from a connection: the bundle follows its line; a length
        // out of bounds, or bytes that do not all arrive, is an error line.
        let mut ok = admission_line(5, &[1; 64], 3).into_bytes();
        ok.extend_from_slice(b"abcORDER");
        let got = read_request(&mut std::io::Cursor::new(ok)).unwrap();
        assert_eq!(got, Request::Admission { nonce: 5, signature: [1; 64], bundle: b"abc".to_vec() });
        for (bytes, want) in [
            (admission_line(5, &[1; 64], 0).into_bytes(), "error an admission of 0 bytes"),
            (admission_line(5, &[1; 64], MAX_ADMISSION + 1).into_bytes(), "error an admission of"),
            ([admission_line(5, &[1; 64], 9).as_bytes(), b"short"].concat(), "error the admission's 9 bytes did not all arrive"),
            (b"hello\n".to_vec(), "error not an order or admission line"),
        ] {
            let e = read_request(&mut std::io::Cursor::new(bytes)).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }

    /// The hypervisor's input, captured: every `write` call as it came.
    struct Pipe(std::sync::mpsc::Sender<Vec<u8>>);

    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A control server for a loader of pid `pid` under a fresh folder
    /// (the folder, the server, the hypervisor's input as written).
    fn server_on(tag: &str, pid: u32, channel: bool) -> (PathBuf, ControlServer, std::sync::mpsc::Receiver<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!("rvm-control-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut server = ControlServer::listen(socket_path(&dir, pid), b"bundle").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let pipe = Box::new(Pipe(tx));
        server.attach(if channel { Input::Channel(pipe) } else { Input::Uart(pipe) });
        // The hypervisor has spoken: its input is ready.
        server.output(b"RVM 0.1.0\n");
        (dir, server, rx)
    }

    #[test]
    fn a_server_passes_an_admission_to_the_channel_as_its_frame_and_its_answer_back() {
        let (dir, mut server, rx) = server_on("admission", 4242, true);
        let bundle: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let sent = bundle.clone();
        let home = dir.clone();
        let client = std::thread::spawn(move || {
            let mut c = Client::connect(&home, 4242, "the instance", Duration::from_secs(10)).unwrap();
            assert_eq!(c.digest, crate::bundler::digest(b"bundle"));
            let mut request = admission_line(31, &[9; 64], sent.len()).into_bytes();
            request.extend_from_slice(&sent);
            c.send(&request).unwrap();
            c.answer("admission").unwrap()
        });
        // One write per frame (an acknowledgement may go between frames,
        // never inside one), as the hypervisor's decoder reads them.
        let mut want = Vec::new();
        rvm_abi::control::write_admission(&mut |f| want.push(f.to_vec()), 31, &[9; 64], &bundle);
        let writes: Vec<Vec<u8>> = (0..want.len()).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        assert!(writes == want, "{} writes of {:?} bytes", writes.len(), writes.iter().map(Vec::len).take(4).collect::<Vec<_>>());
        let mut decoder = rvm_abi::control::InboundDecoder::new();
        let (mut begins, mut body) = (Vec::new(), Vec::new());
        for &b in writes.iter().flatten() {
            match decoder.push(b) {
                Some(Ok(rvm_abi::control::Inbound::AdmissionByte(x))) => body.push(x),
                Some(other) => begins.push(other),
                None => {}
            }
        }
        assert_eq!(begins, [Ok(rvm_abi::control::Inbound::AdmissionBegins { nonce: 31, signature: [9; 64], len: bundle.len() })]);
        assert_eq!(body, bundle);
        server.output(b"[a] noise\nrvm: admission 31 done: admitted tenant as partition 3\n");
        assert_eq!(client.join().unwrap(), Answer::Done("rvm: admission 31 done: admitted tenant as partition 3".into()));
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn orders_go_on_the_channel_as_frames_and_admissions_never_on_the_uart() {
        let partition = PartitionDesc::name_field("agent-a").unwrap();
        let order = OrderFrame { kind: OrderKind::Unfence, nonce: 12, partition, signature: [4; 64] };
        let (dir, mut server, rx) = server_on("channel-order", 4243, true);
        let home = dir.clone();
        let client = std::thread::spawn(move || {
            let mut c = Client::connect(&home, 4243, "agent-a", Duration::from_secs(10)).unwrap();
            c.send(order.encode().as_bytes()).unwrap();
            c.answer("order").unwrap()
        });
        let mut want = Vec::new();
        rvm_abi::control::write_order(&mut |b| want.extend_from_slice(b), &order);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), want);
        server.output(b"rvm: order 12 unfence 'agent-a' refused: not fenced\n");
        assert_eq!(client.join().unwrap(), Answer::Refused("rvm: order 12 unfence 'agent-a' refused: not fenced".into()));
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
        // A run without a channel: the admission is refused, nothing written.
        let (dir, server, rx) = server_on("uart-admission", 4244, false);
        let mut c = Client::connect(&dir, 4244, "the instance", Duration::from_secs(10)).unwrap();
        let mut request = admission_line(13, &[1; 64], 4).into_bytes();
        request.extend_from_slice(b"abcd");
        c.send(&request).unwrap();
        let Answer::NotCarried(why) = c.answer("admission").unwrap() else { panic!("carried") };
        assert!(why.contains("no control channel"), "{why}");
        assert!(rx.try_recv().is_err(), "nothing reached the UART");
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_server_delivers_an_order_and_passes_back_its_answer() {
        let dir = std::env::temp_dir().join(format!("rvm-control-test-{}", std::process::id()));
        let path = dir.join("c.sock");
        let mut server = ControlServer::listen(path.clone(), b"bundle").unwrap();
        // QEMU's input, captured.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        server.attach(Input::Uart(Box::new(Pipe(tx))));
        let stream = UnixStream::connect(&path).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        assert_eq!(parse_greeting(&greeting), Some(crate::bundler::digest(b"bundle")));
        let partition = PartitionDesc::name_field("agent-a").unwrap();
        let line = OrderFrame { kind: OrderKind::Evict, nonce: 9, partition, signature: [1; 64] }.encode();
        (&stream).write_all(line.as_bytes()).unwrap();
        // Nothing reaches QEMU before the hypervisor has printed a line (its
        // UART empties the receive FIFO when it is set up).
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "an order went out before the hypervisor spoke");
        server.output(b"\nRVM 0.1.0\n");
        let delivered = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(delivered, line.as_bytes());
        server.output(b"[agent-a] noise\nrvm: order 9 evict 'agent-a' done: ev");
        server.output(b"icted (F4)\n");
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, "answer rvm: order 9 evict 'agent-a' done: evicted (F4)\n");
        drop(server);
        assert!(!path.exists(), "the socket is removed with the server");
        let _ = std::fs::remove_dir_all(dir);
    }
}
