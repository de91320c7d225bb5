//! The core error: one variant per SPEC.md rule, plus the errors of the layout operations.

use core::fmt;

use crate::Source;

/// Everything that can be wrong with a descriptor or a layout operation.
///
/// Each variant that breaks a SPEC.md rule names it through [`Error::rule`] (`"R1"` …
/// `"R22"` for the fixed record and every form, `"C1"` … `"C4"` for the compact form only).
/// The variants carry the offending values.
///
/// ```
/// use stridemap_core::{Error, decode};
/// let err = decode(&[0u8; 10]).unwrap_err();
/// assert_eq!(err, Error::Truncated { needed: 1024, got: 10 });
/// assert_eq!(err.rule(), Some("R1"));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
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
    /// A layout of zero-byte elements (no dtype has them).
    ZeroItemsize,
    /// An output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A segment header that is not valid (SPEC.md §8).
    BadSegmentHeader {
        /// What is wrong with it.
        what: &'static str,
    },
    /// A name (order, mode) that means nothing.
    UnknownName {
        /// What was being parsed.
        what: &'static str,
    },
}

impl Error {
    /// The SPEC.md rule this error breaks, if it is one (`"R1"` … `"R22"`, `"C1"` … `"C4"`).
    pub const fn rule(&self) -> Option<&'static str> {
        Some(match self {
            Error::Truncated { .. } => "R1",
            Error::BadMagic { .. } => "R2",
            Error::UnsupportedVersion { .. } => "R3",
            Error::BadChecksum { .. } => "R4",
            Error::UnknownFlags { .. } => "R5",
            Error::BadMode { .. } => "R6",
            Error::ReservedNotZero { .. } => "R7",
            Error::UnknownKind { .. } => "R8",
            Error::BadItemsize { .. } => "R9",
            Error::BadByteOrder { .. } => "R10",
            Error::TooManyAxes { .. } => "R11",
            Error::UnusedAxisNotZero { .. } => "R12",
            Error::PathTooLong { .. } => "R13",
            Error::PathPaddingNotZero { .. } => "R14",
            Error::PathNotUtf8 { .. } => "R15",
            Error::PathContainsNul { .. } => "R16",
            Error::SourceMismatch { .. } => "R17",
            Error::BufferOverflow { .. } => "R18",
            Error::FileTooShort { .. } => "R19",
            Error::SizeOverflow { .. } => "R20",
            Error::StrideTooLarge { .. } => "R21",
            Error::OutOfBounds { .. } => "R22",
            Error::CompactMalformed => "C1",
            Error::CompactBadMagic => "C2",
            Error::AxisCountMismatch { .. } => "C3",
            Error::BadTypestr => "C4",
            _ => return None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rule) = self.rule() {
            write!(f, "{rule}: ")?;
        }
        match *self {
            Error::Truncated { needed, got } => {
                write!(f, "truncated record: needs {needed} bytes, got {got}")
            }
            Error::BadMagic { found } => {
                write!(f, "not a stridemap record: magic is {found:02x?}")
            }
            Error::UnsupportedVersion { major, minor } => write!(
                f,
                "unsupported version {major}.{minor}: this reader knows major version {}",
                crate::VERSION_MAJOR
            ),
            Error::BadChecksum { stored, computed } => write!(
                f,
                "CRC-32C mismatch: record says {stored:#010x}, bytes give {computed:#010x}"
            ),
            Error::UnknownFlags { flags } => write!(
                f,
                "unknown flag bits set in {flags:#010x} (version 1.0 defines bits 0-3)"
            ),
            Error::BadMode { code } => write!(f, "mode code {code} is not r (0), r+ (1) or c (2)"),
            Error::ReservedNotZero { offset } => {
                write!(f, "reserved byte at offset {offset} is not zero")
            }
            Error::UnknownKind { kind } => write!(
                f,
                "dtype kind {:?} is not one of b i u f c V",
                char::from(kind)
            ),
            Error::BadItemsize { kind, itemsize } => write!(
                f,
                "itemsize {itemsize} is not allowed for dtype kind {:?}",
                char::from(kind)
            ),
            Error::BadByteOrder {
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
            Error::TooManyAxes { ndim } => write!(f, "{ndim} axes: at most 32 are allowed"),
            Error::UnusedAxisNotZero { axis } => {
                write!(f, "shape or stride slot {axis} is beyond ndim but not zero")
            }
            Error::PathTooLong { len } => {
                write!(f, "path of {len} bytes: at most 256 are allowed")
            }
            Error::PathPaddingNotZero { offset } => {
                write!(f, "path padding byte {offset} is not zero")
            }
            Error::PathNotUtf8 { valid_up_to } => {
                write!(f, "path is not UTF-8 (valid up to byte {valid_up_to})")
            }
            Error::PathContainsNul { index } => write!(f, "path has a NUL byte at {index}"),
            Error::SourceMismatch { source, path_len } => match source {
                Source::Path => write!(f, "source is a path but the path is empty"),
                Source::Fd => write!(
                    f,
                    "source is a passed fd but the record also has a {path_len}-byte path"
                ),
            },
            Error::BufferOverflow {
                buffer_offset,
                buffer_len,
            } => write!(
                f,
                "buffer at {buffer_offset} of length {buffer_len} ends beyond 2^63-1"
            ),
            Error::FileTooShort {
                buffer_end,
                file_len,
            } => write!(
                f,
                "buffer ends at byte {buffer_end} but the file is {file_len} bytes long"
            ),
            Error::SizeOverflow { axis } => write!(
                f,
                "array size in bytes exceeds 2^63-1 (overflow at axis {axis})"
            ),
            Error::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            } => write!(
                f,
                "stride {stride} on axis {axis} exceeds the {buffer_len}-byte buffer"
            ),
            Error::OutOfBounds { lo, hi, buffer_len } => write!(
                f,
                "elements span bytes [{lo}, {hi}) but the buffer is [0, {buffer_len})"
            ),
            Error::CompactMalformed => write!(f, "malformed compact (postcard) descriptor"),
            Error::CompactBadMagic => write!(f, "not a compact stridemap descriptor (bad magic)"),
            Error::AxisCountMismatch { shape, strides } => {
                write!(f, "{shape} shape entries but {strides} strides")
            }
            Error::BadTypestr => write!(
                f,
                "typestr must be one of '<>|', a kind letter and an itemsize, e.g. '<f8'"
            ),
            Error::IndexOutOfRange { axis, index, len } => write!(
                f,
                "index {index} is out of range for axis {axis} of length {len}"
            ),
            Error::WrongAxisCount { expected, got } => {
                write!(f, "expected {expected} axes, got {got}")
            }
            Error::NoSuchAxis { axis, ndim } => {
                write!(f, "axis {axis} does not exist in a {ndim}-d array")
            }
            Error::NotAPermutation => write!(f, "axes are not a permutation of 0..ndim"),
            Error::ZeroStep => write!(f, "slice step cannot be zero"),
            Error::ReshapeSizeMismatch { from, to } => {
                write!(f, "cannot reshape {from} elements into {to}")
            }
            Error::ZeroItemsize => write!(f, "elements of zero bytes: give the dtype's itemsize"),
            Error::ReshapeNeedsCopy => write!(
                f,
                "these strides do not allow the reshape without a copy; copy to a contiguous \
                 array first"
            ),
            Error::BufferTooSmall { needed, got } => {
                write!(
                    f,
                    "output buffer too small: needs {needed} bytes, got {got}"
                )
            }
            Error::BadSegmentHeader { what } => write!(f, "invalid segment header: {what}"),
            Error::UnknownName { what } => write!(f, "unknown {what} name"),
        }
    }
}

impl core::error::Error for Error {}
