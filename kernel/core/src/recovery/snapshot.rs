//! Snapshots: the agent image a partition's runtime hands over at a turn
//! boundary (the `Snapshot` hypercall), kept by EL2 in frames of its own
//! together with a snapshot of the committed state store, and hashed into a
//! byte-stable state hash ([`rvm_state::digest::state_hash`]: SHA-256 over
//! [`rvm_abi::recovery::StateEncoder`]'s encoding, with the same SHA-256 as
//! the witness log).
//!
//! The image's bytes move from the guest's frames to the snapshot's with
//! `phys_copy`, page by page; EL2's heap never holds them, so a snapshot
//! costs frames, bounded per partition by its [`SnapshotLimit`]. One
//! snapshot is kept per partition: a new one replaces the last once it is
//! complete. To restore, the frames are mapped read-only into the partition
//! at [`layout::SNAPSHOT_IPA`] for the runtime to read.

use alloc::vec::Vec;

use rvm_abi::bootinfo::layout;
use rvm_abi::HvError;

use crate::memory::addr::{Ipa, PhysAddr, PAGE_BYTES, PAGE_SIZE};
use crate::arch::Arch;
use crate::memory::frames::FrameAllocator;
use crate::memory::stage2::{MapError, MemType, S2Perm, Stage2Table};
use rvm_state::store::StoreSnapshot;

/// Room a snapshot may take beyond the agent's memory budget: the image
/// header and its globals.
pub const SNAPSHOT_OVERHEAD: u64 = 64 << 10;

/// The largest snapshot a partition may hand over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLimit {
    pub max_bytes: u64,
}

impl SnapshotLimit {
    /// The partition's WASM memory budget plus [`SNAPSHOT_OVERHEAD`],
    /// and never more than the restore window holds.
    pub fn for_budget(wasm_pages: u32) -> Self {
        let memory = u64::from(wasm_pages).saturating_mul(layout::WASM_PAGE);
        Self { max_bytes: memory.saturating_add(SNAPSHOT_OVERHEAD).min(layout::SNAPSHOT_MAX_LEN) }
    }
}

/// SHA-256 of a snapshot's canonical encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateHash(pub [u8; 32]);

impl StateHash {
    /// The first 16 bytes, as witness records carry them.
    pub fn prefix16(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.0[..16]);
        out
    }

    /// The first 16 bytes as two little-endian words (hypercall results).
    pub fn prefix_words(&self) -> [u64; 2] {
        let p = self.prefix16();
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&p[..8]);
        hi.copy_from_slice(&p[8..]);
        [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
    }
}

/// One piece of guest memory named by the hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPart {
    pub ipa: Ipa,
    pub len: u64,
}

/// A kept snapshot.
#[derive(Debug)]
pub struct Snapshot {
    /// The id its `Snapshot` call returned (1, 2, ... per partition).
    pub id: u64,
    /// Length of the agent image.
    pub len: u64,
    frames: Vec<PhysAddr>,
    /// The committed state when it was taken.
    pub store: StoreSnapshot,
    pub hash: StateHash,
}

