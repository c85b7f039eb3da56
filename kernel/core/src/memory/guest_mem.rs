//! Copying between hypervisor memory and a partition's buffers.
//!
//! Every buffer a guest passes (IPA + length) is checked page by page against
//! the partition's stage-2 map before a byte moves: unmapped, device, or (for
//! writes) read-only pages, lengths that wrap, and lengths over the limit are
//! all `BadAddress`. Nothing is copied unless the whole buffer is valid.

use rvm_abi::HvError;

use crate::memory::addr::{Ipa, PAGE_SIZE};
use crate::arch::Arch;
use crate::memory::stage2::{MemType, Stage2Table};

/// Largest buffer one hypercall may pass.
pub const MAX_BUFFER: u64 = 1 << 20;

/// Direction of a copy, which decides the access it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Check the whole buffer and call `f(pa, offset_in_buffer, chunk_len)` for
/// each page-bounded piece.
fn for_each_chunk(
    arch: &dyn Arch,
    s2: &Stage2Table,
    ipa: Ipa,
    len: u64,
    access: Access,
    mut f: impl FnMut(crate::memory::addr::PhysAddr, usize, usize),
) -> Result<(), HvError> {
    if len > MAX_BUFFER {
        return Err(HvError::BadAddress);
    }
    let end = ipa.checked_add(len).ok_or(HvError::BadAddress)?;
    // First pass: validate everything; second pass: act.
    for pass in 0..2 {
        let mut cur = ipa;
        while cur < end {
            let t = s2.translate(arch, cur).ok_or(HvError::BadAddress)?;
            if t.mem != MemType::Normal || (access == Access::Write && !t.perm.writable()) {
                return Err(HvError::BadAddress);
            }
            let chunk = (PAGE_SIZE - cur.page_offset()).min(end.raw() - cur.raw());
            if pass == 1 {
                let off = usize::try_from(cur.raw() - ipa.raw()).map_err(|_| HvError::BadAddress)?;
                let n = usize::try_from(chunk).map_err(|_| HvError::BadAddress)?;
                f(t.pa, off, n);
            }
            cur = Ipa::new(cur.raw() + chunk);
        }
    }
    Ok(())
}

/// Copy `buf.len()` bytes from the guest's `ipa`.
pub fn read(arch: &dyn Arch, s2: &Stage2Table, ipa: Ipa, buf: &mut [u8]) -> Result<(), HvError> {
    let len = u64::try_from(buf.len()).map_err(|_| HvError::BadAddress)?;
    let mut pieces: heapless::Vec<(crate::memory::addr::PhysAddr, usize, usize), 257> = heapless::Vec::new();
    for_each_chunk(arch, s2, ipa, len, Access::Read, |pa, off, n| {
        let _ = pieces.push((pa, off, n));
    })?;
    for (pa, off, n) in pieces {
        arch.phys_read(pa, &mut buf[off..off + n]);
    }
    Ok(())
}

/// Copy `data` into the guest's `ipa` (which must be writable).
pub fn write(arch: &mut dyn Arch, s2: &Stage2Table, ipa: Ipa, data: &[u8]) -> Result<(), HvError> {
    let len = u64::try_from(data.len()).map_err(|_| HvError::BadAddress)?;
    let mut pieces: heapless::Vec<(crate::memory::addr::PhysAddr, usize, usize), 257> = heapless::Vec::new();
    for_each_chunk(arch, s2, ipa, len, Access::Write, |pa, off, n| {
        let _ = pieces.push((pa, off, n));
    })?;
    for (pa, off, n) in pieces {
        arch.phys_write(pa, &data[off..off + n]);
    }
    Ok(())
}

/// Check that `len` bytes at `ipa` could be written, without writing.
pub fn check_writable(arch: &dyn Arch, s2: &Stage2Table, ipa: Ipa, len: u64) -> Result<(), HvError> {
    for_each_chunk(arch, s2, ipa, len, Access::Write, |_, _, _| {})
}
