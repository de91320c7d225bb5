//! The fixed record: 1024 little-endian bytes, readable in place from any offset.

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Maximum number of axes (numpy 1.x's `NPY_MAXDIMS`).
pub const MAX_NDIM: usize = 32;
/// Capacity of the path field in bytes.
pub const PATH_CAPACITY: usize = 256;
/// Size of the fixed record in bytes.
pub const RECORD_LEN: usize = 1024;
/// The first eight bytes of every record: `\x89SMD\r\n\x1a\n`.
pub const MAGIC: [u8; 8] = *b"\x89SMD\r\n\x1a\n";
/// The major version this crate reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// The highest minor version this crate knows.
pub const VERSION_MINOR: u16 = 0;

/// The descriptor as it travels: a `#[repr(C)]` struct of little-endian fields with no
/// padding and alignment 1, so it can be read in place from any byte offset of any buffer.
///
/// A `Record` is just bytes; nothing about it is trusted until [`Record::validate`] turns it
/// into a [`ValidDescriptor`](crate::ValidDescriptor). SPEC.md §2 has the byte table.
///
/// ```
/// use stridemap_core::{DType, Builder, Record};
/// use zerocopy::FromBytes;
///
/// let bytes = Builder::new(DType::parse("<f8")?, &[3, 4]).path("/dev/shm/a").build()?.to_bytes();
/// let record = Record::ref_from_bytes(&bytes[..]).unwrap(); // in place, no copy
/// assert_eq!(record.ndim, 2);
/// assert_eq!(record.validate()?.shape(), &[3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Record {
    /// Offset 0: [`MAGIC`].
    pub magic: [u8; 8],
    /// Offset 8: major version, 1.
    pub version_major: U16,
    /// Offset 10: minor version, 0.
    pub version_minor: U16,
    /// Offset 12: bit 0 order (F), bits 1–2 mode, bit 3 source (fd); the rest zero.
    pub flags: U32,
    /// Offset 16: dtype byte order, `<`, `>` or `|`.
    pub dtype_byteorder: u8,
    /// Offset 17: dtype kind, one of `b i u f c V`.
    pub dtype_kind: u8,
    /// Offset 18: number of axes, 0 to 32.
    pub ndim: u8,
    /// Offset 19: reserved, zero.
    pub reserved0: u8,
    /// Offset 20: bytes per element.
    pub itemsize: U32,
    /// Offset 24: length of the path in bytes.
    pub path_len: U16,
    /// Offset 26: reserved, zero.
    pub reserved1: [u8; 6],
    /// Offset 32: byte offset of the enclosing buffer in the file.
    pub buffer_offset: U64,
    /// Offset 40: length of the enclosing buffer in bytes.
    pub buffer_len: U64,
    /// Offset 48: byte offset of element (0, …, 0) from the buffer's start.
    pub offset: U64,
    /// Offset 56: the file's length when the producer described it.
    pub file_len: U64,
    /// Offset 64: the file's device number (`st_dev`), 0 when not recorded.
    pub device: U64,
    /// Offset 72: the file's inode number (`st_ino`), 0 when not recorded.
    pub inode: U64,
    /// Offset 80: the segment generation, 0 when the file has no segment header.
    pub generation: U64,
    /// Offset 88: the segment's id (a UUID), all zero when none.
    pub segment_id: [u8; 16],
    /// Offset 104: reserved, zero.
    pub reserved2: [u8; 24],
    /// Offset 128: the length of each axis; slots at `ndim` and beyond are zero.
    pub shape: [U64; MAX_NDIM],
    /// Offset 384: the stride of each axis in bytes; slots at `ndim` and beyond are zero.
    pub strides: [I64; MAX_NDIM],
    /// Offset 640: the path, UTF-8 without NUL, zero-padded.
    pub path: [u8; PATH_CAPACITY],
    /// Offset 896: reserved, zero.
    pub reserved3: [u8; 124],
    /// Offset 1020: CRC-32C of bytes 0 to 1019.
    pub crc32c: U32,
}

/// Byte offsets of the fields SPEC.md refers to.
pub mod offsets {
    /// `flags`.
    pub const FLAGS: usize = 12;
    /// `reserved0`.
    pub const RESERVED0: usize = 19;
    /// `reserved1`.
    pub const RESERVED1: usize = 26;
    /// `reserved2`.
    pub const RESERVED2: usize = 104;
    /// `shape`.
    pub const SHAPE: usize = 128;
    /// `strides`.
    pub const STRIDES: usize = 384;
    /// `path`.
    pub const PATH: usize = 640;
    /// `reserved3`.
    pub const RESERVED3: usize = 896;
    /// `crc32c`, the record's last four bytes.
    pub const CRC32C: usize = 1020;
}

const _: () = {
    assert!(core::mem::size_of::<Record>() == RECORD_LEN);
    assert!(core::mem::align_of::<Record>() == 1);
    assert!(core::mem::offset_of!(Record, crc32c) == offsets::CRC32C);
    assert!(core::mem::offset_of!(Record, flags) == offsets::FLAGS);
    assert!(core::mem::offset_of!(Record, reserved0) == offsets::RESERVED0);
    assert!(core::mem::offset_of!(Record, reserved1) == offsets::RESERVED1);
    assert!(core::mem::offset_of!(Record, buffer_offset) == 32);
    assert!(core::mem::offset_of!(Record, generation) == 80);
    assert!(core::mem::offset_of!(Record, segment_id) == 88);
    assert!(core::mem::offset_of!(Record, reserved2) == offsets::RESERVED2);
    assert!(core::mem::offset_of!(Record, shape) == offsets::SHAPE);
    assert!(core::mem::offset_of!(Record, strides) == offsets::STRIDES);
    assert!(core::mem::offset_of!(Record, path) == offsets::PATH);
    assert!(core::mem::offset_of!(Record, reserved3) == offsets::RESERVED3);
};

impl Record {
    /// The CRC-32C of bytes 0 to 1019, which the last four bytes must hold (SPEC.md rule R4).
    pub fn compute_crc(&self) -> u32 {
        crate::crc::crc32c(self.as_bytes().get(..offsets::CRC32C).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn crc_covers_everything_but_itself() {
        let mut r = Record::new_zeroed();
        r.magic = MAGIC;
        let before = r.compute_crc();
        r.crc32c = U32::new(0xdead_beef);
        assert_eq!(r.compute_crc(), before);
        r.reserved3[123] = 1;
        assert_ne!(r.compute_crc(), before);
    }
}
