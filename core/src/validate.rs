//! Validation: untrusted record bytes in, a [`ValidDescriptor`] out, every SPEC rule checked.

use core::fmt;
use core::ops::Range;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::flags::unpack;
use crate::layout::Facts;
use crate::record::offsets;
use crate::{
    Builder, DType, DecodeError, Layout, MAGIC, MAX_NDIM, Mode, Order, RECORD_LEN, Record, Source,
    VERSION_MAJOR, VERSION_MINOR,
};

/// Decodes and validates a fixed record from the first [`RECORD_LEN`] bytes of `bytes`,
/// wherever they sit in memory (no alignment needed, nothing copied before the checks).
///
/// ```
/// use stridemap_core::{Builder, DType, decode};
/// let bytes = Builder::new(DType::parse("<i4")?, &[10]).path("/dev/shm/x").build()?.to_bytes();
/// let d = decode(&bytes)?;
/// assert_eq!((d.shape(), d.itemsize(), d.path()), (&[10][..], 4, Some("/dev/shm/x")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`DecodeError::Truncated`] for fewer than [`RECORD_LEN`] bytes, then those of
/// [`Record::validate`].
#[inline]
pub fn decode(bytes: &[u8]) -> Result<ValidDescriptor, DecodeError> {
    let (record, _) = Record::ref_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
        needed: RECORD_LEN,
        got: bytes.len(),
    })?;
    record.validate()
}

impl Record {
    /// Checks every rule (R2 to R22, in order) and returns the validated descriptor.
    ///
    /// # Errors
    /// The first rule of R2–R22 (SPEC.md §4, in that order) the record breaks, one variant per
    /// rule ([`DecodeError::rule`] names it), from [`DecodeError::BadMagic`] (R2) and
    /// [`DecodeError::UnsupportedVersion`] (R3) to [`DecodeError::OutOfBounds`] (R22).
    #[inline]
    pub fn validate(&self) -> Result<ValidDescriptor, DecodeError> {
        if self.magic != MAGIC {
            return Err(DecodeError::BadMagic { found: self.magic });
        }
        let (major, minor) = (self.version_major.get(), self.version_minor.get());
        if major != VERSION_MAJOR {
            return Err(DecodeError::UnsupportedVersion { major, minor });
        }
        let (stored, computed) = (self.crc32c.get(), self.compute_crc());
        if stored != computed {
            return Err(DecodeError::BadChecksum { stored, computed });
        }
        self.validate_fields()
    }

