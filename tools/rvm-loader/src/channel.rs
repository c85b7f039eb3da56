//! The host end of the hypervisor's control channel (`rvm_abi::control`):
//! a Unix socket the loader listens on, `RVM_HOME/run/channel-<pid>.sock`,
//! to which QEMU connects the machine's virtio console. The hypervisor
//! sends every witness and journal frame there in binary; [`Channel`] turns
//! each back into the line the UART would have carried, so the loader files
//! them with the same code ([`crate::stream::Session`]).
//!
//! The other way, the operator's orders (`partition unfence|evict`) and
//! admissions (`deploy` into a running instance) go to the hypervisor on the
//! same connection as binary `Order` and `Admission` frames, which the
//! control socket ([`crate::control`]) writes whole through a
//! [`FrameWriter`], never more than `control::HOST_WINDOW` bytes beyond
//! what the hypervisor's last `Credit` frame says it took; and every
//! `control::ACK_EVERY` bytes read, an `Ack` of the bytes read so far: the
//! hypervisor sends no more than `control::WINDOW` beyond it. Both windows
//! together keep either side from waiting on the other: an acknowledgement
//! is never more than a window of frames behind.
//!
//! A path too long for a socket address, or a socket that cannot be made,
//! leaves the run without the channel: the machine then has no virtio
//! console and the hypervisor uses the UART for both, as before.

use std::ffi::OsString;
use std::io::{Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use rvm_abi::control::{Decoder, Incoming, HOST_WINDOW};

/// How long a frame for the hypervisor waits for room in its window.
const CREDIT_WAIT: Duration = Duration::from_secs(60);

/// The host's window (`control::HOST_WINDOW`): bytes of frames written to
/// the hypervisor, and the bytes it said it took.
#[derive(Default)]
struct Window {
    sent: u64,
    taken: u64,
    /// The connection is gone: nothing more will be taken.
    closed: bool,
}

type Credit = Arc<(Mutex<Window>, std::sync::Condvar)>;

/// The socket of the loader with process id `pid`.
pub fn socket_path(home: &Path, pid: u32) -> PathBuf {
    home.join(crate::control::RUN_DIR).join(format!("channel-{pid}.sock"))
}

/// What the channel's reader hands the run.
#[derive(Debug)]
pub enum Event {
    /// A frame, as its console line (no line end).
    Frame(String),
    /// A partition's committed set to keep: a `StateBegins` frame and all
    /// the `StateItem` frames it announced (channel only).
    State(crate::state::SavedSet),
    /// A partition called a tool: run it and answer ([`crate::tools`]).
    Tool(ToolRequest),
    /// The stream broke (a frame that does not decode): nothing after it
    /// can be trusted.
    Broken(String),
    /// QEMU closed the connection (the machine is off), or never connected.
    End,
}

/// A tool call the hypervisor passed on (a `ToolRequest` frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRequest {
    /// The caller's log (its partition id) and the call's record there.
    pub log: u32,
    pub seq: u64,
    /// Most response bytes the caller takes.
    pub capacity: u32,
    pub name: Vec<u8>,
    pub request: Vec<u8>,
}

/// A listening socket for one run; removed when dropped.
pub struct Channel {
    path: PathBuf,
    listener: Option<UnixListener>,
    /// QEMU's connection, once made: where orders are written.
    conn: Arc<Mutex<Option<UnixStream>>>,
    credit: Credit,
}

/// Writes frames to the hypervisor on QEMU's connection. Each `write` is
/// sent whole while the connection is held, so no acknowledgement the
/// reader sends falls inside it: write one whole frame (or several) per
/// call, as [`crate::control`] does.
#[derive(Clone)]
pub struct FrameWriter {
    conn: Arc<Mutex<Option<UnixStream>>>,
    credit: Credit,
}

impl FrameWriter {
    /// Wait until `n` more bytes fit the host's window (one frame larger
    /// than the window goes when nothing is in flight), and count them as
    /// sent at once, under the lock: writers on several threads (tool
    /// answers) never see the same room twice.
    fn reserve(&self, n: u64) -> std::io::Result<()> {
        let (lock, changed) = &*self.credit;
        let mut w = lock.lock().map_err(|_| std::io::Error::other("channel window lock"))?;
        let since = std::time::Instant::now();
        loop {
            let in_flight = w.sent.saturating_sub(w.taken);
            if in_flight == 0 || in_flight + n <= HOST_WINDOW {
                w.sent += n;
                return Ok(());
            }
            if w.closed {
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the control channel closed"));
            }
            let left = CREDIT_WAIT.checked_sub(since.elapsed()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the hypervisor took none of the last {in_flight} bytes sent to it in {} s", CREDIT_WAIT.as_secs()),
                )
            })?;
            w = changed.wait_timeout(w, left).map_err(|_| std::io::Error::other("channel window lock"))?.0;
        }
    }
}