impl Snapshot {
    /// Copy the concatenation of `parts` of the partition's memory into
    /// fresh frames and hash it with `store`. Nothing is allocated unless
    /// every part is mapped normal memory of the partition and the total
    /// fits `limit`.
    pub fn capture(
        arch: &mut dyn Arch,
        frames: &mut FrameAllocator,
        s2: &Stage2Table,
        parts: &[GuestPart],
        limit: SnapshotLimit,
        id: u64,
        store: StoreSnapshot,
    ) -> Result<Self, HvError> {
        let mut total: u64 = 0;
        for part in parts {
            total = total.checked_add(part.len).ok_or(HvError::InvalidArgument)?;
        }
        if total == 0 || total > limit.max_bytes {
            return Err(HvError::InvalidArgument);
        }
        // Every source piece, page-bounded, checked before anything moves.
        let mut sources: Vec<(PhysAddr, usize)> = Vec::new();
        for part in parts.iter().filter(|p| p.len != 0) {
            let end = part.ipa.checked_add(part.len).ok_or(HvError::BadAddress)?;
            let mut cur = part.ipa;
            while cur < end {
                let t = s2.translate(arch, cur).ok_or(HvError::BadAddress)?;
                if t.mem != MemType::Normal {
                    return Err(HvError::BadAddress);
                }
                let chunk = (PAGE_SIZE - cur.page_offset()).min(end.raw() - cur.raw());
                sources.push((t.pa, usize::try_from(chunk).map_err(|_| HvError::BadAddress)?));
                cur = Ipa::new(cur.raw() + chunk);
            }
        }
        let pages = usize::try_from(crate::memory::addr::page_round_up(total).ok_or(HvError::InvalidArgument)? / PAGE_SIZE)
            .map_err(|_| HvError::NoMemory)?;
        let mut own = Vec::with_capacity(pages);
        for _ in 0..pages {
            match frames.alloc() {
                Some(pa) => own.push(pa),
                None => {
                    for pa in own {
                        frames.free(pa);
                    }
                    return Err(HvError::NoMemory);
                }
            }
        }
        // The tail of the last frame must not carry an earlier owner's bytes.
        if let Some(&last) = own.last() {
            arch.phys_zero(last, PAGE_BYTES);
        }
        let (mut frame, mut off) = (0usize, 0usize);
        for (mut pa, mut left) in sources {
            while left > 0 {
                let take = left.min(PAGE_BYTES - off);
                arch.phys_copy(PhysAddr::new(own[frame].raw() + off as u64), pa, take);
                pa = PhysAddr::new(pa.raw() + take as u64);
                left -= take;
                off += take;
                if off == PAGE_BYTES {
                    frame += 1;
                    off = 0;
                }
            }
        }
        let mut ck = Self { id, len: total, frames: own, store, hash: StateHash([0; 32]) };
        ck.hash = ck.compute_hash(arch);
        Ok(ck)
    }

    /// The state hash of the image in the frames and the store snapshot.
    fn compute_hash(&self, arch: &dyn Arch) -> StateHash {
        let image = |feed: &mut dyn FnMut(&[u8])| {
            let mut buf = [0u8; PAGE_BYTES];
            let mut left = self.len;
            for &pa in &self.frames {
                let n = usize::try_from(left.min(PAGE_SIZE)).unwrap_or(PAGE_BYTES);
                arch.phys_read(pa, &mut buf[..n]);
                feed(&buf[..n]);
                left -= n as u64;
            }
        };
        StateHash(rvm_state::digest::state_hash(self.len, image, &self.store))
    }

    /// Frames holding the image.
    pub fn pages(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Read `buf.len()` bytes of the image from `offset` (host tests and
    /// diagnostics).
    pub fn read(&self, arch: &dyn Arch, offset: u64, buf: &mut [u8]) -> Result<(), HvError> {
        let end = offset.checked_add(buf.len() as u64).ok_or(HvError::InvalidArgument)?;
        if end > self.len {
            return Err(HvError::InvalidArgument);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let frame = self.frames[usize::try_from(at / PAGE_SIZE).map_err(|_| HvError::InvalidArgument)?];
            let in_page = (at % PAGE_SIZE) as usize;
            let take = (buf.len() - done).min(PAGE_BYTES - in_page);
            arch.phys_read(PhysAddr::new(frame.raw() + in_page as u64), &mut buf[done..done + take]);
            done += take;
        }
        Ok(())
    }

    /// Map the image read-only at [`layout::SNAPSHOT_IPA`]. Returns the
    /// pages mapped (unmap them with [`unmap_window`]).
    pub fn map_into(&self, arch: &mut dyn Arch, frames: &mut FrameAllocator, s2: &mut Stage2Table) -> Result<u64, MapError> {
        for (n, &pa) in self.frames.iter().enumerate() {
            let ipa = Ipa::new(layout::SNAPSHOT_IPA + n as u64 * PAGE_SIZE);
            s2.map(arch, frames, ipa, pa, S2Perm::ReadOnly, MemType::Normal)?;
        }
        Ok(self.pages())
    }

    /// Scrub and return the frames.
    pub fn release(self, arch: &mut dyn Arch, frames: &mut FrameAllocator) {
        for pa in self.frames {
            arch.phys_zero(pa, PAGE_BYTES);
            frames.free(pa);
        }
    }
}

/// Remove `pages` mappings of the restore window.
pub fn unmap_window(arch: &mut dyn Arch, s2: &mut Stage2Table, pages: u64, vmid: u8) {
    let ipas = (0..pages).map(|n| Ipa::new(layout::SNAPSHOT_IPA + n * PAGE_SIZE));
    s2.unmap_many(arch, ipas, vmid);
}
