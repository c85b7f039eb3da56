//! Booting the hypervisor under QEMU: where its image is, the command
//! line, and a run with a timeout whose QEMU is killed on every path.

use crate::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hypervisor image in an image directory.
pub const HYPERVISOR_FILE: &str = "rvm.bin";
/// The EL1 guest runtime in an image directory.
pub const RUNTIME_FILE: &str = "guest-runtime.elf";
/// Environment variable naming the image directory.
pub const IMAGE_DIR_ENV: &str = "RVM_IMAGE_DIR";
/// Environment variable naming the QEMU binary.
pub const QEMU_ENV: &str = "RVM_QEMU";
/// The QEMU binary when neither `--qemu` nor `RVM_QEMU` says otherwise.
pub const QEMU_DEFAULT: &str = "qemu-system-aarch64";
/// How long a run may take unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// How much of QEMU's standard error is kept for a failure message.
const STDERR_TAIL: usize = 8 << 10;
/// How often `run` reports a silent machine to `on_quiet`.
pub const QUIET_TICK: Duration = Duration::from_secs(5);

/// The artifacts a boot needs.
#[derive(Clone, Debug)]
pub struct Images {
    pub dir: PathBuf,
    pub hypervisor: PathBuf,
    pub runtime: PathBuf,
}

/// The image directory: `--image-dir`, else `$RVM_IMAGE_DIR`, else
/// `<folder of the executable>/../rvm/` (where `make` puts `target/rvm/`).
pub fn image_dir(
    explicit: Option<&Path>,
    env: Option<OsString>,
    exe: Option<&Path>,
) -> Option<(PathBuf, &'static str)> {
    if let Some(d) = explicit {
        return Some((d.to_path_buf(), "--image-dir"));
    }
    if let Some(d) = env.filter(|d| !d.is_empty()) {
        return Some((PathBuf::from(d), IMAGE_DIR_ENV));
    }
    exe.and_then(Path::parent)
        .map(|d| (d.join("..").join("rvm"), "the executable's ../rvm"))
}

/// Find the images, or say where they were looked for.
pub fn locate(explicit: Option<&Path>) -> Result<Images> {
    let exe = std::env::current_exe().ok();
    let (dir, origin) = image_dir(explicit, std::env::var_os(IMAGE_DIR_ENV), exe.as_deref())
        .ok_or_else(|| {
            Error::failed("no image directory: pass --image-dir DIR or set RVM_IMAGE_DIR")
        })?;
    let images = Images {
        hypervisor: dir.join(HYPERVISOR_FILE),
        runtime: dir.join(RUNTIME_FILE),
        dir,
    };
    for f in [&images.hypervisor, &images.runtime] {
        if !f.is_file() {
            return Err(Error::failed(format!(
                "{} not found (image directory from {origin}); build it with `make`, or pass --image-dir DIR / set {IMAGE_DIR_ENV}",
                f.display()
            )));
        }
    }
    Ok(images)
}

/// The QEMU binary: `--qemu`, else `$RVM_QEMU`, else `qemu-system-aarch64`.
pub fn qemu_binary(explicit: Option<&Path>) -> OsString {
    explicit
        .map(|p| p.as_os_str().to_owned())
        .or_else(|| std::env::var_os(QEMU_ENV).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| QEMU_DEFAULT.into())
}

/// QEMU's arguments for the reference machine (docs/DESIGN.md section 2). No
/// semihosting: QEMU would serve it to every guest (`hlt #0xf000` at EL1
/// runs host commands, opens host files, ends the machine); the hypervisor
/// reports how the run ended in its exit frame (`rvm_abi::frame::ExitFrame`)
/// and powers off with PSCI `SYSTEM_OFF`.
///
/// `memory_mib` is the machine's RAM ([`memory_for`]).
pub fn machine_args(hypervisor: &Path, bundle: &Path, memory_mib: u64) -> Vec<OsString> {
    let memory = format!("{memory_mib}M");
    let mut args: Vec<OsString> = [
        "-machine",
        "virt,virtualization=on,gic-version=3",
        "-cpu",
        "cortex-a72",
        "-smp",
        "4",
        "-m",
        &memory,
        "-nographic",
        "-nic",
        "none",
        "-kernel",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(hypervisor.as_os_str().to_owned());
    args.push("-initrd".into());
    args.push(bundle.as_os_str().to_owned());
    args
}

/// RAM for a machine that boots `partitions` partitions, in MiB: the
/// hypervisor takes a quarter of RAM for its heap, and admission reserves
/// about 3.8 MiB of it per partition (its state store, snapshots and
/// queues at their bounds, `rvm_kernel::memory::quota`), and up to about
/// 8 MiB of frames for a WASM partition (its memory budget, runtime heap,
/// two snapshots). At least 512 MiB, in steps of 256 MiB. QEMU backs only
/// what the machine touches, so the bound costs the host nothing until used.
pub fn memory_for(partitions: usize) -> u64 {
    let need = 64 + 24 * partitions as u64;
    need.max(512).next_multiple_of(256)
}

/// What the output callback of [`run`] wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Stop the machine now (QEMU is killed).
    Stop,
}

