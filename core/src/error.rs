//! The core's errors, by operation: [`DecodeError`] for descriptors (one variant per SPEC.md
//! rule), [`LayoutError`] for layout operations, and the small errors of encoding the compact
//! form, reading a segment header and parsing a name.

use core::fmt;

use crate::Source;

/// A descriptor that breaks a SPEC.md rule: the error of decoding ([`decode`](crate::decode),
/// `decode_compact`), validating ([`Record::validate`](crate::Record::validate)) and building
/// ([`Builder::build`](crate::Builder::build)) one.
///
/// Every variant is one rule, which [`DecodeError::rule`] names (`"R1"` … `"R22"` for the
/// fixed record and every form, `"C1"` … `"C4"` for the compact form only), and carries the
/// offending values.
///
/// ```
/// use stridemap_core::{DecodeError, decode};
/// let err = decode(&[0u8; 10]).unwrap_err();
/// assert_eq!(err, DecodeError::Truncated { needed: 1024, got: 10 });
/// assert_eq!(err.rule(), "R1");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// R1: the input is shorter than a record.
    Truncated {
        /// Bytes a record needs.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// R2: the first eight bytes are not the record magic.
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// R3: a major version this reader does not know.
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// R4: the CRC-32C does not match the record.
    BadChecksum {
        /// The CRC stored in the record.
        stored: u32,
        /// The CRC computed over the record.
        computed: u32,
    },
    /// R5: a flag bit that this minor version does not define is set.
    UnknownFlags {
        /// The whole flags word.
        flags: u32,
    },
    /// R6: the mode bits hold 3, which means nothing.
    BadMode {
        /// The two-bit mode code.
        code: u8,
    },
    /// R7: a reserved byte is not zero.
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte in the record.
        offset: usize,
    },
    /// R8: the dtype kind is not one of `b i u f c V`.
    UnknownKind {
        /// The kind byte found.
        kind: u8,
    },
    /// R9: the itemsize is not allowed for the kind.
    BadItemsize {
        /// The kind byte.
        kind: u8,
        /// The itemsize found.
        itemsize: u64,
    },
    /// R10: the byte order is not `|` for one-byte and `V` types and `<` or `>` otherwise.
    BadByteOrder {
        /// The byte-order byte found.
        byteorder: u8,
        /// The kind byte.
        kind: u8,
        /// The itemsize.
        itemsize: u32,
    },
    /// R11: more than 32 axes.
    TooManyAxes {
        /// The number of axes found.
        ndim: usize,
    },
    /// R12: a shape or stride slot beyond `ndim` is not zero.
    UnusedAxisNotZero {
        /// The first such slot.
        axis: usize,
    },
    /// R13: the path is longer than the 256 bytes the record holds.
    PathTooLong {
        /// The length found.
        len: usize,
    },
    /// R14: a byte of the path field after `path_len` is not zero.
    PathPaddingNotZero {
        /// Offset of the byte inside the path field.
        offset: usize,
    },
    /// R15: the path is not UTF-8.
    PathNotUtf8 {
        /// Length of the longest valid prefix.
        valid_up_to: usize,
    },
    /// R16: the path contains a NUL byte.
    PathContainsNul {
        /// Index of the first NUL.
        index: usize,
    },
    /// R17: a path source without a path, or an fd source with one.
    SourceMismatch {
        /// The source kind in the flags.
        source: Source,
        /// The path length.
        path_len: usize,
    },
    /// R18: the enclosing buffer ends beyond 2⁶³−1.
    BufferOverflow {
        /// Byte offset of the buffer in the file.
        buffer_offset: u64,
        /// Length of the buffer.
        buffer_len: u64,
    },
    /// R19: the file the producer saw is shorter than the enclosing buffer's end.
    FileTooShort {
        /// `buffer_offset + buffer_len`.
        buffer_end: u64,
        /// The recorded file length.
        file_len: u64,
    },
    /// R20: the array's size in bytes (zero-length axes counted as 1) exceeds 2⁶³−1.
    SizeOverflow {
        /// The axis at which the running product overflowed.
        axis: usize,
    },
    /// R21: a stride is larger in magnitude than the enclosing buffer.
    StrideTooLarge {
        /// The axis.
        axis: usize,
        /// Its stride in bytes.
        stride: i64,
        /// The buffer length.
        buffer_len: u64,
    },
    /// R22: some byte of some element lies outside the enclosing buffer.
    OutOfBounds {
        /// Lowest byte touched, relative to the buffer start (may be negative).
        lo: i128,
        /// One past the highest byte touched.
        hi: i128,
        /// The buffer length.
        buffer_len: u64,
    },
    /// C1: the compact form is not a well-formed postcard encoding of the compact type.
    CompactMalformed,
    /// C2: the compact form does not start with its magic.
    CompactBadMagic,
    /// C3: shape and strides have different lengths.
    AxisCountMismatch {
        /// Number of shape entries.
        shape: usize,
        /// Number of stride entries.
        strides: usize,
    },
    /// C4: the typestr is not `[<>|]`, a kind letter and a decimal itemsize.
    BadTypestr,
}