impl Write for FrameWriter {
    /// Write `bytes`, one whole frame (or several), once the window has
    /// room for them.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len() as u64;
        self.reserve(n)?;
        let written = (|| {
            let mut guard = self.conn.lock().map_err(|_| std::io::Error::other("channel lock"))?;
            let conn = guard
                .as_mut()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "QEMU has not connected the control channel"))?;
            conn.write_all(bytes)
        })();
        if let Err(e) = written {
            // Not sent after all: its room goes back.
            if let Ok(mut w) = self.credit.0.lock() {
                w.sent = w.sent.saturating_sub(n);
            }
            return Err(e);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Channel {
    /// Listen at `path` (a stale socket of a dead loader there is replaced).
    pub fn listen(path: PathBuf) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(Self { path, listener: Some(listener), conn: Arc::new(Mutex::new(None)), credit: Credit::default() })
    }

    /// Where the frames for the hypervisor (orders, admissions) go.
    pub fn frame_writer(&self) -> FrameWriter {
        FrameWriter { conn: self.conn.clone(), credit: self.credit.clone() }
    }

    /// QEMU's arguments that give the machine its virtio console on this
    /// socket (modern virtio-mmio, QEMU connecting as the client).
    pub fn qemu_args(&self) -> Vec<OsString> {
        let mut chardev = OsString::from("socket,id=rvmchannel,path=");
        chardev.push(&self.path);
        ["-global", "virtio-mmio.force-legacy=false", "-device", "virtio-serial-device", "-chardev"]
            .into_iter()
            .map(OsString::from)
            .chain([chardev])
            .chain(["-device", "virtconsole,chardev=rvmchannel"].into_iter().map(OsString::from))
            .collect()
    }

    /// Read the channel on a thread of its own until QEMU closes it,
    /// sending every frame to `tx`, then [`Event::End`]. `stop` tells it
    /// QEMU is gone (so a connection never made is not waited for).
    pub fn read_into<T: From<Event> + Send + 'static>(
        &mut self,
        tx: Sender<T>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        use std::sync::atomic::Ordering;
        let listener = self.listener.take()?;
        let slot = self.conn.clone();
        let credit = self.credit.clone();
        // However the reader ends, frames waiting for room give up.
        let close = move |credit: &Credit| {
            if let Ok(mut w) = credit.0.lock() {
                w.closed = true;
            }
            credit.1.notify_all();
        };
        Some(std::thread::spawn(move || {
            let _ = listener.set_nonblocking(true);
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if stop.load(Ordering::Acquire) => {
                        close(&credit);
                        let _ = tx.send(Event::End.into());
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            let _ = conn.set_nonblocking(false);
            if let Ok(mut s) = slot.lock() {
                *s = conn.try_clone().ok();
            }
            let mut decoder = Decoder::new();
            let mut sets = SetAssembly::default();
            let mut buf = vec![0u8; 64 << 10];
            let (mut total, mut acked) = (0u64, 0u64);
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Read: the hypervisor may send more (`control::WINDOW`),
                // acknowledged every `control::ACK_EVERY` bytes.
                total += n as u64;
                if total - acked >= rvm_abi::control::ACK_EVERY {
                    acked = total;
                    let mut ack = Vec::new();
                    rvm_abi::control::write_ack(&mut |b| ack.extend_from_slice(b), acked);
                    if let Ok(mut s) = slot.lock() {
                        if let Some(w) = s.as_mut() {
                            let _ = w.write_all(&ack);
                        }
                    }
                }
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame() {
                    let event = match frame {
                        Ok(Incoming::Credit(taken)) => {
                            if let Ok(mut w) = credit.0.lock() {
                                w.taken = w.taken.max(taken);
                            }
                            credit.1.notify_all();
                            continue;
                        }
                        Ok(f @ (Incoming::StateBegins { .. } | Incoming::StateItem { .. })) => match sets.take(f) {
                            Ok(None) => continue,
                            Ok(Some(set)) => Event::State(set),
                            Err(why) => Event::Broken(why),
                        },
                        Ok(Incoming::ToolRequest { log, seq, capacity, name, request }) => {
                            Event::Tool(ToolRequest { log, seq, capacity, name, request })
                        }
                        Ok(f) => Event::Frame(f.to_line()),
                        Err(e) => Event::Broken(e.to_string()),
                    };
                    let broken = matches!(event, Event::Broken(_));
                    if tx.send(event.into()).is_err() || broken {
                        close(&credit);
                        let _ = tx.send(Event::End.into());
                        return;
                    }
                }
            }
            close(&credit);
            if decoder.pending() > 0 {
                let _ = tx.send(Event::Broken(format!("the stream ended inside a frame ({} bytes left)", decoder.pending())).into());
            }
            let _ = tx.send(Event::End.into());
        }))
    }
}

/// Committed sets coming in pieces: a `StateBegins`, then the `StateItem`s
/// it announced, per log.
#[derive(Default)]
struct SetAssembly {
    open: std::collections::BTreeMap<u32, (crate::state::SavedSet, u32)>,
}

