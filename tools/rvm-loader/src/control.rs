//! The control socket of a running instance, and the operator's orders
//! that travel through it (`partition unfence|evict NAME`).
//!
//! A booting loader listens on `RVM_HOME/run/loader-<pid>.sock` (removed
//! when the run ends) and hands the hypervisor's input — its control
//! channel ([`crate::channel::OrderWriter`]), else QEMU's standard input,
//! the PL011's receive side — to the socket. One connection carries one
//! order:
//!
//! ```text
//! server: rvm-control 1 <64 hex digits: SHA-256 of the bundle booted>
//! client: @O <nonce> <order> <partition> <signature>      (rvm_abi::frame::OrderFrame)
//! server: answer <the hypervisor's console line about that order>
//!      or error <why the order was not delivered>
//! ```
//!
//! The client signs the order with the operator key of `RVM_HOME`
//! (`keys/operator.seed`, created with the other keys at the first boot;
//! its public half travels in every bundle as `OperatorKey`) over the
//! bundle's digest, so an order is good for that running instance only.
//! The server checks the line is an order, writes it into QEMU's input, and
//! passes back the line the hypervisor prints about that nonce
//! (`rvm: order <nonce> ...`). Nonces are the client's clock in
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
use rvm_abi::frame::{OrderFrame, OrderKind};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::keys::KeyRole;
use crate::model::PartitionName;

/// Protocol version in the greeting.
pub const PROTOCOL: u32 = 1;
/// Folder of the sockets under `RVM_HOME`.
pub const RUN_DIR: &str = "run";
/// How long an order waits for the hypervisor to be ready for input.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a client waits for the hypervisor's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket of the loader with process id `pid`.
pub fn socket_path(home: &Path, pid: u32) -> PathBuf {
    home.join(RUN_DIR).join(format!("loader-{pid}.sock"))
}

/// Where orders go: the control channel or QEMU's standard input, once it
/// is running.
type Input = Arc<Mutex<Option<Box<dyn Write + Send>>>>;

/// Orders delivered and waiting for their answer, by nonce.
type Waiting = Arc<Mutex<BTreeMap<u64, UnixStream>>>;

/// A running instance's control socket.
pub struct ControlServer {
    path: PathBuf,
    input: Input,
    waiting: Waiting,
    /// QEMU's standard input until the hypervisor has spoken: the PL011
    /// empties its receive FIFO when the hypervisor sets it up, so bytes
    /// written before that would be lost (a truncated order).
    pending: Mutex<Option<Box<dyn Write + Send>>>,
    /// The serial line's unfinished last line.
    partial: Vec<u8>,
}