impl DecodeError {
    /// The SPEC.md rule this descriptor breaks, (`"R1"` … `"R22"`, `"C1"` … `"C4"`).
    pub const fn rule(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "R1",
            DecodeError::BadMagic { .. } => "R2",
            DecodeError::UnsupportedVersion { .. } => "R3",
            DecodeError::BadChecksum { .. } => "R4",
            DecodeError::UnknownFlags { .. } => "R5",
            DecodeError::BadMode { .. } => "R6",
            DecodeError::ReservedNotZero { .. } => "R7",
            DecodeError::UnknownKind { .. } => "R8",
            DecodeError::BadItemsize { .. } => "R9",
            DecodeError::BadByteOrder { .. } => "R10",
            DecodeError::TooManyAxes { .. } => "R11",
            DecodeError::UnusedAxisNotZero { .. } => "R12",
            DecodeError::PathTooLong { .. } => "R13",
            DecodeError::PathPaddingNotZero { .. } => "R14",
            DecodeError::PathNotUtf8 { .. } => "R15",
            DecodeError::PathContainsNul { .. } => "R16",
            DecodeError::SourceMismatch { .. } => "R17",
            DecodeError::BufferOverflow { .. } => "R18",
            DecodeError::FileTooShort { .. } => "R19",
            DecodeError::SizeOverflow { .. } => "R20",
            DecodeError::StrideTooLarge { .. } => "R21",
            DecodeError::OutOfBounds { .. } => "R22",
            DecodeError::CompactMalformed => "C1",
            DecodeError::CompactBadMagic => "C2",
            DecodeError::AxisCountMismatch { .. } => "C3",
            DecodeError::BadTypestr => "C4",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.rule())?;
        match *self {
            DecodeError::Truncated { needed, got } => {
                write!(f, "truncated record: needs {needed} bytes, got {got}")
            }
            DecodeError::BadMagic { found } => {
                write!(f, "not a stridemap record: magic is {found:02x?}")
            }
            DecodeError::UnsupportedVersion { major, minor } => write!(
                f,
                "unsupported version {major}.{minor}: this reader knows major version {}",
                crate::VERSION_MAJOR
            ),
            DecodeError::BadChecksum { stored, computed } => write!(
                f,
                "CRC-32C mismatch: record says {stored:#010x}, bytes give {computed:#010x}"
            ),
            DecodeError::UnknownFlags { flags } => write!(
                f,
                "unknown flag bits set in {flags:#010x} (version 1.0 defines bits 0-3)"
            ),
            DecodeError::BadMode { code } => {
                write!(f, "mode code {code} is not r (0), r+ (1) or c (2)")
            }
            DecodeError::ReservedNotZero { offset } => {
                write!(f, "reserved byte at offset {offset} is not zero")
            }
            DecodeError::UnknownKind { kind } => write!(
                f,
                "dtype kind {:?} is not one of b i u f c V",
                char::from(kind)
            ),
            DecodeError::BadItemsize { kind, itemsize } => write!(
                f,
                "itemsize {itemsize} is not allowed for dtype kind {:?}",
                char::from(kind)
            ),
            DecodeError::BadByteOrder {
                byteorder,
                kind,
                itemsize,
            } => write!(
                f,
                "byte order {:?} does not fit {}{itemsize}: use '|' for one-byte and V types, \
                 '<' or '>' otherwise",
                char::from(byteorder),
                char::from(kind)
            ),
            DecodeError::TooManyAxes { ndim } => write!(f, "{ndim} axes: at most 32 are allowed"),
            DecodeError::UnusedAxisNotZero { axis } => {
                write!(f, "shape or stride slot {axis} is beyond ndim but not zero")
            }
            DecodeError::PathTooLong { len } => {
                write!(f, "path of {len} bytes: at most 256 are allowed")
            }
            DecodeError::PathPaddingNotZero { offset } => {
                write!(f, "path padding byte {offset} is not zero")
            }
            DecodeError::PathNotUtf8 { valid_up_to } => {
                write!(f, "path is not UTF-8 (valid up to byte {valid_up_to})")
            }
            DecodeError::PathContainsNul { index } => write!(f, "path has a NUL byte at {index}"),
            DecodeError::SourceMismatch { source, path_len } => match source {
                Source::Path => write!(f, "source is a path but the path is empty"),
                Source::Fd => write!(
                    f,
                    "source is a passed fd but the record also has a {path_len}-byte path"
                ),
            },
            DecodeError::BufferOverflow {
                buffer_offset,
                buffer_len,
            } => write!(
                f,
                "buffer at {buffer_offset} of length {buffer_len} ends beyond 2^63-1"
            ),
            DecodeError::FileTooShort {
                buffer_end,
                file_len,
            } => write!(
                f,
                "buffer ends at byte {buffer_end} but the file is {file_len} bytes long"
            ),
            DecodeError::SizeOverflow { axis } => write!(
                f,
                "array size in bytes exceeds 2^63-1 (overflow at axis {axis})"
            ),
            DecodeError::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            } => write!(
                f,
                "stride {stride} on axis {axis} exceeds the {buffer_len}-byte buffer"
            ),
            DecodeError::OutOfBounds { lo, hi, buffer_len } => write!(
                f,
                "elements span bytes [{lo}, {hi}) but the buffer is [0, {buffer_len})"
            ),
            DecodeError::CompactMalformed => write!(f, "malformed compact (postcard) descriptor"),
            DecodeError::CompactBadMagic => {
                write!(f, "not a compact stridemap descriptor (bad magic)")
            }
            DecodeError::AxisCountMismatch { shape, strides } => {
                write!(f, "{shape} shape entries but {strides} strides")
            }
            DecodeError::BadTypestr => write!(
                f,
                "typestr must be one of '<>|', a kind letter and an itemsize, e.g. '<f8'"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A layout operation that is impossible: making a [`Layout`](crate::Layout) (`new`,
/// `contiguous`, `with`, `rebase`) or deriving one (`element_offset`, `index_axis`,
/// `slice_axis`, `permute`, `reshape`), and [`Slice::indices`](crate::Slice::indices).
///
/// The checks a layout shares with a descriptor's SPEC.md rules (axis count, size, strides,
/// bounds) carry the same data as the [`DecodeError`] variant of that rule, and
/// [`LayoutError::rule`] names it; a descriptor that breaks them reports the [`DecodeError`].
///
/// ```
/// use stridemap_core::{Layout, LayoutError, Order};
/// let l = Layout::contiguous(8, &[2, 3], Order::C)?;
/// let err = l.index_axis(2, 0).unwrap_err();
/// assert_eq!(err, LayoutError::NoSuchAxis { axis: 2, ndim: 2 });
/// assert_eq!(err.rule(), None);
/// # Ok::<(), LayoutError>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Shape and strides have different lengths (the rule C3 checks in descriptors).
    AxisCountMismatch {
        /// Number of shape entries.
        shape: usize,
        /// Number of stride entries.
        strides: usize,
    },
    /// More than 32 axes (R11).
    TooManyAxes {
        /// The number of axes given.
        ndim: usize,
    },
    /// A buffer longer than 2⁶³−1 bytes (R18).
    BufferTooLong {
        /// The buffer length given.
        buffer_len: u64,
    },
    /// The array's size in bytes (zero-length axes counted as 1) exceeds 2⁶³−1 (R20).
    SizeOverflow {
        /// The axis at which the running product overflowed.
        axis: usize,
    },
    /// A stride is larger in magnitude than the buffer (R21).
    StrideTooLarge {
        /// The axis.
        axis: usize,
        /// Its stride in bytes.
        stride: i64,
        /// The buffer length.
        buffer_len: u64,
    },
    /// Some byte of some element lies outside the buffer (R22), or an offset or stride left
    /// the range a layout can hold.
    OutOfBounds {
        /// Lowest byte touched, relative to the buffer start (may be negative).
        lo: i128,
        /// One past the highest byte touched.
        hi: i128,
        /// The buffer length.
        buffer_len: u64,
    },
    /// Elements of zero bytes (no dtype has them).
    ZeroItemsize,
    /// An index is outside its axis.
    IndexOutOfRange {
        /// The axis.
        axis: usize,
        /// The index given.
        index: u64,
        /// The axis length.
        len: u64,
    },
    /// A multi-index or argument list has the wrong number of axes.
    WrongAxisCount {
        /// Axes expected.
        expected: usize,
        /// Axes given.
        got: usize,
    },
    /// An axis number is not below `ndim`.
    NoSuchAxis {
        /// The axis given.
        axis: usize,
        /// The number of axes.
        ndim: usize,
    },
    /// A permutation repeats or omits an axis.
    NotAPermutation,
    /// A slice step of zero.
    ZeroStep,
    /// The new shape has a different number of elements.
    ReshapeSizeMismatch {
        /// Elements before.
        from: u64,
        /// Elements after.
        to: u64,
    },
    /// The strides do not allow this reshape without copying.
    ReshapeNeedsCopy,
}

impl LayoutError {
    /// The SPEC.md rule a descriptor with this layout would break, for the checks layouts
    /// share with descriptors (`"C3"`, `"R11"`, `"R18"`, `"R20"`, `"R21"`, `"R22"`).
    pub const fn rule(&self) -> Option<&'static str> {
        Some(match self {
            LayoutError::AxisCountMismatch { .. } => "C3",
            LayoutError::TooManyAxes { .. } => "R11",
            LayoutError::BufferTooLong { .. } => "R18",
            LayoutError::SizeOverflow { .. } => "R20",
            LayoutError::StrideTooLarge { .. } => "R21",
            LayoutError::OutOfBounds { .. } => "R22",
            _ => return None,
        })
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::AxisCountMismatch { shape, strides } => write!(
                f,
                "{shape} shape entries but {strides} strides: give one stride per axis"
            ),
            LayoutError::TooManyAxes { ndim } => write!(f, "{ndim} axes: at most 32 are allowed"),
            LayoutError::BufferTooLong { buffer_len } => write!(
                f,
                "a buffer of {buffer_len} bytes: at most 2^63-1 are allowed"
            ),
            LayoutError::SizeOverflow { axis } => write!(
                f,
                "array size in bytes exceeds 2^63-1 (overflow at axis {axis}): use fewer or \
                 shorter axes"
            ),
            LayoutError::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            } => write!(
                f,
                "stride {stride} on axis {axis} exceeds the {buffer_len}-byte buffer"
            ),
            LayoutError::OutOfBounds { lo, hi, buffer_len } => write!(
                f,
                "elements span bytes [{lo}, {hi}) but the buffer is [0, {buffer_len}): keep \
                 the offset and strides inside the buffer"
            ),
            LayoutError::ZeroItemsize => {
                write!(f, "elements of zero bytes: give the dtype's itemsize")
            }
            LayoutError::IndexOutOfRange { axis, index, len } => write!(
                f,
                "index {index} is out of range for axis {axis} of length {len}"
            ),
            LayoutError::WrongAxisCount { expected, got } => {
                write!(f, "expected {expected} axes, got {got}")
            }
            LayoutError::NoSuchAxis { axis, ndim } => {
                write!(f, "axis {axis} does not exist in a {ndim}-d array")
            }
            LayoutError::NotAPermutation => write!(f, "axes are not a permutation of 0..ndim"),
            LayoutError::ZeroStep => write!(f, "slice step cannot be zero"),
            LayoutError::ReshapeSizeMismatch { from, to } => {
                write!(f, "cannot reshape {from} elements into {to}")
            }
            LayoutError::ReshapeNeedsCopy => write!(
                f,
                "these strides do not allow the reshape without a copy; copy to a contiguous \
                 array first"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

/// The checks layouts and descriptors share (C3, R20, R21, R22), as the checking code
/// finds them; each side reports them as its own error with the same data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Breach {
    AxisCountMismatch {
        shape: usize,
        strides: usize,
    },
    SizeOverflow {
        axis: usize,
    },
    StrideTooLarge {
        axis: usize,
        stride: i64,
        buffer_len: u64,
    },
    OutOfBounds {
        lo: i128,
        hi: i128,
        buffer_len: u64,
    },
}

impl From<Breach> for DecodeError {
    fn from(b: Breach) -> DecodeError {
        match b {
            Breach::AxisCountMismatch { shape, strides } => {
                DecodeError::AxisCountMismatch { shape, strides }
            }
            Breach::SizeOverflow { axis } => DecodeError::SizeOverflow { axis },
            Breach::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            } => DecodeError::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            },
            Breach::OutOfBounds { lo, hi, buffer_len } => {
                DecodeError::OutOfBounds { lo, hi, buffer_len }
            }
        }
    }
}

