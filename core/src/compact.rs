//! The compact form: the same information as a serde type, encoded with postcard.
//!
//! Wire formats that already speak serde embed [`CompactDescriptor`]; on its own it is
//! postcard-encoded (varints, about 60 bytes for a 2-d array with a short path instead of
//! 1024). Decoding goes through the same validation as the fixed record.

use heapless::{String, Vec};
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use zerocopy::FromZeros;
use zerocopy::little_endian::{I64, U64};

use crate::{
    BufferTooSmall, Builder, DType, DecodeError, MAGIC, MAX_NDIM, Mode, Order, PATH_CAPACITY,
    Record, Source, TypeStr, VERSION_MAJOR, VERSION_MINOR, ValidDescriptor, flags,
};

/// The first four bytes of every encoded compact form: `\x89SMC`.
pub const COMPACT_MAGIC: [u8; 4] = *b"\x89SMC";

/// An upper bound on the encoded size of any compact descriptor.
pub const COMPACT_MAX_LEN: usize = 1024;

/// Where the consumer gets the file: a path, or an fd passed beside the message.
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator: the path is held inline"
)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactSource {
    /// An absolute path.
    Path(String<PATH_CAPACITY>),
    /// A file descriptor travelling beside the message.
    Fd,
}

/// The descriptor as a serde type; field order is the postcard wire order (SPEC.md §4).
///
/// ```
/// use stridemap_core::{Builder, DType, decode_compact};
/// let d = Builder::new(DType::parse("<f4")?, &[2, 3]).path("/dev/shm/a").build()?;
/// let mut buf = [0u8; stridemap_core::COMPACT_MAX_LEN];
/// let bytes = d.encode_compact(&mut buf)?;
/// assert!(bytes.len() < 64);
/// assert_eq!(decode_compact(bytes)?, d);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactDescriptor {
    /// [`COMPACT_MAGIC`].
    pub magic: [u8; 4],
    /// Major version, 1.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// numpy typestr, e.g. `<f8`.
    pub dtype: String<16>,
    /// Declared order.
    pub order: Order,
    /// Allowed mode.
    pub mode: Mode,
    /// Path or fd.
    pub source: CompactSource,
    /// Length of each axis.
    pub shape: Vec<u64, MAX_NDIM>,
    /// Stride of each axis in bytes.
    pub strides: Vec<i64, MAX_NDIM>,
    /// Byte offset of element (0, …, 0) from the buffer's start.
    pub offset: u64,
    /// Byte offset of the buffer in the file.
    pub buffer_offset: u64,
    /// Length of the buffer.
    pub buffer_len: u64,
    /// The file's length.
    pub file_len: u64,
    /// `st_dev`, 0 when not recorded.
    pub device: u64,
    /// `st_ino`, 0 when not recorded.
    pub inode: u64,
    /// Segment generation, 0 when none.
    pub generation: u64,
    /// Segment id, zero when none.
    pub segment_id: [u8; 16],
}

impl CompactDescriptor {
    /// Validates (rules C3, C4, then R5–R22 as for the fixed record).
    ///
    /// # Errors
    /// [`DecodeError::CompactBadMagic`] (C2), [`DecodeError::UnsupportedVersion`] (R3),
    /// [`DecodeError::AxisCountMismatch`] (C3), [`DecodeError::BadTypestr`] (C4) and the dtype
    /// rules of [`DType::parse`], then those of [`Builder::build`] (R5–R22).
    pub fn validate(&self) -> Result<ValidDescriptor, DecodeError> {
        if self.magic != COMPACT_MAGIC {
            return Err(DecodeError::CompactBadMagic);
        }
        if self.major != VERSION_MAJOR {
            return Err(DecodeError::UnsupportedVersion {
                major: self.major,
                minor: self.minor,
            });
        }
        if self.shape.len() != self.strides.len() {
            return Err(DecodeError::AxisCountMismatch {
                shape: self.shape.len(),
                strides: self.strides.len(),
            });
        }
        let dtype = DType::parse(&self.dtype)?;
        let mut b = Builder::new(dtype, &self.shape)
            .strides(&self.strides)
            .order(self.order)
            .mode(self.mode)
            .offset(self.offset)
            .buffer(self.buffer_offset, self.buffer_len)
            .file_len(self.file_len)
            .identity(self.device, self.inode)
            .generation(self.generation)
            .segment_id(self.segment_id);
        b = match &self.source {
            CompactSource::Path(p) => b.path(p),
            CompactSource::Fd => b.fd(),
        };
        let mut d = b.build()?;
        // The version as encoded, as the streaming decoder keeps it.
        d.record.version_minor.set(self.minor);
        Ok(d)
    }
}

