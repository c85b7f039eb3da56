//! Just enough ELF64 to load a guest image: its entry point and its PT_LOAD
//! segments. Every field is checked against the file; nothing is trusted.

use crate::memory::addr::{Ipa, PAGE_SIZE};

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const EM_AARCH64: u16 = 183;
const PHDR_LEN: usize = 56;
/// Most PT_LOAD segments an image may have.
pub const MAX_SEGMENTS: usize = 8;

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    NotAarch64Executable,
    /// A header or segment points outside the file.
    Truncated,
    /// A segment is both writable and executable.
    WritableAndExecutable,
    /// A segment's address is not page aligned or outside the allowed window.
    BadAddress,
    TooManySegments,
}

/// One loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: Ipa,
    /// Bytes of the file that fill its start.
    pub file_offset: usize,
    pub file_len: usize,
    /// Total size in memory (the rest is zero: .bss).
    pub mem_len: u64,
    pub writable: bool,
    pub executable: bool,
}

/// A parsed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    pub entry: Ipa,
    pub segments: heapless::Vec<Segment, MAX_SEGMENTS>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

impl ElfImage {
    /// Parse `file`, accepting only segments inside `[lo, hi)`.
    pub fn parse(file: &[u8], lo: u64, hi: u64) -> Result<Self, ElfError> {
        if file.get(0..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf);
        }
        // ELFCLASS64, little-endian, ET_EXEC, EM_AARCH64.
        if file.get(4) != Some(&2) || file.get(5) != Some(&1) {
            return Err(ElfError::NotAarch64Executable);
        }
        let t = ElfError::Truncated;
        if u16_at(file, 16).ok_or(t)? != 2 || u16_at(file, 18).ok_or(t)? != EM_AARCH64 {
            return Err(ElfError::NotAarch64Executable);
        }
        let entry = u64_at(file, 24).ok_or(t)?;
        let phoff = usize::try_from(u64_at(file, 32).ok_or(t)?).map_err(|_| t)?;
        let phentsize = usize::from(u16_at(file, 54).ok_or(t)?);
        let phnum = usize::from(u16_at(file, 56).ok_or(t)?);
        if phentsize != PHDR_LEN {
            return Err(ElfError::NotAarch64Executable);
        }
        let mut segments = heapless::Vec::new();
        for i in 0..phnum {
            let ph = phoff.checked_add(i * PHDR_LEN).ok_or(t)?;
            let hdr = file.get(ph..ph + PHDR_LEN).ok_or(t)?;
            if u32_at(hdr, 0).ok_or(t)? != PT_LOAD {
                continue;
            }
            let flags = u32_at(hdr, 4).ok_or(t)?;
            let offset = usize::try_from(u64_at(hdr, 8).ok_or(t)?).map_err(|_| t)?;
            let vaddr = u64_at(hdr, 16).ok_or(t)?;
            let filesz = usize::try_from(u64_at(hdr, 32).ok_or(t)?).map_err(|_| t)?;
            let memsz = u64_at(hdr, 40).ok_or(t)?;
            if memsz == 0 {
                continue;
            }
            let file_end = offset.checked_add(filesz).ok_or(t)?;
            if file_end > file.len() || (filesz as u64) > memsz {
                return Err(t);
            }
            let end = vaddr.checked_add(memsz).ok_or(ElfError::BadAddress)?;
            if vaddr % PAGE_SIZE != 0 || vaddr < lo || end > hi {
                return Err(ElfError::BadAddress);
            }
            let writable = flags & PF_W != 0;
            let executable = flags & PF_X != 0;
            if writable && executable {
                return Err(ElfError::WritableAndExecutable);
            }
            segments
                .push(Segment {
                    vaddr: Ipa::new(vaddr),
                    file_offset: offset,
                    file_len: filesz,
                    mem_len: memsz,
                    writable,
                    executable,
                })
                .map_err(|_| ElfError::TooManySegments)?;
        }
        let entry_ok = segments.iter().any(|s: &Segment| {
            s.executable && entry >= s.vaddr.raw() && entry < s.vaddr.raw() + s.mem_len
        });
        if !entry_ok {
            return Err(ElfError::BadAddress);
        }
        // Segments must not overlap (page granular).
        for (i, a) in segments.iter().enumerate() {
            for b in segments.iter().skip(i + 1) {
                let a_end = crate::memory::addr::page_round_up(a.vaddr.raw() + a.mem_len).ok_or(t)?;
                let b_end = crate::memory::addr::page_round_up(b.vaddr.raw() + b.mem_len).ok_or(t)?;
                if a.vaddr.raw() < b_end && b.vaddr.raw() < a_end {
                    return Err(ElfError::BadAddress);
                }
            }
        }
        Ok(Self { entry: Ipa::new(entry), segments })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A minimal AArch64 executable with the given (vaddr, flags, filesz, memsz) segments.
    pub fn build(entry: u64, segs: &[(u64, u32, usize, u64)]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 64 + segs.len() * PHDR_LEN];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let mut data = Vec::new();
        let data_start = f.len();
        for (i, (vaddr, flags, filesz, memsz)) in segs.iter().enumerate() {
            let ph = 64 + i * PHDR_LEN;
            let off = (data_start + data.len()) as u64;
            f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            f[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
            f[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
            f[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[ph + 32..ph + 40].copy_from_slice(&(*filesz as u64).to_le_bytes());
            f[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
            data.extend((0..*filesz).map(|b| (b % 251) as u8 ^ (i as u8)));
        }
        f.extend_from_slice(&data);
        f
    }

    #[test]
    fn parses_text_and_data() {
        let f = build(0x4000_0000, &[(0x4000_0000, 5, 100, 100), (0x4000_1000, 6, 10, 0x3000)]);
        let img = ElfImage::parse(&f, 0x4000_0000, 0x8000_0000).unwrap();
        assert_eq!(img.entry, Ipa::new(0x4000_0000));
        assert_eq!(img.segments.len(), 2);
        assert!(img.segments[0].executable && !img.segments[0].writable);
        assert_eq!(img.segments[1].mem_len, 0x3000);
    }

    #[test]
    fn refuses_hostile_images() {
        let wx = build(0x4000_0000, &[(0x4000_0000, 7, 4, 4)]);
        assert_eq!(ElfImage::parse(&wx, 0x4000_0000, 0x8000_0000), Err(ElfError::WritableAndExecutable));
        let low = build(0x1000, &[(0x1000, 5, 4, 4)]);
        assert_eq!(ElfImage::parse(&low, 0x4000_0000, 0x8000_0000), Err(ElfError::BadAddress));
        let overlap = build(0x4000_0000, &[(0x4000_0000, 5, 4, 0x2000), (0x4000_1000, 6, 4, 4)]);
        assert_eq!(ElfImage::parse(&overlap, 0x4000_0000, 0x8000_0000), Err(ElfError::BadAddress));
        let mut trunc = build(0x4000_0000, &[(0x4000_0000, 5, 100, 100)]);
        trunc.truncate(trunc.len() - 1);
        assert_eq!(ElfImage::parse(&trunc, 0x4000_0000, 0x8000_0000), Err(ElfError::Truncated));
        assert_eq!(ElfImage::parse(b"\0asm", 0, 1), Err(ElfError::NotElf));
        let no_entry = build(0x5000_0000, &[(0x4000_0000, 5, 4, 4)]);
        assert_eq!(ElfImage::parse(&no_entry, 0x4000_0000, 0x8000_0000), Err(ElfError::BadAddress));
    }
}
