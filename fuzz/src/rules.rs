//! SPEC.md's validation rules taken literally, in the order §3 and §4 list them: the first
//! broken rule with the values the Rust error carries, or the span of a valid descriptor.
//! Only the error and source types come from `stridemap-core`.

use std::ops::Range;

use stridemap_core::{CompactDescriptor, DecodeError, MAX_BYTES, Source};

use crate::model::Geometry;
use crate::spec::crc32c;

/// The rules of §3 (R1 to R22) on the bytes of a fixed record (the first 1024 count).
pub fn fixed(bytes: &[u8]) -> Result<Range<u64>, DecodeError> {
    let Some(r) = bytes.first_chunk::<1024>() else {
        return Err(DecodeError::Truncated {
            needed: 1024,
            got: bytes.len(),
        });
    };
    let u16_at = |at: usize| u16::from_le_bytes([r[at], r[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"));

    let found: [u8; 8] = r[..8].try_into().expect("8 bytes");
    if &found != b"\x89SMD\r\n\x1a\n" {
        return Err(DecodeError::BadMagic { found });
    }
    let (major, minor) = (u16_at(8), u16_at(10));
    if major != 1 {
        return Err(DecodeError::UnsupportedVersion { major, minor });
    }
    let (stored, computed) = (u32_at(1020), crc32c(&r[..1020]));
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    // R5 and R7 only for the minor version this reader knows, 0.
    let flags = u32_at(12);
    if minor == 0 && flags >> 4 != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    if (flags >> 1) & 3 == 3 {
        return Err(DecodeError::BadMode { code: 3 });
    }
    if minor == 0 {
        for (start, len) in [(19, 1), (26, 6), (104, 24), (896, 124)] {
            if let Some(i) = r[start..start + len].iter().position(|&b| b != 0) {
                return Err(DecodeError::ReservedNotZero { offset: start + i });
            }
        }
    }
    dtype(r[16], r[17], u64::from(u32_at(20)))?;
    let ndim = usize::from(r[18]);
    if ndim > 32 {
        return Err(DecodeError::TooManyAxes { ndim });
    }
    if let Some(axis) = (ndim..32).find(|&k| u64_at(128 + 8 * k) != 0 || u64_at(384 + 8 * k) != 0) {
        return Err(DecodeError::UnusedAxisNotZero { axis });
    }
    let len = usize::from(u16_at(24));
    if len > 256 {
        return Err(DecodeError::PathTooLong { len });
    }
    let field = &r[640..896];
    if let Some(i) = field[len..].iter().position(|&b| b != 0) {
        return Err(DecodeError::PathPaddingNotZero { offset: len + i });
    }
    let path = std::str::from_utf8(&field[..len]).map_err(|e| DecodeError::PathNotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    path_and_source(path, flags & 8 != 0)?;
    let geometry = Geometry {
        itemsize: u32_at(20),
        shape: (0..ndim).map(|k| u64_at(128 + 8 * k)).collect(),
        strides: (0..ndim)
            .map(|k| i128::from(u64_at(384 + 8 * k) as i64))
            .collect(),
        offset: i128::from(u64_at(48)),
        buffer_len: u64_at(40),
    };
    placement(&geometry, u64_at(32), u64_at(56))
}

/// The rules §4 applies once a compact form has decoded (to `c`, with the right magic and
/// major version and no trailing bytes a 1.0 reader refuses): C3, C4, R8 to R10, then R13 to
/// R22.
pub fn compact(c: &CompactDescriptor) -> Result<Range<u64>, DecodeError> {
    if c.shape.len() != c.strides.len() {
        return Err(DecodeError::AxisCountMismatch {
            shape: c.shape.len(),
            strides: c.strides.len(),
        });
    }
    let t = c.dtype.as_bytes();
    let digits = t.get(2..).unwrap_or_default();
    let well_formed = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1);
    let itemsize = std::str::from_utf8(digits)
        .ok()
        .filter(|_| well_formed)
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or(DecodeError::BadTypestr)?;
    dtype(t[0], t[1], itemsize)?;
    let (path, fd) = match &c.source {
        stridemap_core::CompactSource::Path(p) => (p.as_str(), false),
        stridemap_core::CompactSource::Fd => ("", true),
    };
    if path.len() > 256 {
        return Err(DecodeError::PathTooLong { len: path.len() });
    }
    path_and_source(path, fd)?;
    let geometry = Geometry {
        itemsize: itemsize as u32,
        shape: c.shape.to_vec(),
        strides: c.strides.iter().map(|&s| i128::from(s)).collect(),
        offset: i128::from(c.offset),
        buffer_len: c.buffer_len,
    };
    placement(&geometry, c.buffer_offset, c.file_len)
}

/// R18 to R22: the buffer inside the file, then the array inside the buffer.
pub fn placement(
    g: &Geometry,
    buffer_offset: u64,
    file_len: u64,
) -> Result<Range<u64>, DecodeError> {
    let buffer_end = u128::from(buffer_offset) + u128::from(g.buffer_len);
    if buffer_end > u128::from(MAX_BYTES) {
        return Err(DecodeError::BufferOverflow {
            buffer_offset,
            buffer_len: g.buffer_len,
        });
    }
    if u128::from(file_len) < buffer_end {
        return Err(DecodeError::FileTooShort {
            buffer_end: buffer_end as u64,
            file_len,
        });
    }
    g.verdict()
}

/// R8 to R10: the kind, the itemsize the kind allows (§2.2), the byte order.
fn dtype(byteorder: u8, kind: u8, itemsize: u64) -> Result<(), DecodeError> {
    let allowed = match kind {
        b'b' => itemsize == 1,
        b'i' | b'u' => matches!(itemsize, 1 | 2 | 4 | 8),
        b'f' => matches!(itemsize, 2 | 4 | 8 | 16),
        b'c' => matches!(itemsize, 8 | 16 | 32),
        b'V' => (1..=(1 << 31) - 1).contains(&itemsize),
        _ => return Err(DecodeError::UnknownKind { kind }),
    };
    if !allowed {
        return Err(DecodeError::BadItemsize { kind, itemsize });
    }
    let ok = if itemsize == 1 || kind == b'V' {
        byteorder == b'|'
    } else {
        byteorder == b'<' || byteorder == b'>'
    };
    if !ok {
        return Err(DecodeError::BadByteOrder {
            byteorder,
            kind,
            itemsize: itemsize as u32,
        });
    }
    Ok(())
}

/// R16 and R17 on a UTF-8 path.
fn path_and_source(path: &str, fd: bool) -> Result<(), DecodeError> {
    if let Some(index) = path.bytes().position(|b| b == 0) {
        return Err(DecodeError::PathContainsNul { index });
    }
    if fd == !path.is_empty() {
        let source = if fd { Source::Fd } else { Source::Path };
        return Err(DecodeError::SourceMismatch {
            source,
            path_len: path.len(),
        });
    }
    Ok(())
}