/// Decodes and validates a postcard-encoded compact descriptor (rules C2, C1, R3, C1, C3,
/// C4, then R8–R22 as SPEC.md §4 orders them).
///
/// The fields are read one by one with postcard straight into a fixed record (strings
/// borrowed, axes written in place), so nothing large is built and moved.
///
/// # Errors
/// [`DecodeError::CompactBadMagic`] (C2), [`DecodeError::CompactMalformed`] for bytes postcard
/// cannot read as the compact form (C1), [`DecodeError::UnsupportedVersion`] (R3),
/// [`DecodeError::AxisCountMismatch`] (C3), [`DecodeError::BadTypestr`] (C4), then the first
/// rule of R8–R22 the descriptor breaks ([`DecodeError::rule`] names it).
pub fn decode_compact(bytes: &[u8]) -> Result<ValidDescriptor, DecodeError> {
    if !bytes.starts_with(&COMPACT_MAGIC) {
        return Err(DecodeError::CompactBadMagic);
    }
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let (_magic, major, minor) = <([u8; 4], u16, u16)>::deserialize(&mut de).map_err(malformed)?;
    if major != VERSION_MAJOR {
        return Err(DecodeError::UnsupportedVersion { major, minor });
    }
    let mut r = Record::new_zeroed();
    let dtype = <&str>::deserialize(&mut de).map_err(malformed)?;
    let order = Order::deserialize(&mut de).map_err(malformed)?;
    let mode = Mode::deserialize(&mut de).map_err(malformed)?;
    let source = SourceRef::deserialize(&mut de).map_err(malformed)?;
    let ndim = de
        .deserialize_seq(AxesInto(&mut r.shape))
        .map_err(malformed)?;
    let nstrides = de
        .deserialize_seq(AxesInto(&mut r.strides))
        .map_err(malformed)?;
    let (offset, buffer_offset, buffer_len, file_len) =
        <(u64, u64, u64, u64)>::deserialize(&mut de).map_err(malformed)?;
    let (device, inode, generation, segment_id) =
        <(u64, u64, u64, [u8; 16])>::deserialize(&mut de).map_err(malformed)?;
    let rest = de.finalize().map_err(malformed)?;
    let path = match source {
        SourceRef::Path(p) => p,
        SourceRef::Fd => "",
    };
    // The owned type's capacities: longer strings cannot be represented (C1).
    #[allow(
        clippy::absurd_extreme_comparisons,
        reason = "true for this version, not for later ones"
    )]
    let known_minor = minor <= VERSION_MINOR;
    if dtype.len() > 16 || path.len() > PATH_CAPACITY || (!rest.is_empty() && known_minor) {
        return Err(DecodeError::CompactMalformed);
    }
    if ndim != nstrides {
        return Err(DecodeError::AxisCountMismatch {
            shape: ndim,
            strides: nstrides,
        });
    }
    let dtype = DType::parse(dtype)?;
    r.magic = MAGIC;
    r.version_major.set(VERSION_MAJOR);
    // The version as encoded: a newer minor's extra fields were skipped above.
    r.version_minor.set(minor);
    let src = match source {
        SourceRef::Path(_) => Source::Path,
        SourceRef::Fd => Source::Fd,
    };
    r.flags.set(flags::pack(order, mode, src));
    r.dtype_byteorder = dtype.byteorder().as_byte();
    r.dtype_kind = dtype.kind().as_byte();
    r.itemsize.set(dtype.itemsize());
    r.ndim = ndim as u8;
    r.path_len.set(path.len() as u16);
    for (slot, &b) in r.path.iter_mut().zip(path.as_bytes()) {
        *slot = b;
    }
    r.offset.set(offset);
    r.buffer_offset.set(buffer_offset);
    r.buffer_len.set(buffer_len);
    r.file_len.set(file_len);
    r.device.set(device);
    r.inode.set(inode);
    r.generation.set(generation);
    r.segment_id = segment_id;
    r.validate_fields()
}