/// What [`run`] reports while the machine runs.
pub trait Watch {
    /// Bytes of the serial console, as they arrive.
    fn output(&mut self, bytes: &[u8]) -> Flow;
    /// QEMU was started.
    fn started(&mut self, _pid: u32) {}
    /// No output for a while (`since_output` since the last byte, or since
    /// the start if nothing came yet), called every [`QUIET_TICK`].
    fn quiet(&mut self, _since_output: Duration, _elapsed: Duration) {}
    /// A frame from the control channel ([`crate::channel`]), as the
    /// console line that would have carried it.
    fn frame(&mut self, _line: &str) -> Flow {
        Flow::Continue
    }
    /// The control channel's stream broke: nothing after it is read.
    fn channel_broken(&mut self, _why: &str) -> Flow {
        Flow::Stop
    }
    /// The control channel is connected: `reply` writes frames to the
    /// hypervisor (beside the orders the control server sends).
    fn channel_open(&mut self, _reply: crate::channel::FrameWriter) {}
    /// A tool call to run and answer ([`crate::tools`]).
    fn tool(&mut self, _call: crate::channel::ToolRequest) -> Flow {
        Flow::Continue
    }
    /// A partition's committed set to keep ([`crate::state`]).
    fn state(&mut self, _set: crate::state::SavedSet) -> Flow {
        Flow::Continue
    }
}

