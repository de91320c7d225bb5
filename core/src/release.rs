//! The release record (SPEC.md §6.2): 1024 bytes a sender puts on a session's connection to
//! tell the receiver to let go of a segment it handed earlier. Its magic differs from a
//! descriptor's in the fourth byte, so no descriptor is ever taken for one (a plain reader
//! refuses it as R2, bad magic), and it carries a CRC-32C like a descriptor.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{RECORD_LEN, ReleaseError};

/// The first eight bytes of a release record: `\x89SMR\r\n\x1a\n`.
pub const RELEASE_MAGIC: [u8; 8] = *b"\x89SMR\r\n\x1a\n";

/// The fixed layout of a release record (all little-endian).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Wire {
    magic: [u8; 8],
    version_major: U16,
    version_minor: U16,
    reserved0: U32,
    segment_id: [u8; 16],
    generation: U64,
    reserved1: [u8; 980],
    crc32c: U32,
}

const _: () = assert!(core::mem::size_of::<Wire>() == RECORD_LEN);

/// "Let go of generation `generation` of segment `segment_id`": what a session's sender
/// writes on the connection once the receiver's mapping is no longer needed.
///
/// ```
/// use stridemap_core::{Release, RECORD_LEN};
/// let r = Release { segment_id: [7; 16], generation: 3 };
/// let bytes: [u8; RECORD_LEN] = r.to_bytes();
/// assert!(Release::is_release(&bytes));
/// assert_eq!(Release::decode(&bytes)?, r);
/// # Ok::<(), stridemap_core::ReleaseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Release {
    /// The segment's UUID (not all zero).
    pub segment_id: [u8; 16],
    /// Its generation (at least 1).
    pub generation: u64,
}

impl Release {
    /// The record's 1024 bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut w = Wire::new_zeroed();
        w.magic = RELEASE_MAGIC;
        w.version_major = U16::new(1);
        w.segment_id = self.segment_id;
        w.generation = U64::new(self.generation);
        let crc = crate::crc::crc32c(w.as_bytes().get(..RECORD_LEN - 4).unwrap_or_default());
        w.crc32c = U32::new(crc);
        let mut out = [0u8; RECORD_LEN];
        out.copy_from_slice(w.as_bytes());
        out
    }

    /// Whether `bytes` start with the release magic (and so are no descriptor).
    ///
    /// ```
    /// assert!(!stridemap_core::Release::is_release(&stridemap_core::MAGIC));
    /// ```
    pub fn is_release(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(&RELEASE_MAGIC[..])
    }

    /// Decodes and checks a release record (the first 1024 bytes of `bytes`), at any
    /// alignment.
    ///
    /// ```
    /// use stridemap_core::{Release, ReleaseError};
    /// let mut b = Release { segment_id: [1; 16], generation: 1 }.to_bytes();
    /// b[40] = 1; // a reserved byte
    /// assert_eq!(Release::decode(&b), Err(ReleaseError::Checksum));
    /// ```
    ///
    /// # Errors
    /// A [`ReleaseError`] saying which check failed, in this order: length, magic, major
    /// version, checksum, reserved bytes, segment id, generation.
    pub fn decode(bytes: &[u8]) -> Result<Release, ReleaseError> {
        let record = bytes.get(..RECORD_LEN).ok_or(ReleaseError::TooShort)?;
        let w = Wire::read_from_bytes(record).map_err(|_| ReleaseError::TooShort)?;
        if w.magic != RELEASE_MAGIC {
            return Err(ReleaseError::Magic);
        }
        if w.version_major.get() != 1 {
            return Err(ReleaseError::Version {
                major: w.version_major.get(),
            });
        }
        let crc = crate::crc::crc32c(record.get(..RECORD_LEN - 4).unwrap_or_default());
        if crc != w.crc32c.get() {
            return Err(ReleaseError::Checksum);
        }
        if w.reserved0.get() != 0 || w.reserved1.iter().any(|&b| b != 0) {
            return Err(ReleaseError::Reserved);
        }
        if w.segment_id == [0; 16] {
            return Err(ReleaseError::NoSegment);
        }
        if w.generation.get() == 0 {
            return Err(ReleaseError::NoGeneration);
        }
        Ok(Release {
            segment_id: w.segment_id,
            generation: w.generation.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, DType, decode};

    fn good() -> [u8; RECORD_LEN] {
        Release {
            segment_id: [9; 16],
            generation: 2,
        }
        .to_bytes()
    }

    fn with_crc(mut b: [u8; RECORD_LEN]) -> [u8; RECORD_LEN] {
        let crc = crate::crc::crc32c(&b[..1020]);
        b[1020..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn round_trips_at_any_offset() {
        let mut shifted = [0u8; RECORD_LEN + 3];
        shifted[3..].copy_from_slice(&good());
        let r = Release::decode(&shifted[3..]).unwrap();
        assert_eq!((r.segment_id, r.generation), ([9; 16], 2));
    }

    #[test]
    fn each_check_refuses() {
        assert_eq!(
            Release::decode(&good()[..1023]),
            Err(ReleaseError::TooShort)
        );
        let mut b = good();
        b[3] = b'D';
        assert_eq!(Release::decode(&with_crc(b)), Err(ReleaseError::Magic));
        let mut b = good();
        b[8] = 2;
        assert_eq!(
            Release::decode(&with_crc(b)),
            Err(ReleaseError::Version { major: 2 })
        );
        let mut b = good();
        b[1019] ^= 1;
        assert_eq!(Release::decode(&b), Err(ReleaseError::Checksum));
        let mut b = good();
        b[500] = 1;
        assert_eq!(Release::decode(&with_crc(b)), Err(ReleaseError::Reserved));
        let mut b = good();
        b[16..32].fill(0);
        assert_eq!(Release::decode(&with_crc(b)), Err(ReleaseError::NoSegment));
        let mut b = good();
        b[32..40].fill(0);
        assert_eq!(
            Release::decode(&with_crc(b)),
            Err(ReleaseError::NoGeneration)
        );
    }

    #[test]
    fn no_descriptor_is_a_release_and_no_release_a_descriptor() {
        let d = Builder::new(DType::parse("<f8").unwrap(), &[4])
            .path("/dev/shm/stridemap-x/a")
            .build()
            .unwrap()
            .to_bytes();
        assert!(!Release::is_release(&d));
        assert_eq!(Release::decode(&d), Err(ReleaseError::Magic));
        let e = decode(&good()).unwrap_err();
        assert_eq!(e.rule(), "R2");
    }

    proptest::proptest! {
        // Under Miri (scripts/test.sh's miri step) a few cases: each costs seconds there.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]

        /// Any bytes: decoding never panics, and what decodes re-encodes to the same bytes.
        #[test]
        fn any_bytes_decode_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1100)) {
            if let Ok(r) = Release::decode(&bytes) {
                proptest::prop_assert_eq!(&r.to_bytes()[..], &bytes[..RECORD_LEN]);
            }
        }

        /// A valid record with one byte changed is refused (the checksum catches it).
        #[test]
        fn one_changed_byte_is_refused(id in proptest::prelude::any::<[u8; 16]>(), generation in 1u64.., at in 0usize..RECORD_LEN, flip in 1u8..) {
            proptest::prop_assume!(id != [0; 16]);
            let mut b = Release { segment_id: id, generation }.to_bytes();
            b[at] ^= flip;
            proptest::prop_assert!(Release::decode(&b).is_err());
        }
    }
}