    /// Rules R5 to R22: everything but the magic, the major version and the checksum. Used
    /// directly for records this crate fills in itself (builder, compact form).
    #[inline]
    pub(crate) fn validate_fields(&self) -> Result<ValidDescriptor, DecodeError> {
        // A newer minor version may use flag bits and reserved bytes this reader does not
        // know; it only adds what a reader may ignore (SPEC.md §5).
        #[allow(
            clippy::absurd_extreme_comparisons,
            reason = "true for this version, not for later ones"
        )]
        let strict = self.version_minor.get() <= VERSION_MINOR;
        let (order, mode, source) = unpack(self.flags.get(), strict)?;
        if strict {
            self.check_reserved()?;
        }
        let dtype = DType::from_raw(
            self.dtype_byteorder,
            self.dtype_kind,
            u64::from(self.itemsize.get()),
        )?;
        let ndim = usize::from(self.ndim);
        if ndim > MAX_NDIM {
            return Err(DecodeError::TooManyAxes { ndim });
        }
        // ndim <= MAX_NDIM, so every range below is there.
        let unused = self
            .shape
            .get(ndim..)
            .unwrap_or_default()
            .iter()
            .zip(self.strides.get(ndim..).unwrap_or_default())
            .position(|(d, s)| d.get() != 0 || s.get() != 0);
        if let Some(k) = unused {
            return Err(DecodeError::UnusedAxisNotZero {
                axis: ndim.saturating_add(k),
            });
        }
        self.check_path(source)?;
        let (buffer_offset, buffer_len) = (self.buffer_offset.get(), self.buffer_len.get());
        // Two u64 always fit in a u128 sum.
        let buffer_end = u128::from(buffer_offset).saturating_add(u128::from(buffer_len));
        if buffer_end > u128::from(crate::layout::MAX_BYTES) {
            return Err(DecodeError::BufferOverflow {
                buffer_offset,
                buffer_len,
            });
        }
        let file_len = self.file_len.get();
        if u128::from(file_len) < buffer_end {
            return Err(DecodeError::FileTooShort {
                buffer_end: buffer_end as u64,
                file_len,
            });
        }
        let axes = self
            .shape
            .get(..ndim)
            .unwrap_or_default()
            .iter()
            .map(|d| d.get())
            .zip(
                self.strides
                    .get(..ndim)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.get()),
            );
        let facts = crate::layout::check(dtype.itemsize(), axes, self.offset.get(), buffer_len)?;
        Ok(ValidDescriptor {
            // Stored without its checksum, so that equal descriptors compare equal however
            // they were made; `to_record` and `to_bytes` compute it.
            record: Record {
                crc32c: U32::ZERO,
                ..*self
            },
            #[cfg(target_endian = "big")]
            native: Native::of(self),
            facts,
            dtype,
            order,
            mode,
            source,
        })
    }

    /// R7: the reserved bytes are zero.
    #[inline]
    fn check_reserved(&self) -> Result<(), DecodeError> {
        let fields: [(usize, &[u8]); 4] = [
            (offsets::RESERVED0, core::slice::from_ref(&self.reserved0)),
            (offsets::RESERVED1, &self.reserved1),
            (offsets::RESERVED2, &self.reserved2),
            (offsets::RESERVED3, &self.reserved3),
        ];
        for (start, bytes) in fields {
            if let Some(i) = first_nonzero(bytes) {
                // Inside the 1024-byte record, so this never saturates.
                return Err(DecodeError::ReservedNotZero {
                    offset: start.saturating_add(i),
                });
            }
        }
        Ok(())
    }

    /// R13 to R17: the path field.
    #[inline]
    fn check_path(&self, source: Source) -> Result<(), DecodeError> {
        let len = usize::from(self.path_len.get());
        let (path, padding) = self
            .path
            .split_at_checked(len)
            .ok_or(DecodeError::PathTooLong { len })?;
        if let Some(i) = first_nonzero(padding) {
            return Err(DecodeError::PathPaddingNotZero {
                offset: len.saturating_add(i),
            });
        }
        // Fast path: ASCII without NUL (bytes 1 to 127) is valid UTF-8 without NUL.
        let plain_ascii = path
            .iter()
            .fold(true, |ok, &b| ok & (b.wrapping_sub(1) < 0x7f));
        if !plain_ascii {
            let path = core::str::from_utf8(path).map_err(|e| DecodeError::PathNotUtf8 {
                valid_up_to: e.valid_up_to(),
            })?;
            if let Some(index) = path.bytes().position(|b| b == 0) {
                return Err(DecodeError::PathContainsNul { index });
            }
        }
        match (source, len) {
            (Source::Path, 0) | (Source::Fd, 1..) => Err(DecodeError::SourceMismatch {
                source,
                path_len: len,
            }),
            _ => Ok(()),
        }
    }
}

/// The record's little-endian array as native integers, borrowed: on a little-endian machine
/// the bytes are the same, and inside a [`ValidDescriptor`] the array is 8-aligned.
#[cfg(target_endian = "little")]
fn native_slice<T, W>(words: &[W; MAX_NDIM]) -> &[T]
where
    W: IntoBytes + Immutable,
    [T; MAX_NDIM]: FromBytes + KnownLayout + Immutable,
{
    <[T; MAX_NDIM]>::ref_from_bytes(words.as_bytes()).map_or(&[], |a| &a[..])
}

