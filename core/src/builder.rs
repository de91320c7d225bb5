//! The producer's side: build a valid descriptor from dtype, shape and where the bytes are.

use zerocopy::FromZeros;
use zerocopy::little_endian::{I64, U16, U32, U64};

use crate::layout::contiguous_strides;
use crate::{
    DType, DecodeError, Layout, MAGIC, MAX_NDIM, Mode, Order, PATH_CAPACITY, Record, Source,
    VERSION_MAJOR, VERSION_MINOR, ValidDescriptor, flags,
};

/// Builds a [`ValidDescriptor`], checking the same rules as decoding.
///
/// Defaults: strides contiguous in `order` (C), element 0 at offset 0 of the buffer, the
/// buffer starting at byte 0 of the file and just long enough for the elements, the file
/// exactly as long as the buffer's end, mode `r`, no identity, no segment.
///
/// ```
/// use stridemap_core::{Builder, DType, Mode};
/// // A reversed view: element 0 is the last double of an 80-byte buffer.
/// let d = Builder::new(DType::parse("<f8")?, &[10])
///     .strides(&[-8])
///     .offset(72)
///     .buffer(4096, 80)
///     .file_len(8192)
///     .mode(Mode::ReadWrite)
///     .path("/dev/shm/stridemap-1/seg")
///     .build()?;
/// assert_eq!((d.span(), d.file_offset()), (0..80, 4168));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder<'a> {
    dtype: DType,
    shape: &'a [u64],
    strides: Option<&'a [i64]>,
    order: Order,
    offset: u64,
    buffer: Option<(u64, u64)>,
    file_len: Option<u64>,
    mode: Mode,
    source: Source,
    path: &'a str,
    device: u64,
    inode: u64,
    segment_id: [u8; 16],
    generation: u64,
}

impl<'a> Builder<'a> {
    /// Starts a descriptor of an array of `shape` with elements of `dtype`.
    pub fn new(dtype: DType, shape: &'a [u64]) -> Builder<'a> {
        Builder {
            dtype,
            shape,
            strides: None,
            order: Order::C,
            offset: 0,
            buffer: None,
            file_len: None,
            mode: Mode::ReadOnly,
            source: Source::Path,
            path: "",
            device: 0,
            inode: 0,
            segment_id: [0; 16],
            generation: 0,
        }
    }

    /// Explicit strides in bytes (any sign, zero allowed); otherwise contiguous in `order`.
    pub fn strides(mut self, strides: &'a [i64]) -> Self {
        self.strides = Some(strides);
        self
    }

    /// The declared order, and the one used to compute strides when none are given.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Byte offset of element (0, …, 0) from the buffer's start.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// The enclosing buffer: its byte offset in the file and its length.
    pub fn buffer(mut self, offset: u64, len: u64) -> Self {
        self.buffer = Some((offset, len));
        self
    }

    /// Shape, strides, offset and buffer length of a layout (e.g. a sub-view).
    pub fn layout(mut self, layout: &'a Layout) -> Self {
        self.shape = layout.shape();
        self.strides = Some(layout.strides());
        self.offset = layout.offset();
        let buffer_offset = self.buffer.map_or(0, |(o, _)| o);
        self.buffer = Some((buffer_offset, layout.buffer_len()));
        self
    }

    /// The file's length as the producer sees it.
    pub fn file_len(mut self, len: u64) -> Self {
        self.file_len = Some(len);
        self
    }

    /// What consumers may do (`r`, `r+`, `c`).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The file is named by this absolute path.
    pub fn path(mut self, path: &'a str) -> Self {
        self.source = Source::Path;
        self.path = path;
        self
    }

    /// The file travels as a file descriptor beside the message (no path).
    pub fn fd(mut self) -> Self {
        self.source = Source::Fd;
        self.path = "";
        self
    }

    /// The file's device and inode numbers (`st_dev`, `st_ino`).
    pub fn identity(mut self, device: u64, inode: u64) -> Self {
        self.device = device;
        self.inode = inode;
        self
    }

    /// The segment's id.
    pub fn segment_id(mut self, id: [u8; 16]) -> Self {
        self.segment_id = id;
        self
    }

    /// The segment generation the file's header must hold (0: no header).
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Checks every rule and returns the descriptor.
    ///
    /// # Errors
    /// The first SPEC.md §4 rule the parts break, as the decoder checks it: for example
    /// [`DecodeError::TooManyAxes`], [`DecodeError::AxisCountMismatch`],
    /// [`DecodeError::SizeOverflow`], [`DecodeError::StrideTooLarge`],
    /// [`DecodeError::OutOfBounds`], [`DecodeError::BufferOverflow`],
    /// [`DecodeError::FileTooShort`], [`DecodeError::PathTooLong`] or
    /// [`DecodeError::SourceMismatch`] ([`DecodeError::rule`] names it).
    pub fn build(&self) -> Result<ValidDescriptor, DecodeError> {
        let ndim = self.shape.len();
        if ndim > MAX_NDIM {
            return Err(DecodeError::TooManyAxes { ndim });
        }
        let mut computed = [0i64; MAX_NDIM];
        let strides = match self.strides {
            Some(s) => s,
            None => {
                let s = computed
                    .get_mut(..ndim)
                    .ok_or(DecodeError::TooManyAxes { ndim })?;
                contiguous_strides(self.dtype.itemsize(), self.shape, self.order, s)?;
                s
            }
        };
        if strides.len() != ndim {
            return Err(DecodeError::AxisCountMismatch {
                shape: ndim,
                strides: strides.len(),
            });
        }
        let (buffer_offset, buffer_len) = match self.buffer {
            Some(b) => b,
            None => {
                // Just long enough: the end of the elements' span.
                let axes = self.shape.iter().copied().zip(strides.iter().copied());
                let facts = crate::layout::check(
                    self.dtype.itemsize(),
                    axes,
                    self.offset,
                    crate::layout::MAX_BYTES,
                )?;
                (0, facts.span.1.max(self.offset))
            }
        };
        let file_len = match self.file_len {
            Some(f) => f,
            None => buffer_offset
                .checked_add(buffer_len)
                .ok_or(DecodeError::BufferOverflow {
                    buffer_offset,
                    buffer_len,
                })?,
        };
        let path = self.path.as_bytes();
        if path.len() > PATH_CAPACITY {
            return Err(DecodeError::PathTooLong { len: path.len() });
        }

        let mut r = Record::new_zeroed();
        r.magic = MAGIC;
        r.version_major = U16::new(VERSION_MAJOR);
        r.version_minor = U16::new(VERSION_MINOR);
        r.flags = U32::new(flags::pack(self.order, self.mode, self.source));
        r.dtype_byteorder = self.dtype.byteorder().as_byte();
        r.dtype_kind = self.dtype.kind().as_byte();
        r.ndim = ndim as u8;
        r.itemsize = U32::new(self.dtype.itemsize());
        r.path_len = U16::new(path.len() as u16);
        r.buffer_offset = U64::new(buffer_offset);
        r.buffer_len = U64::new(buffer_len);
        r.offset = U64::new(self.offset);
        r.file_len = U64::new(file_len);
        r.device = U64::new(self.device);
        r.inode = U64::new(self.inode);
        r.generation = U64::new(self.generation);
        r.segment_id = self.segment_id;
        for (slot, &d) in r.shape.iter_mut().zip(self.shape) {
            *slot = U64::new(d);
        }
        for (slot, &s) in r.strides.iter_mut().zip(strides) {
            *slot = I64::new(s);
        }
        for (slot, &b) in r.path.iter_mut().zip(path) {
            *slot = b;
        }
        r.validate_fields()
    }
}
