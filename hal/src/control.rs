//! The control channel's device: a virtio console on a virtio-mmio slot
//! (QEMU `virt` with `-device virtio-serial-device -device
//! virtconsole,chardev=…`), driven at EL2 with the `virtio-drivers` crate.
//! It carries the witness and journal frames in binary
//! (`rvm_abi::control`), and the operators' orders the other way; a machine
//! without one uses the UART for both.
//!
//! Frames are not sent on the caller's time: [`send`] appends a frame to a
//! buffer in memory, and the buffer goes to the device in one transfer (one
//! descriptor, one notification) when it fills, when a CPU idles, at the
//! end of the run ([`flush`]). A buffer that cannot be sent (the device
//! refused it) is kept and retried, never dropped; one that would grow past
//! [`BUFFER_MAX`] is sent first.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec::Vec;
use core::ptr::NonNull;

use rvm_abi::control::{AckSplitter, Outgoing, Split, WINDOW};
use rvm_kernel::memory::addr::PhysRange;
use spin::Mutex;
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Bytes buffered before they are sent whatever else happens.
pub const BUFFER_MAX: usize = 64 << 10;
/// Bytes from the host kept for the kernel: twice the host's window.
const TO_KERNEL_MAX: usize = 2 * rvm_abi::control::HOST_WINDOW as usize;

/// DMA memory and address translation for the driver: EL2 runs on an
/// identity map of RAM, so a buffer's address is its physical address, and
/// DMA pages come from the heap (Normal memory; QEMU's devices need no cache
/// maintenance).
pub struct IdentityHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory owned by the
// driver until `dma_dealloc`; every address handed out is the physical
// address of memory EL2 maps identically (the heap and RAM are RW at EL2).
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a DMA layout");
        // SAFETY: the layout has a nonzero size (the driver asks for at
        // least one page).
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).expect("heap memory for a virtqueue");
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a DMA layout");
        // SAFETY: the driver hands back what `dma_alloc` returned for
        // `pages`, once.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("an MMIO address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

struct Channel {
    console: VirtIOConsole<IdentityHal, MmioTransport<'static>>,
    /// Frames not sent yet.
    buf: Vec<u8>,
    /// Bytes and frames sent so far.
    sent_bytes: u64,
    sent_frames: u64,
    /// Bytes the host has acknowledged reading (`rvm_abi::control::WINDOW`).
    acked: u64,
    /// The host's acknowledgements, split from the bytes for the kernel.
    splitter: AckSplitter,
    /// Bytes from the host for the kernel (orders, admissions), not read
    /// yet: at most [`TO_KERNEL_MAX`], which holds all a host keeping
    /// `HOST_WINDOW` can send, so acknowledgements behind them are always
    /// reached.
    to_kernel: alloc::collections::VecDeque<u8>,
    /// Transfers the device refused (the bytes were kept and retried).
    refused: u64,
}

// SAFETY: the console's MMIO registers and its queues are only reached
// through `CHANNEL`'s lock.
unsafe impl Send for Channel {}

static CHANNEL: Mutex<Option<Channel>> = Mutex::new(None);

/// Look for a virtio console among the device tree's virtio-mmio `slots`
/// and make it the control channel; its base address, if one was found.
///
/// # Safety
/// Each slot must be a virtio-mmio register block of the device tree,
/// mapped as Device memory at EL2 on every CPU, and used by nothing else.
/// Called once, on the boot CPU, before any frame is sent.
pub unsafe fn init(slots: &[PhysRange]) -> Option<u64> {
    for slot in slots {
        let Some(header) = NonNull::new(slot.start.raw() as *mut VirtIOHeader) else { continue };
        // SAFETY: the caller guarantees a mapped virtio-mmio block of
        // `slot.len()` bytes that nothing else uses; an empty slot answers
        // device id 0 and is refused by `new`.
        let Ok(transport) = (unsafe { MmioTransport::new(header, slot.len() as usize) }) else { continue };
        if transport.device_type() != DeviceType::Console {
            continue;
        }
        let Ok(console) = VirtIOConsole::<IdentityHal, _>::new(transport) else { continue };
        *CHANNEL.lock() = Some(Channel {
            console,
            buf: Vec::with_capacity(BUFFER_MAX),
            sent_bytes: 0,
            sent_frames: 0,
            acked: 0,
            splitter: AckSplitter::new(),
            to_kernel: alloc::collections::VecDeque::with_capacity(TO_KERNEL_MAX),
            refused: 0,
        });
        return Some(slot.start.raw());
    }
    None
}

