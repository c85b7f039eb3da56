//! The byte-stable image of an agent's state that the engine hands to the
//! hypervisor at a turn boundary, and restores from.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RVMCKPT2"
//! 8       8     linear memory length in bytes (LE)
//! 16      4     number of globals (LE)
//! 20      4     table length in elements (LE)
//! 24      8     turns completed when it was taken (LE)
//! 32      16×n  globals, in export order: type tag u8, 7 bytes 0, value bits u64 LE
//! ..      len   linear memory
//! ```
//!
//! Captured: the linear memory, every mutable numeric global (the engine
//! refuses to snapshot an agent with a mutable global it does not export —
//! Rust agents export `__stack_pointer` for this), the turn count, and the
//! table's length. A table's contents are function references, which have no
//! byte form; a restored agent gets its table as instantiation builds it
//! (its element segments), and restore refuses an image whose table length
//! differs. That is exact because the screen only lets an agent snapshot
//! when none of its code can change a table or an element segment
//! (`table.set`, `table.grow`, `table.fill`, `table.copy`, `table.init`,
//! `elem.drop`): such an agent's `snapshot` import answers `NotSupported`,
//! as for a hidden mutable global. Rust agents never change their tables.
//!
//! The header and globals ([`encode_header`]) and the memory are handed to
//! the hypervisor as two parts of one image, so the memory is never copied
//! inside the partition; [`encode`] builds the same bytes in one buffer.

use alloc::vec::Vec;

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"RVMCKPT2";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Length of one global entry.
pub const GLOBAL_LEN: usize = 16;

/// A global's value with its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// Bit pattern of an `f32`.
    F32(u32),
    /// Bit pattern of an `f64`.
    F64(u64),
}

impl GlobalValue {
    fn tag(self) -> u8 {
        match self {
            GlobalValue::I32(_) => 1,
            GlobalValue::I64(_) => 2,
            GlobalValue::F32(_) => 3,
            GlobalValue::F64(_) => 4,
        }
    }

    /// Whether `other` has the same type.
    pub fn same_type(self, other: GlobalValue) -> bool {
        self.tag() == other.tag()
    }

    fn bits(self) -> u64 {
        match self {
            GlobalValue::I32(v) => u64::from(u32::from_ne_bytes(v.to_ne_bytes())),
            GlobalValue::I64(v) => u64::from_ne_bytes(v.to_ne_bytes()),
            GlobalValue::F32(v) => u64::from(v),
            GlobalValue::F64(v) => v,
        }
    }

    fn from_parts(tag: u8, bits: u64) -> Option<Self> {
        let low = u32::try_from(bits).ok();
        match tag {
            1 => low.map(|v| GlobalValue::I32(i32::from_ne_bytes(v.to_ne_bytes()))),
            2 => Some(GlobalValue::I64(i64::from_ne_bytes(bits.to_ne_bytes()))),
            3 => low.map(GlobalValue::F32),
            4 => Some(GlobalValue::F64(bits)),
            _ => None,
        }
    }
}

/// What an image records besides the memory bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMeta {
    pub globals: Vec<GlobalValue>,
    /// Elements in the agent's table (0 without one).
    pub table_len: u32,
    /// Turns the agent had completed.
    pub turn: u64,
}

/// The header and globals of an image whose memory is `memory_len` bytes.
pub fn encode_header(meta: &ImageMeta, memory_len: usize) -> Vec<u8> {
    // A module has far fewer than 2^32 globals; the count saturates rather
    // than wraps, and only that many entries follow.
    let count = u32::try_from(meta.globals.len()).unwrap_or(u32::MAX);
    let entries = usize::try_from(count).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + entries.min(meta.globals.len()) * GLOBAL_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&u64::try_from(memory_len).unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&meta.table_len.to_le_bytes());
    out.extend_from_slice(&meta.turn.to_le_bytes());
    for g in meta.globals.iter().take(entries) {
        out.push(g.tag());
        out.extend_from_slice(&[0; 7]);
        out.extend_from_slice(&g.bits().to_le_bytes());
    }
    out
}

