//! The segment header: 64 bytes at the start of every stridemap-managed segment file, naming
//! the segment and its current generation (SPEC.md §8), so that a descriptor made for an
//! earlier use of a recycled segment is refused instead of mapping new contents.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{SegmentHeaderError, ValidDescriptor};

/// The first eight bytes of a segment file: `\x89SMS\r\n\x1a\n`.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89SMS\r\n\x1a\n";
/// Size of the header.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Where a segment's data starts: the header has a page of its own.
pub const SEGMENT_DATA_OFFSET: u64 = 4096;

/// The header at byte 0 of a segment file; the data starts at `data_offset`.
///
/// ```
/// use stridemap_core::{SegmentHeader, SEGMENT_DATA_OFFSET};
/// use zerocopy::IntoBytes;
/// let h = SegmentHeader::new([7; 16], 3, 1 << 20, 4242);
/// let back = SegmentHeader::decode(h.as_bytes())?;
/// assert_eq!((back.generation.get(), back.data_offset.get() as u64), (3, SEGMENT_DATA_OFFSET));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SegmentHeader {
    /// Offset 0: [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// Offset 8: major version, 1.
    pub version_major: U16,
    /// Offset 10: minor version, 0.
    pub version_minor: U16,
    /// Offset 12: byte offset of the data area, 4096 (the huge page size for segments in huge
    /// pages, see [`SegmentHeader::with_data_offset`]).
    pub data_offset: U32,
    /// Offset 16: the segment's UUID.
    pub segment_id: [u8; 16],
    /// Offset 32: the current generation, at least 1; bumped on every reuse.
    pub generation: U64,
    /// Offset 40: bytes available from `data_offset` on.
    pub capacity: U64,
    /// Offset 48: the creating process's pid (informational).
    pub owner_pid: U32,
    /// Offset 52: reserved, zero.
    pub reserved: [u8; 8],
    /// Offset 60: CRC-32C of bytes 0 to 59.
    pub crc32c: U32,
}

const _: () = assert!(core::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_LEN);

impl SegmentHeader {
    /// A header for generation `generation` of segment `segment_id`, checksum included.
    pub fn new(
        segment_id: [u8; 16],
        generation: u64,
        capacity: u64,
        owner_pid: u32,
    ) -> SegmentHeader {
        let mut h = SegmentHeader::new_zeroed();
        h.magic = SEGMENT_MAGIC;
        h.version_major = U16::new(1);
        h.data_offset = U32::new(SEGMENT_DATA_OFFSET as u32);
        h.segment_id = segment_id;
        h.generation = U64::new(generation);
        h.capacity = U64::new(capacity);
        h.owner_pid = U32::new(owner_pid);
        h.crc32c = U32::new(h.compute_crc());
        h
    }

    /// The same header with the data area at `data_offset` and the checksum updated: segments
    /// in huge pages put their data at the huge page size (2 MiB), so that every consumer maps
    /// it aligned (hugetlb files can only be mapped at multiples of their page size).
    ///
    /// ```
    /// use stridemap_core::SegmentHeader;
    /// use zerocopy::IntoBytes;
    /// let h = SegmentHeader::new([7; 16], 1, 4 << 20, 1).with_data_offset(2 << 20);
    /// assert_eq!(SegmentHeader::decode(h.as_bytes())?.data_offset.get(), 2 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_data_offset(mut self, data_offset: u32) -> SegmentHeader {
        self.data_offset = U32::new(data_offset);
        self.crc32c = U32::new(self.compute_crc());
        self
    }

    fn compute_crc(&self) -> u32 {
        crate::crc::crc32c(self.as_bytes().get(..60).unwrap_or_default())
    }

    /// Reads a header from the first 64 bytes of `bytes`: magic, major version 1, checksum,
    /// a data offset of at least 64 and a generation of at least 1, else
    /// [`SegmentHeaderError`].
    ///
    /// # Errors
    /// [`SegmentHeaderError`], with what is wrong: fewer than 64 bytes, a bad magic, an
    /// unknown major version, a checksum mismatch, or an impossible data offset or generation.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let bad = |what| SegmentHeaderError { what };
        let (h, _) = SegmentHeader::read_from_prefix(bytes).map_err(|_| bad("truncated"))?;
        if h.magic != SEGMENT_MAGIC {
            return Err(bad("bad magic"));
        }
        if h.version_major.get() != 1 {
            return Err(bad("unknown major version"));
        }
        if h.crc32c.get() != h.compute_crc() {
            return Err(bad("checksum mismatch"));
        }
        if (h.data_offset.get() as usize) < SEGMENT_HEADER_LEN || h.generation.get() == 0 {
            return Err(bad("impossible data offset or generation"));
        }
        Ok(h)
    }

    /// Whether this header is the one `desc` was made for (SPEC.md rule O10): same segment
    /// id and generation, and the descriptor's buffer inside the data area.
    pub fn matches(&self, desc: &ValidDescriptor) -> bool {
        let data_end = u64::from(self.data_offset.get()).saturating_add(self.capacity.get());
        desc.segment_id() == Some(self.segment_id)
            && desc.generation() == self.generation.get()
            && desc.buffer_offset() >= u64::from(self.data_offset.get())
            && desc.buffer_offset().saturating_add(desc.buffer_len()) <= data_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, DType};

    #[test]
    fn decode_checks_everything() {
        let h = SegmentHeader::new([1; 16], 1, 8192, 1);
        let good = *h.as_bytes().first_chunk::<64>().unwrap();
        assert!(SegmentHeader::decode(&good).is_ok());
        assert!(SegmentHeader::decode(&good[..63]).is_err());
        for i in [0, 8, 20, 35, 59, 60] {
            let mut b = good;
            b[i] ^= 1;
            assert!(SegmentHeader::decode(&b).is_err(), "byte {i}");
        }
        let zero_gen = SegmentHeader::new([1; 16], 0, 8192, 1);
        assert!(SegmentHeader::decode(zero_gen.as_bytes()).is_err());
    }

    #[test]
    fn matches_needs_id_generation_and_room() {
        let h = SegmentHeader::new([9; 16], 4, 1 << 20, 1);
        let d = |id, generation, offset, len| {
            Builder::new(DType::parse("|u1").unwrap(), &[len])
                .buffer(offset, len)
                .file_len(SEGMENT_DATA_OFFSET + (1 << 20))
                .segment_id(id)
                .generation(generation)
                .path("/dev/shm/x")
                .build()
                .unwrap()
        };
        assert!(h.matches(&d([9; 16], 4, SEGMENT_DATA_OFFSET, 100)));
        assert!(
            !h.matches(&d([9; 16], 3, SEGMENT_DATA_OFFSET, 100)),
            "stale generation"
        );
        assert!(
            !h.matches(&d([8; 16], 4, SEGMENT_DATA_OFFSET, 100)),
            "other segment"
        );
        assert!(!h.matches(&d([9; 16], 4, 0, 100)), "buffer over the header");
    }
}