impl From<Breach> for LayoutError {
    fn from(b: Breach) -> LayoutError {
        match b {
            Breach::AxisCountMismatch { shape, strides } => {
                LayoutError::AxisCountMismatch { shape, strides }
            }
            Breach::SizeOverflow { axis } => LayoutError::SizeOverflow { axis },
            Breach::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            } => LayoutError::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            },
            Breach::OutOfBounds { lo, hi, buffer_len } => {
                LayoutError::OutOfBounds { lo, hi, buffer_len }
            }
        }
    }
}

/// The compact encoding does not fit the buffer given to
/// [`ValidDescriptor::encode_compact`](crate::ValidDescriptor::encode_compact).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes a buffer needs to be sure to hold any encoding:
    /// [`COMPACT_MAX_LEN`](crate::COMPACT_MAX_LEN).
    pub needed: usize,
    /// Bytes in the buffer.
    pub got: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "output buffer too small: needs {} bytes, got {}; give it COMPACT_MAX_LEN bytes",
            self.needed, self.got
        )
    }
}

impl core::error::Error for BufferTooSmall {}

/// A segment header (SPEC.md §8) that is not valid: the error of
/// [`SegmentHeader::decode`](crate::SegmentHeader::decode).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeaderError {
    /// What is wrong with it.
    pub what: &'static str,
}

