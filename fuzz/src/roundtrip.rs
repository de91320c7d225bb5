//! What every valid descriptor must survive, and what every error must be.

use std::ops::Range;

use stridemap_core::{
    COMPACT_MAGIC, COMPACT_MAX_LEN, CompactDescriptor, DType, DecodeError, Layout, Mode, Order,
    RECORD_LEN, Source, VERSION_MAJOR, VERSION_MINOR, ValidDescriptor, decode, decode_compact,
};

use crate::model::Geometry;
use crate::spec;

/// Every error names its SPEC.md rule and displays without panicking.
pub fn check_error(e: &DecodeError) {
    assert!(e.rule().starts_with(['R', 'C']), "{e:?} names no rule");
    assert!(!e.to_string().is_empty());
}

/// A decoding result as [`crate::rules`] states it: the span, or the error.
pub fn span(result: &Result<ValidDescriptor, DecodeError>) -> Result<Range<u64>, DecodeError> {
    result.as_ref().map(ValidDescriptor::span).map_err(|e| *e)
}

/// Round trips of a valid descriptor: its record bytes decode to it from any alignment, its
/// builder rebuilds it, its compact form (encoded, and as the serde type) decodes to it, its
/// layout is the one [`Layout::new`] makes of its fields, and the naive model finds that
/// layout valid with the same span.
///
/// A descriptor of a newer minor version keeps the flag bits and reserved bytes this crate
/// does not know in its record, but re-encoding writes version 1.0 with them zeroed (SPEC.md
/// §5: writers zero what they do not fill in); there the comparison is of everything a 1.0
/// reader sees.
pub fn check_valid(d: &ValidDescriptor) {
    let bytes = d.to_bytes();
    assert_eq!(decode(&bytes).as_ref(), Ok(d));
    let mut shifted = [0u8; RECORD_LEN + 1];
    shifted[1..].copy_from_slice(&bytes);
    assert_eq!(decode(&shifted[1..]).as_ref(), Ok(d));
    assert_eq!(d.to_record().validate().as_ref(), Ok(d));
    let stored = u32::from_le_bytes(bytes[1020..].try_into().expect("4 bytes"));
    assert_eq!(
        stored,
        spec::crc32c(&bytes[..1020]),
        "to_bytes writes the SPEC checksum"
    );

    let rebuilt = d.to_builder().build().expect("a valid descriptor rebuilds");
    assert_same(&rebuilt, d);

    let mut buf = [0u8; COMPACT_MAX_LEN];
    let compact = d
        .encode_compact(&mut buf)
        .expect("COMPACT_MAX_LEN suffices");
    let from_compact = decode_compact(compact).expect("the compact form decodes");
    assert_same(&from_compact, d);
    assert_eq!(owned_decode(compact).as_ref(), Ok(&from_compact));
    assert_eq!(d.to_compact().validate().as_ref(), Ok(&from_compact));

    let l = d.layout();
    let fresh = Layout::new(
        d.itemsize(),
        d.shape(),
        d.strides(),
        d.offset(),
        d.buffer_len(),
    );
    assert_eq!(fresh, Ok(l));
    assert_eq!(
        Geometry::of(&l).verdict(),
        Ok(d.span()),
        "the model disagrees"
    );
    assert_eq!(
        (l.span(), l.len(), l.nbytes()),
        (d.span(), d.len(), d.nbytes())
    );
    assert_eq!(
        (l.is_c_contiguous(), l.is_f_contiguous(), l.is_empty()),
        (d.is_c_contiguous(), d.is_f_contiguous(), d.is_empty())
    );
    // The file offset is computed without a check; it must fit (R18, R22).
    assert_eq!(
        u128::from(d.file_offset()),
        u128::from(d.buffer_offset()) + u128::from(d.offset())
    );
    assert!(!format!("{d:?}").is_empty());
}

/// The compact decoder's reference: the serde type decoded whole by postcard, then
/// validated (as `core/tests/roundtrip.rs` does).
pub fn owned_decode(bytes: &[u8]) -> Result<ValidDescriptor, DecodeError> {
    owned_compact(bytes)?.validate()
}

/// The serde type decoded whole by postcard: C2, then C1 for anything postcard refuses and
/// for trailing bytes a 1.0 reader refuses.
pub fn owned_compact(bytes: &[u8]) -> Result<CompactDescriptor, DecodeError> {
    if !bytes.starts_with(&COMPACT_MAGIC) {
        return Err(DecodeError::CompactBadMagic);
    }
    let (c, rest) = postcard::take_from_bytes::<CompactDescriptor>(bytes)
        .map_err(|_| DecodeError::CompactMalformed)?;
    #[allow(
        clippy::absurd_extreme_comparisons,
        reason = "true for this version, not for later ones"
    )]
    let known_minor = c.minor <= VERSION_MINOR;
    if c.major == VERSION_MAJOR && known_minor && !rest.is_empty() {
        return Err(DecodeError::CompactMalformed);
    }
    Ok(c)
}

/// `got` is `want`, exactly when `want` is version 1.0, otherwise as a 1.0 reader sees it.
pub fn assert_same(got: &ValidDescriptor, want: &ValidDescriptor) {
    if want.version() == (VERSION_MAJOR, VERSION_MINOR) {
        assert_eq!(got, want);
    } else {
        assert_eq!(got.version(), (VERSION_MAJOR, VERSION_MINOR));
        assert_eq!(Meaning::of(got), Meaning::of(want));
    }
}

/// Everything a descriptor tells a reader but its version.
#[derive(Debug, PartialEq, Eq)]
struct Meaning<'a> {
    dtype: DType,
    shape: &'a [u64],
    strides: &'a [i64],
    offset: u64,
    buffer: (u64, u64),
    file_len: u64,
    order: Order,
    mode: Mode,
    source: Source,
    path: Option<&'a str>,
    identity: Option<(u64, u64)>,
    segment_id: Option<[u8; 16]>,
    generation: u64,
}

impl<'a> Meaning<'a> {
    fn of(d: &'a ValidDescriptor) -> Meaning<'a> {
        Meaning {
            dtype: d.dtype(),
            shape: d.shape(),
            strides: d.strides(),
            offset: d.offset(),
            buffer: (d.buffer_offset(), d.buffer_len()),
            file_len: d.file_len(),
            order: d.order(),
            mode: d.mode(),
            source: d.source(),
            path: d.path(),
            identity: d.identity(),
            segment_id: d.segment_id(),
            generation: d.generation(),
        }
    }
}