impl ControlServer {
    /// Listen at `path` for orders to the instance that booted `bundle`.
    pub fn listen(path: PathBuf, bundle: &[u8]) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| Error::failed(format!("control socket {}: {e}", path.display())))?;
        let digest = rvm_abi::hex::to_string(&crate::bundler::digest(bundle));
        let greeting = format!("rvm-control {PROTOCOL} {digest}\n");
        let input: Input = Arc::new(Mutex::new(None));
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

    /// QEMU is running: orders go to `stdin` (the control channel's order
    /// writer, or QEMU's standard input) once the hypervisor has printed its
    /// first line (its console, and so its receive side, is set
    /// up by then).
    pub fn attach(&self, stdin: Box<dyn Write + Send>) {
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(stdin);
        }
    }

    /// Serial output: pass each order's answer back to whoever sent it.
    pub fn output(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        if self.partial.contains(&b'\n') {
            if let Some(stdin) = self.pending.get_mut().ok().and_then(Option::take) {
                if let Ok(mut i) = self.input.lock() {
                    *i = Some(stdin);
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

/// The nonce a hypervisor line `rvm: order <nonce> ...` answers.
fn answered_nonce(line: &str) -> Option<u64> {
    line.strip_prefix("rvm: order ")?.split(' ').next()?.parse().ok()
}

/// One connection: greet, take one order, deliver it.
fn serve(stream: UnixStream, greeting: &str, input: &Input, waiting: &Waiting) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    if out.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut line = String::new();
    if BufReader::new(&stream).take(1024).read_line(&mut line).is_err() {
        return;
    }
    let Some(order) = OrderFrame::parse(&line) else {
        let _ = writeln!(out, "error not an order line");
        return;
    };
    // The socket opens just before QEMU starts: give it a moment.
    let since = std::time::Instant::now();
    let mut guard = loop {
        let Ok(g) = input.lock() else { return };
        if g.is_some() {
            break g;
        }
        drop(g);
        if since.elapsed() > START_WAIT {
            let _ = writeln!(out, "error the hypervisor is not running yet");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(stdin) = guard.as_mut() else { return };
    if let Ok(mut w) = waiting.lock() {
        w.insert(order.nonce, out.try_clone().unwrap_or(out));
    }
    let encoded = order.encode();
    if stdin.write_all(encoded.as_bytes()).and_then(|()| stdin.flush()).is_err() {
        if let Some(mut client) = waiting.lock().ok().and_then(|mut w| w.remove(&order.nonce)) {
            let _ = writeln!(client, "error the hypervisor's input is closed");
        }
    }
}


/// `partition unfence|evict NAME`: sign the order, deliver it to the
/// running instance that booted `name`, print the hypervisor's answer.
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
/// through the order socket of loader `pid`; the hypervisor's answer line
/// when it carried the order out.
pub fn deliver(home: &Home, kind: OrderKind, target: &str, pid: u32) -> Result<String> {
    let name = target;
    let path = socket_path(home.root(), pid);
    let key = home
        .key(&KeyRole::Operator)?
        .ok_or_else(|| Error::failed(format!("no operator key in {} (it is created when a run boots)", home.root().display())))?;
    let stream = UnixStream::connect(&path).map_err(|e| {
        Error::failed(format!("{name} runs under loader {pid}, but its control socket {} cannot be reached: {e}", path.display()))
    })?;
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| Error::failed(e.to_string()))?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).map_err(|e| Error::failed(format!("control socket: {e}")))?;
    let digest = parse_greeting(&greeting)
        .ok_or_else(|| Error::failed(format!("control socket {}: unexpected greeting {greeting:?}", path.display())))?;
    let partition = PartitionDesc::name_field(name)
        .map_err(|_| Error::refused(format!("partition {}", kind.name()), format!("{name} is not a safe identifier")))?;
    let nonce = clock_nonce();
    let signature = SigningKey::from_bytes(&key.seed).sign(&OrderFrame::message(kind, nonce, &partition, &digest)).to_bytes();
    let line = OrderFrame { kind, nonce, partition, signature }.encode();
    let mut writer = stream;
    writer.write_all(line.as_bytes()).map_err(|e| Error::failed(format!("control socket: {e}")))?;
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(|e| {
        Error::failed(format!("no answer from the hypervisor within {} s: {e}", ANSWER_TIMEOUT.as_secs()))
    })?;
    let answer = answer.trim_end();
    match answer.strip_prefix("answer ") {
        Some(text) if text.contains(" done: ") => Ok(text.to_string()),
        Some(text) => Err(Error::refused(format!("partition {} {name}", kind.name()), format!("the hypervisor refused the order: {text}"))),
        None => Err(Error::failed(format!(
            "order not delivered: {}",
            answer.strip_prefix("error ").unwrap_or(if answer.is_empty() { "the run ended" } else { answer })
        ))),
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
/// from this host used.
fn clock_nonce() -> u64 {
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
    }

    #[test]
    fn a_server_delivers_an_order_and_passes_back_its_answer() {
        let dir = std::env::temp_dir().join(format!("rvm-control-test-{}", std::process::id()));
        let path = dir.join("c.sock");
        let mut server = ControlServer::listen(path.clone(), b"bundle").unwrap();
        // QEMU's input, captured.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
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
        server.attach(Box::new(Pipe(tx)));
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