/// Queue `frame` for the host; false if the machine has no control channel
/// (the caller sends it on the UART instead).
pub fn send(frame: &Outgoing<'_>) -> bool {
    let mut guard = CHANNEL.lock();
    let Some(ch) = guard.as_mut() else { return false };
    // Full: send first, until the device took it and the host's window
    // let it go (as a full UART FIFO holds the writer): memory stays
    // bounded and no frame is dropped.
    while !ch.buf.is_empty() && ch.buf.len() + frame.binary_len() > BUFFER_MAX {
        if !ch.transfer() {
            core::hint::spin_loop();
        }
    }
    frame.write_binary(&mut |b| ch.buf.extend_from_slice(b));
    ch.sent_frames += 1;
    true
}

/// Send what is buffered, if the host's window lets it go now.
pub fn flush() {
    if let Some(ch) = CHANNEL.lock().as_mut() {
        ch.transfer();
    }
}

/// Send everything buffered, waiting up to `limit_ns` for the host to
/// acknowledge enough of it (the end of a run); the bytes left unsent.
pub fn drain(limit_ns: u64) -> usize {
    let Some(mut guard) = CHANNEL.try_lock() else { return 0 };
    let Some(ch) = guard.as_mut() else { return 0 };
    let clock = crate::timer::Clock::new();
    let until = clock.now_ns().saturating_add(limit_ns);
    while !ch.buf.is_empty() && clock.now_ns() < until {
        if !ch.transfer() {
            core::hint::spin_loop();
        }
    }
    ch.buf.len()
}

/// Bytes the host sent (its orders, `rvm_abi::control`), as many as are
/// waiting and fit `buf`; never waits.
pub fn read(buf: &mut [u8]) -> usize {
    let mut guard = CHANNEL.lock();
    let Some(ch) = guard.as_mut() else { return 0 };
    ch.pump();
    let mut n = 0;
    while n < buf.len() {
        match ch.to_kernel.pop_front() {
            Some(b) => {
                buf[n] = b;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Whether the machine has a control channel.
pub fn present() -> bool {
    CHANNEL.lock().is_some()
}

/// Frames and bytes sent so far, and transfers the device refused.
pub fn figures() -> Option<(u64, u64, u64)> {
    CHANNEL.lock().as_ref().map(|c| (c.sent_frames, c.sent_bytes, c.refused))
}

impl Channel {
    /// Read what the host sent: acknowledgements are kept, the rest queued
    /// for the kernel (while there is room: the rest waits in the device).
    fn pump(&mut self) {
        while TO_KERNEL_MAX - self.to_kernel.len() >= rvm_abi::control::HEADER_LEN {
            let Ok(Some(b)) = self.console.recv(true) else { break };
            match self.splitter.take(b) {
                Split::Held => {}
                Split::Ack(n) => self.acked = self.acked.max(n.min(self.sent_bytes)),
                Split::Pass(bytes) => self.to_kernel.extend(bytes.iter().copied()),
            }
        }
    }

    /// Send the buffer in one transfer if the host's window has room for
    /// it; whether it went (or was empty).
    fn transfer(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        self.pump();
        if self.sent_bytes - self.acked + self.buf.len() as u64 > WINDOW {
            return false;
        }
        match self.console.send_bytes(&self.buf) {
            Ok(()) => {
                self.sent_bytes += self.buf.len() as u64;
                self.buf.clear();
                true
            }
            // Kept: the next flush (or `send`, when full) tries again.
            Err(_) => {
                self.refused += 1;
                false
            }
        }
    }
}
