//! The host end of the hypervisor's control channel (`rvm_abi::control`):
//! a Unix socket the loader listens on, `RVM_HOME/run/channel-<pid>.sock`,
//! to which QEMU connects the machine's virtio console. The hypervisor
//! sends every witness and journal frame there in binary; [`Channel`] turns
//! each back into the line the UART would have carried, so the loader files
//! them with the same code ([`crate::stream::Session`]).
//!
//! The other way, the operator's orders (`partition unfence|evict`) go to
//! the hypervisor on the same connection as binary `Order` frames
//! ([`OrderWriter`]), and every `control::ACK_EVERY` bytes read an `Ack` of
//! the bytes read so far: the hypervisor sends no more than
//! `control::WINDOW` beyond it.
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

use rvm_abi::control::Decoder;

/// The socket of the loader with process id `pid`.
pub fn socket_path(home: &Path, pid: u32) -> PathBuf {
    home.join(crate::control::RUN_DIR).join(format!("channel-{pid}.sock"))
}

/// What the channel's reader hands the run.
#[derive(Debug)]
pub enum Event {
    /// A frame, as its console line (no line end).
    Frame(String),
    /// The stream broke (a frame that does not decode): nothing after it
    /// can be trusted.
    Broken(String),
    /// QEMU closed the connection (the machine is off), or never connected.
    End,
}

/// A listening socket for one run; removed when dropped.
pub struct Channel {
    path: PathBuf,
    listener: Option<UnixListener>,
    /// QEMU's connection, once made: where orders are written.
    conn: Arc<Mutex<Option<UnixStream>>>,
}

/// Writes the operator's orders to the hypervisor: takes `@O` lines (as the
/// order socket hands them over) and sends each as an `Order` frame.
pub struct OrderWriter {
    conn: Arc<Mutex<Option<UnixStream>>>,
    line: Vec<u8>,
}

impl Write for OrderWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let order = rvm_abi::frame::OrderFrame::parse(&String::from_utf8_lossy(&line))
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an order line"))?;
            let mut frame = Vec::new();
            rvm_abi::control::write_order(&mut |b| frame.extend_from_slice(b), &order);
            let mut guard = self.conn.lock().map_err(|_| std::io::Error::other("channel lock"))?;
            let conn = guard
                .as_mut()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "QEMU has not connected the control channel"))?;
            conn.write_all(&frame)?;
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
        Ok(Self { path, listener: Some(listener), conn: Arc::new(Mutex::new(None)) })
    }

    /// Where the operator's orders for this run go.
    pub fn order_writer(&self) -> OrderWriter {
        OrderWriter { conn: self.conn.clone(), line: Vec::new() }
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
        Some(std::thread::spawn(move || {
            let _ = listener.set_nonblocking(true);
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if stop.load(Ordering::Acquire) => {
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
                        Ok(f) => Event::Frame(f.to_line()),
                        Err(e) => Event::Broken(e.to_string()),
                    };
                    let broken = matches!(event, Event::Broken(_));
                    if tx.send(event.into()).is_err() || broken {
                        let _ = tx.send(Event::End.into());
                        return;
                    }
                }
            }
            if decoder.pending() > 0 {
                let _ = tx.send(Event::Broken(format!("the stream ended inside a frame ({} bytes left)", decoder.pending())).into());
            }
            let _ = tx.send(Event::End.into());
        }))
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