impl fmt::Display for SegmentHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid segment header: {}; the file is not a stridemap segment",
            self.what
        )
    }
}

impl core::error::Error for SegmentHeaderError {}

/// A name that means nothing: the error of parsing an [`Order`](crate::Order) (`C`, `F`) or a
/// [`Mode`](crate::Mode) (`r`, `r+`, `c`) from text.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseNameError {
    /// What was being parsed (`"order"` or `"mode"`).
    pub what: &'static str,
    /// The names it accepts.
    pub expected: &'static str,
}

impl fmt::Display for ParseNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} name: use one of {}",
            self.what, self.expected
        )
    }
}

impl core::error::Error for ParseNameError {}

/// A release record (SPEC.md §6.2) that fails a check: what is wrong with it. Whoever sent it
/// is not following the session protocol; the connection is best closed.
///
/// ```
/// use stridemap_core::{Release, ReleaseError};
/// assert_eq!(Release::decode(&[0u8; 10]), Err(ReleaseError::TooShort));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseError {
    /// Fewer than 1024 bytes.
    TooShort,
    /// The first eight bytes are not `\x89SMR\r\n\x1a\n`.
    Magic,
    /// A major version other than 1.
    Version {
        /// The record's major version.
        major: u16,
    },
    /// The CRC-32C of bytes 0 to 1019 is not the one in bytes 1020 to 1023.
    Checksum,
    /// A reserved byte is not zero.
    Reserved,
    /// The segment id is all zero.
    NoSegment,
    /// The generation is 0.
    NoGeneration,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ReleaseError::TooShort => "shorter than 1024 bytes",
            ReleaseError::Magic => "its magic is not \\x89SMR\\r\\n\\x1a\\n",
            ReleaseError::Version { major } => {
                return write!(
                    f,
                    "invalid release record: major version {major}, this reader knows 1; \
                     the sender is newer than this reader"
                );
            }
            ReleaseError::Checksum => "its CRC-32C does not match (corrupted or forged)",
            ReleaseError::Reserved => "a reserved byte is not zero",
            ReleaseError::NoSegment => "its segment id is all zero",
            ReleaseError::NoGeneration => "its generation is 0",
        };
        write!(
            f,
            "invalid release record: {what}; the sender does not follow the session protocol \
             (SPEC.md §6.2): close the connection"
        )
    }
}

impl core::error::Error for ReleaseError {}
