//! The byte-stable image of an agent's state that the `checkpoint` import
//! hands to the hypervisor.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RVMCKPT1"
//! 8       8     linear memory length in bytes (LE)
//! 16      4     number of globals (LE)
//! 20      4     reserved, 0
//! 24      16×n  globals, in export order: type tag u8, 7 bytes 0, value bits u64 LE
//! ..      len   linear memory
//! ```
//!
//! Captured: the linear memory and every *exported* mutable numeric global
//! (Rust agents export `__stack_pointer` for this). Non-exported globals and
//! tables are not captured, and restoring an image is not implemented yet.

use alloc::vec::Vec;

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"RVMCKPT1";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;
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

/// Serialize globals and memory into an image.
pub fn encode(globals: &[GlobalValue], memory: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + globals.len() * GLOBAL_LEN + memory.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(
        &u64::try_from(memory.len())
            .unwrap_or(u64::MAX)
            .to_le_bytes(),
    );
    // A module has far fewer than 2^32 globals; the count saturates rather
    // than wraps, and only that many entries follow.
    let count = u32::try_from(globals.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for g in globals
        .iter()
        .take(usize::try_from(count).unwrap_or(usize::MAX))
    {
        out.push(g.tag());
        out.extend_from_slice(&[0; 7]);
        out.extend_from_slice(&g.bits().to_le_bytes());
    }
    out.extend_from_slice(memory);
    out
}

/// A decoded image, borrowing its memory bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    pub globals: Vec<GlobalValue>,
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

/// Decode an image.
pub fn decode(bytes: &[u8]) -> Result<Image<'_>, ImageError> {
    let header = bytes.get(..HEADER_LEN).ok_or(ImageError::Truncated)?;
    if header[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[8..16]);
    let memory_len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| ImageError::Truncated)?;
    let mut count = [0u8; 4];
    count.copy_from_slice(&header[16..20]);
    let count = usize::try_from(u32::from_le_bytes(count)).map_err(|_| ImageError::Truncated)?;
    let globals_end = count
        .checked_mul(GLOBAL_LEN)
        .and_then(|g| g.checked_add(HEADER_LEN))
        .ok_or(ImageError::Truncated)?;
    let table = bytes
        .get(HEADER_LEN..globals_end)
        .ok_or(ImageError::Truncated)?;
    let mut globals = Vec::with_capacity(count);
    for (index, entry) in table.chunks_exact(GLOBAL_LEN).enumerate() {
        let mut bits = [0u8; 8];
        bits.copy_from_slice(&entry[8..16]);
        let value = GlobalValue::from_parts(entry[0], u64::from_le_bytes(bits))
            .ok_or(ImageError::BadGlobal { index })?;
        globals.push(value);
    }
    let end = globals_end
        .checked_add(memory_len)
        .ok_or(ImageError::Truncated)?;
    let memory = bytes.get(globals_end..end).ok_or(ImageError::Truncated)?;
    if bytes.len() != end {
        return Err(ImageError::TrailingBytes);
    }
    Ok(Image { globals, memory })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let globals = [
            GlobalValue::I32(-5),
            GlobalValue::I64(1 << 40),
            GlobalValue::F32(0x7fc0_0000),
            GlobalValue::F64(3),
        ];
        let memory = [1u8, 2, 3, 4, 5];
        let image = encode(&globals, &memory);
        assert_eq!(image.len(), HEADER_LEN + 4 * GLOBAL_LEN + 5);
        let back = decode(&image).unwrap();
        assert_eq!(back.globals, globals);
        assert_eq!(back.memory, memory);
    }

    #[test]
    fn damage_is_detected() {
        let image = encode(&[GlobalValue::I32(1)], &[9; 16]);
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
    }
}