/// The whole image in one buffer.
pub fn encode(meta: &ImageMeta, memory: &[u8]) -> Vec<u8> {
    let mut out = encode_header(meta, memory.len());
    out.extend_from_slice(memory);
    out
}

/// A decoded image, borrowing its memory bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    pub meta: ImageMeta,
    pub memory: &'a [u8],
}

/// Why an image did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    BadMagic,
    Truncated,
    BadGlobal { index: usize },
    TrailingBytes,
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, ImageError> {
    let mut x = [0u8; 4];
    x.copy_from_slice(b.get(o..o + 4).ok_or(ImageError::Truncated)?);
    Ok(u32::from_le_bytes(x))
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, ImageError> {
    let mut x = [0u8; 8];
    x.copy_from_slice(b.get(o..o + 8).ok_or(ImageError::Truncated)?);
    Ok(u64::from_le_bytes(x))
}

/// Decode an image.
pub fn decode(bytes: &[u8]) -> Result<Image<'_>, ImageError> {
    let header = bytes.get(..HEADER_LEN).ok_or(ImageError::Truncated)?;
    if header[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let memory_len = usize::try_from(u64_at(header, 8)?).map_err(|_| ImageError::Truncated)?;
    let count = usize::try_from(u32_at(header, 16)?).map_err(|_| ImageError::Truncated)?;
    let table_len = u32_at(header, 20)?;
    let turn = u64_at(header, 24)?;
    let globals_end = count
        .checked_mul(GLOBAL_LEN)
        .and_then(|g| g.checked_add(HEADER_LEN))
        .ok_or(ImageError::Truncated)?;
    let table = bytes
        .get(HEADER_LEN..globals_end)
        .ok_or(ImageError::Truncated)?;
    let mut globals = Vec::with_capacity(count);
    for (index, entry) in table.chunks_exact(GLOBAL_LEN).enumerate() {
        let bits = u64_at(entry, 8)?;
        let value =
            GlobalValue::from_parts(entry[0], bits).ok_or(ImageError::BadGlobal { index })?;
        globals.push(value);
    }
    let end = globals_end
        .checked_add(memory_len)
        .ok_or(ImageError::Truncated)?;
    let memory = bytes.get(globals_end..end).ok_or(ImageError::Truncated)?;
    if bytes.len() != end {
        return Err(ImageError::TrailingBytes);
    }
    Ok(Image {
        meta: ImageMeta {
            globals,
            table_len,
            turn,
        },
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn meta() -> ImageMeta {
        ImageMeta {
            globals: vec![
                GlobalValue::I32(-5),
                GlobalValue::I64(1 << 40),
                GlobalValue::F32(0x7fc0_0000),
                GlobalValue::F64(3),
            ],
            table_len: 7,
            turn: 250,
        }
    }

    #[test]
    fn round_trip_and_the_two_part_form_is_the_same_bytes() {
        let memory = [1u8, 2, 3, 4, 5];
        let image = encode(&meta(), &memory);
        assert_eq!(image.len(), HEADER_LEN + 4 * GLOBAL_LEN + 5);
        let mut parts = encode_header(&meta(), memory.len());
        parts.extend_from_slice(&memory);
        assert_eq!(parts, image);
        let back = decode(&image).unwrap();
        assert_eq!(back.meta, meta());
        assert_eq!(back.memory, memory);
    }

    #[test]
    fn damage_is_detected() {
        let m = ImageMeta {
            globals: vec![GlobalValue::I32(1)],
            table_len: 0,
            turn: 1,
        };
        let image = encode(&m, &[9; 16]);
        assert_eq!(
            decode(&image[..image.len() - 1]),
            Err(ImageError::Truncated)
        );
        let mut extra = image.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(ImageError::TrailingBytes));
        let mut magic = image.clone();
        magic[0] ^= 1;
        assert_eq!(decode(&magic), Err(ImageError::BadMagic));
        let mut tag = image;
        tag[HEADER_LEN] = 9;
        assert_eq!(decode(&tag), Err(ImageError::BadGlobal { index: 0 }));
        assert_eq!(decode(&[0; 8]), Err(ImageError::Truncated));
    }
}