impl SetAssembly {
    /// Take one state frame: the set it completes, if it does; `Err` when
    /// the pieces do not fit together (the stream cannot be trusted on).
    fn take(&mut self, frame: Incoming) -> Result<Option<crate::state::SavedSet>, String> {
        let log = match frame {
            Incoming::StateBegins { log, seq, digest, items } => {
                let set = crate::state::SavedSet { log, seq, digest, items: Vec::new() };
                if self.open.insert(log, (set, items)).is_some() {
                    return Err(format!("log {log}'s committed set began again before it was whole"));
                }
                log
            }
            Incoming::StateItem { log, key, value } => {
                let Some((set, _)) = self.open.get_mut(&log) else {
                    return Err(format!("a committed item of log {log} arrived outside a set"));
                };
                set.items.push((key, value));
                log
            }
            _ => return Ok(None),
        };
        let whole = self.open.get(&log).is_some_and(|(set, want)| set.items.len() >= *want as usize);
        Ok(if whole { self.open.remove(&log).map(|(set, _)| set) } else { None })
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_handed_on_whole_and_pieces_that_do_not_fit_break_the_stream() {
        let mut a = SetAssembly::default();
        let begins = |log, items| Incoming::StateBegins { log, seq: 9, digest: [1; 32], items };
        let item = |log, k: &[u8]| Incoming::StateItem { log, key: k.to_vec(), value: b"v".to_vec() };
        assert_eq!(a.take(begins(2, 2)), Ok(None));
        // Another log's set may come between (each set is whole in itself).
        let empty = a.take(begins(5, 0)).unwrap().unwrap();
        assert_eq!((empty.log, empty.items.len()), (5, 0));
        assert_eq!(a.take(item(2, b"a")), Ok(None));
        let set = a.take(item(2, b"b")).unwrap().unwrap();
        assert_eq!((set.log, set.seq, set.items.len()), (2, 9, 2));
        // An item outside a set, or a set begun twice, cannot be trusted on.
        assert!(a.take(item(2, b"c")).unwrap_err().contains("outside a set"));
        assert_eq!(a.take(begins(7, 1)), Ok(None));
        assert!(a.take(begins(7, 1)).unwrap_err().contains("began again"));
    }
    use std::sync::atomic::AtomicBool;

    /// Bytes that arrive on `conn` within `wait`.
    fn drain(conn: &mut UnixStream, wait: Duration) -> Vec<u8> {
        conn.set_read_timeout(Some(wait)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn writers_on_several_threads_share_one_window() {
        let dir = std::env::temp_dir().join(format!("rvm-channel-threads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut channel = Channel::listen(dir.join("c.sock")).unwrap();
        let (tx, _rx) = std::sync::mpsc::channel::<Event>();
        let reader = channel.read_into(tx, Arc::new(AtomicBool::new(false))).unwrap();
        let mut qemu = UnixStream::connect(dir.join("c.sock")).unwrap();
        let since = std::time::Instant::now();
        while channel.conn.lock().unwrap().is_none() {
            assert!(since.elapsed() < Duration::from_secs(10), "the reader never took the connection");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Four threads each send a 15 KiB frame with no credit returned:
        // one goes, and the others wait for room.
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let mut w = channel.frame_writer();
                std::thread::spawn(move || w.write_all(&vec![1u8; 15 << 10]))
            })
            .collect();
        let got = drain(&mut qemu, Duration::from_millis(1500));
        assert_eq!(got.len(), 15 << 10, "only one frame's worth went past the window");
        drop(qemu);
        for w in writers {
            let _ = w.join().unwrap();
        }
        reader.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn frames_for_the_hypervisor_wait_for_its_credit_and_give_up_when_the_channel_closes() {
        let dir = std::env::temp_dir().join(format!("rvm-channel-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut channel = Channel::listen(dir.join("c.sock")).unwrap();
        let (tx, _rx) = std::sync::mpsc::channel::<Event>();
        let reader = channel.read_into(tx, Arc::new(AtomicBool::new(false))).unwrap();
        // QEMU's end, once the reader has taken it (frames are written
        // only to a connected channel).
        let mut qemu = UnixStream::connect(dir.join("c.sock")).unwrap();
        let since = std::time::Instant::now();
        while channel.conn.lock().unwrap().is_none() {
            assert!(since.elapsed() < Duration::from_secs(10), "the reader never took the connection");
            std::thread::sleep(Duration::from_millis(5));
        }
        let frame = vec![7u8; 4096];
        let mut writer = channel.frame_writer();
        let writing = std::thread::spawn(move || {
            for _ in 0..10 {
                writer.write_all(&frame)?;
            }
            Ok::<_, std::io::Error>(())
        });
        // Without credit, a window's worth arrives and no more.
        let first = drain(&mut qemu, Duration::from_millis(1500));
        assert_eq!(first.len() as u64, HOST_WINDOW, "the host stops at its window");
        // The hypervisor took 8 KiB: two more frames go.
        let mut credit = Vec::new();
        rvm_abi::control::Outgoing::Credit { taken: 8192 }.write_binary(&mut |b| credit.extend_from_slice(b));
        qemu.write_all(&credit).unwrap();
        let second = drain(&mut qemu, Duration::from_millis(1500));
        assert_eq!(second.len(), 8192);
        // The machine goes away: the writer gives up instead of waiting.
        drop(qemu);
        let result = writing.join().unwrap();
        assert!(result.is_err(), "a closed channel ends the wait");
        reader.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