/// The index of the first non-zero byte; the common all-zero case is one branch-free pass
/// over 8-byte words.
#[inline]
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u8, |acc, &b| acc | b);
    let any = words.fold(0u64, |acc, w| {
        acc | w.first_chunk::<8>().map_or(0, |w| u64::from_ne_bytes(*w))
    });
    if any == 0 && tail == 0 {
        None
    } else {
        bytes.iter().position(|&b| b != 0)
    }
}

/// A descriptor that satisfies every SPEC.md rule, with the facts derived while checking.
///
/// It can only be made by [`decode`], [`Record::validate`], [`Builder::build`] or the compact
/// form's decoder, so holding one proves that every element lies inside the enclosing buffer
/// and that all the arithmetic on it fits.
///
/// ```
/// use stridemap_core::{Builder, DType, Order};
/// let d = Builder::new(DType::parse("<f8")?, &[3, 4]).order(Order::F).path("/dev/shm/a").build()?;
/// assert_eq!(d.strides(), &[8, 24]);
/// assert!(d.is_f_contiguous() && !d.is_c_contiguous());
/// assert_eq!((d.len(), d.nbytes(), d.span()), (12, 96, 0..96));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct ValidDescriptor {
    /// First, so that its `u64` arrays are 8-aligned and (on little-endian machines) can be
    /// borrowed as native slices without copying.
    pub(crate) record: Record,
    #[cfg(target_endian = "big")]
    native: Native,
    facts: Facts,
    dtype: DType,
    order: Order,
    mode: Mode,
    source: Source,
}

/// The record's shape and strides in native byte order.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Native {
    shape: [u64; MAX_NDIM],
    strides: [i64; MAX_NDIM],
}

impl Native {
    fn of(r: &Record) -> Native {
        Native {
            shape: r.shape.map(|d| d.get()),
            strides: r.strides.map(|s| s.get()),
        }
    }
}