fn malformed(_: postcard::Error) -> DecodeError {
    DecodeError::CompactMalformed
}

/// [`CompactSource`] with the path borrowed from the input.
#[derive(Deserialize)]
enum SourceRef<'a> {
    Path(&'a str),
    Fd,
}

/// Reads a sequence of at most 32 integers into a record's axis slots; returns the count.
struct AxesInto<'r, W>(&'r mut [W; MAX_NDIM]);

impl<'de, W: AxisWord> Visitor<'de> for AxesInto<'_, W> {
    type Value = usize;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("at most 32 axis values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(v) = seq.next_element::<W::Native>()? {
            let slot = self.0.get_mut(n).ok_or_else(|| {
                serde::de::Error::invalid_length(n.saturating_add(1), &"at most 32 values")
            })?;
            *slot = W::from_native(v);
            // n < the slots' length (the get_mut above succeeded).
            n = n.saturating_add(1);
        }
        Ok(n)
    }
}

/// The record's little-endian axis words and their native integers.
trait AxisWord: Sized {
    type Native: for<'de> Deserialize<'de>;
    fn from_native(v: Self::Native) -> Self;
}

impl AxisWord for U64 {
    type Native = u64;
    fn from_native(v: u64) -> Self {
        U64::new(v)
    }
}

impl AxisWord for I64 {
    type Native = i64;
    fn from_native(v: i64) -> Self {
        I64::new(v)
    }
}

impl ValidDescriptor {
    /// The compact form of this descriptor.
    pub fn to_compact(&self) -> CompactDescriptor {
        let mut dtype = String::new();
        let t: TypeStr = self.dtype().typestr();
        // A typestr has at most 12 bytes; the string holds 16.
        let _ = dtype.push_str(t.as_str());
        let source = match self.path() {
            Some(p) => {
                let mut s = String::new();
                // The path was validated to fit PATH_CAPACITY bytes.
                let _ = s.push_str(p);
                CompactSource::Path(s)
            }
            None => CompactSource::Fd,
        };
        let mut shape = Vec::new();
        let mut strides = Vec::new();
        for (&d, &s) in self.shape().iter().zip(self.strides()) {
            // At most MAX_NDIM axes, the vectors' capacity.
            let _ = shape.push(d);
            let _ = strides.push(s);
        }
        CompactDescriptor {
            magic: COMPACT_MAGIC,
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            dtype,
            order: self.order(),
            mode: self.mode(),
            source,
            shape,
            strides,
            offset: self.offset(),
            buffer_offset: self.buffer_offset(),
            buffer_len: self.buffer_len(),
            file_len: self.file_len(),
            device: self.record.device.get(),
            inode: self.record.inode.get(),
            generation: self.generation(),
            segment_id: self.record.segment_id,
        }
    }

    /// Encodes the compact form into `buf` ([`COMPACT_MAX_LEN`] bytes always suffice) and
    /// returns the used prefix.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` is shorter than the encoding (give it
    /// [`COMPACT_MAX_LEN`] bytes).
    pub fn encode_compact<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], BufferTooSmall> {
        let got = buf.len();
        postcard::to_slice(&self.to_compact(), buf).map_err(|_| BufferTooSmall {
            needed: COMPACT_MAX_LEN,
            got,
        })
    }
}