impl<F: FnMut(&[u8])> Watch for F {
    fn output(&mut self, bytes: &[u8]) -> Flow {
        self(bytes);
        Flow::Continue
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// QEMU exited with this code: 0 after the hypervisor's PSCI
    /// `SYSTEM_OFF` (how the run ended is in the hypervisor's exit frame on
    /// the console), nonzero when QEMU itself failed.
    Code(i32),
    /// QEMU was ended by a signal.
    Signal,
    /// The timeout passed; QEMU was killed.
    TimedOut,
    /// The output callback asked to stop; QEMU was killed.
    Stopped,
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct Run {
    pub exit: Exit,
    /// The end of QEMU's standard error.
    pub stderr_tail: String,
    pub elapsed: Duration,
}

/// A child process that is killed and reaped when dropped, whatever path
/// the caller leaves by (error, panic, timeout).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

enum Chunk {
    Data(Vec<u8>),
    End,
    Channel(crate::channel::Event),
}

impl From<crate::channel::Event> for Chunk {
    fn from(e: crate::channel::Event) -> Self {
        Chunk::Channel(e)
    }
}

/// Run `program` with `args`, streaming its standard output to `watch`,
/// for at most `timeout`. With a `control` socket, QEMU's standard input
/// (the serial line's receive side) carries the operator's orders and the
/// output is shown to the socket too, for their answers. With a `channel`
/// (whose [`Channel::qemu_args`](crate::channel::Channel::qemu_args) are
/// among `args`), its frames reach `watch` too, and the run waits for the
/// channel's end as for the console's.
pub fn run(
    program: &OsStr,
    args: &[OsString],
    timeout: Duration,
    watch: &mut dyn Watch,
    mut control: Option<crate::control::ControlServer>,
    channel: Option<&mut crate::channel::Channel>,
) -> Result<Run> {
    let start = Instant::now();
    let stdin = if control.is_some() { Stdio::piped() } else { Stdio::null() };
    let child = Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::failed(format!(
                "cannot start {}: {e}",
                Path::new(program).display()
            ))
        })?;
    let mut child = KillOnDrop(child);
    watch.started(child.0.id());
    // Orders go on the control channel when the run has one, else into
    // the UART's receive side.
    let orders = match (&channel, child.0.stdin.take()) {
        (Some(ch), _) => Some(crate::control::Input::Channel(Box::new(ch.frame_writer()))),
        (None, Some(stdin)) => Some(crate::control::Input::Uart(Box::new(stdin))),
        (None, None) => None,
    };
    if let (Some(c), Some(w)) = (control.as_ref(), orders) {
        c.attach(w);
    }
    if let Some(ch) = &channel {
        watch.channel_open(ch.frame_writer());
    }
    let mut stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| Error::failed("no stdout pipe"))?;
    let mut stderr = child
        .0
        .stderr
        .take()
        .ok_or_else(|| Error::failed("no stderr pipe"))?;

    let (tx, rx) = mpsc::channel();
    let channel_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let channel_reader = channel.and_then(|c| c.read_into(tx.clone(), channel_stop.clone()));
    let mut channel_done = channel_reader.is_none();
    let mut stdout_done = false;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Chunk::Data(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Chunk::End);
    });
    let err_reader = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    });

    let deadline = start + timeout;
    let mut timed_out = false;
    let mut stopped = false;
    let mut last_output = start;
    loop {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(left.min(QUIET_TICK)) {
            Ok(Chunk::Data(d)) => {
                last_output = Instant::now();
                if let Some(c) = control.as_mut() {
                    c.output(&d);
                }
                if watch.output(&d) == Flow::Stop {
                    stopped = true;
                    break;
                }
            }
            Ok(Chunk::Channel(crate::channel::Event::Frame(line))) => {
                last_output = Instant::now();
                if watch.frame(&line) == Flow::Stop {
                    stopped = true;
                    break;
                }
            }
            Ok(Chunk::Channel(crate::channel::Event::State(set))) => {
                last_output = Instant::now();
                if watch.state(set) == Flow::Stop {
                    stopped = true;
                    break;
                }
            }
            Ok(Chunk::Channel(crate::channel::Event::Tool(call))) => {
                last_output = Instant::now();
                if watch.tool(call) == Flow::Stop {
                    stopped = true;
                    break;
                }
            }
            Ok(Chunk::Channel(crate::channel::Event::Broken(why))) => {
                if watch.channel_broken(&why) == Flow::Stop {
                    stopped = true;
                    break;
                }
            }
            Ok(Chunk::Channel(crate::channel::Event::End)) => {
                channel_done = true;
                if stdout_done {
                    break;
                }
            }
            Ok(Chunk::End) => {
                stdout_done = true;
                // The console closed: QEMU is going; a channel it never
                // connected is not waited for.
                channel_stop.store(true, std::sync::atomic::Ordering::Release);
                if channel_done {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                watch.quiet(last_output.elapsed(), start.elapsed());
            }
        }
    }
    channel_stop.store(true, std::sync::atomic::Ordering::Release);
    // Output closed: give QEMU until the deadline to exit.
    let status = loop {
        if timed_out || stopped {
            break None;
        }
        match child.0.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::failed(format!("waiting for QEMU: {e}"))),
        }
    };
    drop(control); // closes QEMU's input, answers whoever still waits
    drop(child); // kills QEMU if it is still running, and reaps it
    let _ = reader.join();
    if let Some(r) = channel_reader {
        let _ = r.join();
    }
    let stderr_tail = err_reader.join().unwrap_or_default();
    let exit = match status {
        None if stopped => Exit::Stopped,
        None => Exit::TimedOut,
        Some(s) => s.code().map_or(Exit::Signal, Exit::Code),
    };
    Ok(Run {
        exit,
        stderr_tail,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_machine_command_line() {
        let args = machine_args(Path::new("/i/rvm.bin"), Path::new("/t/b.bin"), memory_for(2));
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            text.join(" "),
            "-machine virt,virtualization=on,gic-version=3 -cpu cortex-a72 -smp 4 -m 512M -nographic -nic none \
             -kernel /i/rvm.bin -initrd /t/b.bin"
        );
        assert!(!text.iter().any(|a| a.contains("semihosting")), "{text:?}");
    }

    #[test]
    fn the_machine_grows_with_its_partitions() {
        assert_eq!(memory_for(1), 512);
        assert_eq!(memory_for(16), 512);
        // 64 WASM tenants: a 448 MiB heap holds 64 reservations of 3.8 MiB
        // beside the hypervisor's 8, and 1.3 GiB of frames their footprints.
        assert_eq!(memory_for(64), 1792);
        assert!(memory_for(255).is_multiple_of(256) && memory_for(255) >= 64 + 24 * 255);
    }

    #[test]
    fn image_dir_precedence() {
        let exe = Path::new("/w/target/debug/rvm-loader");
        assert_eq!(
            image_dir(Some(Path::new("/x")), Some("/y".into()), Some(exe))
                .unwrap()
                .0,
            PathBuf::from("/x")
        );
        assert_eq!(
            image_dir(None, Some("/y".into()), Some(exe)).unwrap().0,
            PathBuf::from("/y")
        );
        assert_eq!(
            image_dir(None, Some("".into()), Some(exe)).unwrap().0,
            PathBuf::from("/w/target/debug/../rvm")
        );
        assert!(image_dir(None, None, None).is_none());
    }

    /// Collects what a run hands its watcher.
    #[derive(Default)]
    struct Collect {
        output: Vec<u8>,
        frames: Vec<String>,
        broken: Vec<String>,
    }

    impl Watch for Collect {
        fn output(&mut self, bytes: &[u8]) -> Flow {
            self.output.extend_from_slice(bytes);
            Flow::Continue
        }
        fn frame(&mut self, line: &str) -> Flow {
            self.frames.push(line.to_string());
            Flow::Continue
        }
        fn channel_broken(&mut self, why: &str) -> Flow {
            self.broken.push(why.to_string());
            Flow::Continue
        }
    }

    #[test]
    fn the_channel_s_frames_reach_the_watcher_even_after_the_console_closed() {
        use rvm_abi::control::Outgoing;
        use rvm_abi::frame::Frame;
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("rvm-channel-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let mut channel = crate::channel::Channel::listen(path.clone()).unwrap();
        let records: Vec<Frame> = (0..3).map(|n| Frame::Record { log: n, bytes: [n as u8; 64] }).collect();
        let mut stream = Vec::new();
        for f in &records {
            Outgoing::Witness(f).write_binary(&mut |b| stream.extend_from_slice(b));
        }
        // "QEMU" writes its frames, the last after the console closed.
        let writer = std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            s.write_all(&stream[..100]).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            s.write_all(&stream[100..]).unwrap();
        });
        let mut w = Collect::default();
        let r = run(
            OsStr::new("sh"),
            &["-c".into(), "echo console; exit 0".into()],
            Duration::from_secs(20),
            &mut w,
            None,
            Some(&mut channel),
        )
        .unwrap();
        writer.join().unwrap();
        assert_eq!(r.exit, Exit::Code(0));
        assert_eq!(w.output, b"console\n");
        let want: Vec<String> = records.iter().map(|f| String::from_utf8_lossy(f.encode().as_bytes()).trim_end().to_string()).collect();
        assert_eq!(w.frames, want);
        assert!(w.broken.is_empty(), "{:?}", w.broken);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broken_channel_is_reported() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("rvm-channel-broken-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let mut channel = crate::channel::Channel::listen(path.clone()).unwrap();
        let writer = std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
            s.write_all(b"XX\x01\x00\x00\x00\x00\x00").unwrap();
        });
        let mut w = Collect::default();
        run(OsStr::new("sh"), &["-c".into(), "sleep 0.2".into()], Duration::from_secs(20), &mut w, None, Some(&mut channel)).unwrap();
        writer.join().unwrap();
        assert_eq!(w.broken.len(), 1, "{:?}", w.broken);
        assert!(w.frames.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn streams_output_and_reports_the_exit_code() {
        let mut got = Vec::new();
        let r = run(
            OsStr::new("sh"),
            &[
                "-c".into(),
                "printf 'a\\nb\\n'; echo oops >&2; exit 3".into(),
            ],
            Duration::from_secs(20),
            &mut |b: &[u8]| got.extend_from_slice(b),
            None,
            None,
        )
        .unwrap();
        assert_eq!(got, b"a\nb\n");
        assert_eq!(r.exit, Exit::Code(3));
        assert_eq!(r.stderr_tail.trim(), "oops");
    }

    #[test]
    fn a_run_past_its_timeout_is_killed() {
        let pidfile = std::env::temp_dir().join(format!("rvm-qemu-timeout-{}", std::process::id()));
        let script = format!(
            "echo $$ > {}; echo started; exec sleep 30",
            pidfile.display()
        );
        let mut got = Vec::new();
        let r = run(
            OsStr::new("sh"),
            &["-c".into(), script.into()],
            Duration::from_millis(500),
            &mut |b: &[u8]| got.extend_from_slice(b),
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.exit, Exit::TimedOut);
        assert_eq!(got, b"started\n");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let _ = std::fs::remove_file(&pidfile);
        // Killed and reaped: no process (not even a zombie) is left.
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "QEMU stand-in still alive"
        );
    }

    struct StopAtFirst {
        got: Vec<u8>,
        pid: Option<u32>,
    }

    impl Watch for StopAtFirst {
        fn output(&mut self, bytes: &[u8]) -> Flow {
            self.got.extend_from_slice(bytes);
            Flow::Stop
        }
        fn started(&mut self, pid: u32) {
            self.pid = Some(pid);
        }
    }

    #[test]
    fn a_watch_can_stop_the_run_and_the_process_is_killed() {
        let mut w = StopAtFirst {
            got: Vec::new(),
            pid: None,
        };
        let r = run(
            OsStr::new("sh"),
            &["-c".into(), "echo key; exec sleep 30".into()],
            Duration::from_secs(20),
            &mut w,
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.exit, Exit::Stopped);
        assert_eq!(w.got, b"key\n");
        assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
        let pid = w.pid.expect("started was reported");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the stopped process is still there"
        );
    }

    #[test]
    fn a_missing_binary_is_a_failure() {
        let e = run(
            OsStr::new("/nonexistent/qemu"),
            &[],
            Duration::from_secs(1),
            &mut |_: &[u8]| {},
            None,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("cannot start /nonexistent/qemu"),
            "{e}"
        );
    }
}