impl ValidDescriptor {
    /// The record bytes, checksum included, ready to send.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out.copy_from_slice(self.to_record().as_bytes());
        out
    }

    /// The record, checksum included, e.g. to place inside a larger message.
    pub fn to_record(&self) -> Record {
        let mut r = self.record;
        r.crc32c.set(r.compute_crc());
        r
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes per element.
    pub fn itemsize(&self) -> u32 {
        self.dtype.itemsize()
    }

    /// The strided layout inside the enclosing buffer (a value: views and sub-views keep
    /// their own).
    pub fn layout(&self) -> Layout {
        let native = Native::of(&self.record);
        Layout::from_checked(
            native.shape,
            native.strides,
            self.ndim(),
            self.itemsize(),
            self.offset(),
            self.buffer_len(),
            self.facts,
        )
    }

    /// Length of each axis.
    pub fn shape(&self) -> &[u64] {
        #[cfg(target_endian = "little")]
        let all = native_slice(&self.record.shape);
        #[cfg(target_endian = "big")]
        let all = &self.native.shape[..];
        all.get(..self.ndim()).unwrap_or_default()
    }

    /// Stride of each axis in bytes.
    pub fn strides(&self) -> &[i64] {
        #[cfg(target_endian = "little")]
        let all = native_slice(&self.record.strides);
        #[cfg(target_endian = "big")]
        let all = &self.native.strides[..];
        all.get(..self.ndim()).unwrap_or_default()
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        usize::from(self.record.ndim)
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.facts.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.facts.len == 0
    }

    /// Bytes of data (elements × itemsize).
    pub fn nbytes(&self) -> u64 {
        // At most MAX_BYTES (R20), so this never saturates.
        self.facts.len.saturating_mul(u64::from(self.itemsize()))
    }

    /// The bytes the elements touch, relative to the buffer's start.
    pub fn span(&self) -> Range<u64> {
        self.facts.span.0..self.facts.span.1
    }

    /// Whether the elements are contiguous in C order.
    pub fn is_c_contiguous(&self) -> bool {
        self.facts.c_contiguous
    }

    /// Whether the elements are contiguous in Fortran order.
    pub fn is_f_contiguous(&self) -> bool {
        self.facts.f_contiguous
    }

    /// The order the producer declared (informational; the strides are what count).
    pub fn order(&self) -> Order {
        self.order
    }

    /// The mode the producer allows.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the file is named by the path or passed as an fd.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The path, when the source is a path.
    pub fn path(&self) -> Option<&str> {
        let len = usize::from(self.record.path_len.get());
        let bytes = self.record.path.get(..len)?;
        core::str::from_utf8(bytes).ok().filter(|p| !p.is_empty())
    }

    /// Byte offset of element (0, …, 0) from the buffer's start.
    pub fn offset(&self) -> u64 {
        self.record.offset.get()
    }

    /// Byte offset of the enclosing buffer in the file.
    pub fn buffer_offset(&self) -> u64 {
        self.record.buffer_offset.get()
    }

    /// Length of the enclosing buffer.
    pub fn buffer_len(&self) -> u64 {
        self.record.buffer_len.get()
    }

    /// Byte offset of element (0, …, 0) from the start of the file.
    pub fn file_offset(&self) -> u64 {
        // buffer_offset + offset <= buffer_offset + buffer_len <= i64::MAX (R18, R22), so
        // this never saturates.
        self.buffer_offset().saturating_add(self.offset())
    }

    /// The file's length when the producer described it.
    pub fn file_len(&self) -> u64 {
        self.record.file_len.get()
    }

    /// The file's (device, inode) as the producer saw them, if recorded (inode not 0).
    pub fn identity(&self) -> Option<(u64, u64)> {
        let (dev, ino) = (self.record.device.get(), self.record.inode.get());
        (ino != 0).then_some((dev, ino))
    }

    /// The segment id, if the producer gave one.
    pub fn segment_id(&self) -> Option<[u8; 16]> {
        Some(self.record.segment_id).filter(|id| *id != [0; 16])
    }

    /// The segment generation; 0 means the file has no segment header.
    pub fn generation(&self) -> u64 {
        self.record.generation.get()
    }

    /// The (major, minor) version of the record.
    pub fn version(&self) -> (u16, u16) {
        (
            self.record.version_major.get(),
            self.record.version_minor.get(),
        )
    }

    /// A builder holding every field of this descriptor, to derive a new one (another
    /// view of the same buffer, another mode, an fd source, …).
    ///
    /// ```
    /// use stridemap_core::{Builder, DType, Slice};
    /// let d = Builder::new(DType::parse("<f8")?, &[1000]).path("/dev/shm/a").build()?;
    /// let rev = d.layout().slice_axis(0, Slice::REVERSED)?;
    /// let r = d.to_builder().layout(&rev).build()?;
    /// assert_eq!((r.offset(), r.strides()), (7992, &[-8][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_builder(&self) -> Builder<'_> {
        let mut b = Builder::new(self.dtype, self.shape())
            .strides(self.strides())
            .offset(self.offset())
            .buffer(self.buffer_offset(), self.buffer_len())
            .file_len(self.file_len())
            .order(self.order)
            .mode(self.mode)
            .identity(self.record.device.get(), self.record.inode.get())
            .segment_id(self.record.segment_id)
            .generation(self.generation());
        b = match self.path() {
            Some(p) => b.path(p),
            None => b.fd(),
        };
        b
    }
}

impl fmt::Debug for ValidDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidDescriptor")
            .field("dtype", &self.dtype.typestr())
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("offset", &self.offset())
            .field(
                "buffer",
                &(self.buffer_offset()..self.buffer_offset().saturating_add(self.buffer_len())),
            )
            .field("order", &self.order)
            .field("mode", &self.mode)
            .field("path", &self.path())
            .field("file_len", &self.file_len())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
