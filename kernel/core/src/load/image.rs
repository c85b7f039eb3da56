//! Guest images: an AArch64 ELF loaded once into frames. Read-only and
//! executable pages are shared by every partition that maps the image;
//! writable pages are copied from a pristine version into each partition.

use alloc::vec::Vec;

use crate::memory::addr::{Ipa, PhysAddr, PAGE_BYTES, PAGE_SIZE};
use crate::arch::Arch;
use crate::load::elf::{ElfError, ElfImage};
use crate::memory::frames::FrameAllocator;
use crate::memory::stage2::{MapError, MemType, S2Perm, Stage2Table};

/// Why an image could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    Elf(ElfError),
    OutOfMemory,
}

/// One page of a loaded image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImagePage {
    pub ipa: Ipa,
    pub pa: PhysAddr,
    /// `ReadWrite` pages are pristine copies, never mapped themselves.
    pub perm: S2Perm,
}

/// A loaded image.
#[derive(Debug)]
pub struct SharedImage {
    pub entry: Ipa,
    pub pages: Vec<ImagePage>,
}

impl SharedImage {
    /// Parse `file` and copy its segments into frames.
    pub fn load(arch: &mut dyn Arch, frames: &mut FrameAllocator, file: &[u8]) -> Result<Self, ImageError> {
        use rvm_abi::bootinfo::layout::{IMAGE_BASE, IMAGE_LIMIT};
        let elf = ElfImage::parse(file, IMAGE_BASE, IMAGE_LIMIT).map_err(ImageError::Elf)?;
        let mut pages = Vec::new();
        for seg in &elf.segments {
            let perm = match (seg.writable, seg.executable) {
                (true, _) => S2Perm::ReadWrite,
                (false, true) => S2Perm::ReadExec,
                (false, false) => S2Perm::ReadOnly,
            };
            let count = crate::memory::addr::page_round_up(seg.mem_len).ok_or(ImageError::OutOfMemory)? / PAGE_SIZE;
            for n in 0..count {
                let Some(pa) = frames.alloc() else {
                    for p in &pages {
                        let p: &ImagePage = p;
                        frames.free(p.pa);
                    }
                    return Err(ImageError::OutOfMemory);
                };
                arch.phys_zero(pa, PAGE_BYTES);
                let off = (n * PAGE_SIZE) as usize;
                if off < seg.file_len {
                    let take = (seg.file_len - off).min(PAGE_BYTES);
                    let src = &file[seg.file_offset + off..seg.file_offset + off + take];
                    arch.phys_write(pa, src);
                }
                if perm == S2Perm::ReadExec {
                    arch.sync_icache(pa, PAGE_BYTES);
                }
                pages.push(ImagePage { ipa: Ipa::new(seg.vaddr.raw() + n * PAGE_SIZE), pa, perm });
            }
        }
        Ok(Self { entry: elf.entry, pages })
    }

    /// Map the image into a partition: shared read-only/executable pages as
    /// they are, writable pages as fresh private copies (returned in `private`).
    pub fn map_into(
        &self,
        arch: &mut dyn Arch,
        frames: &mut FrameAllocator,
        s2: &mut Stage2Table,
        private: &mut Vec<PhysAddr>,
    ) -> Result<(), MapError> {
        for page in &self.pages {
            let pa = if page.perm == S2Perm::ReadWrite {
                let copy = frames.alloc().ok_or(MapError::OutOfFrames)?;
                arch.phys_copy(copy, page.pa, PAGE_BYTES);
                private.push(copy);
                copy
            } else {
                page.pa
            };
            s2.map(arch, frames, page.ipa, pa, page.perm, MemType::Normal)?;
        }
        Ok(())
    }

    /// Frames shared by every partition that maps the image.
    pub fn shared_frames(&self) -> usize {
        self.pages.iter().filter(|p| p.perm != S2Perm::ReadWrite).count()
    }

    /// Frames each partition gets for itself.
    pub fn private_frames(&self) -> usize {
        self.pages.len() - self.shared_frames()
    }
}
