//! The errors of this layer, by operation: opening (the core's rules and the open-time checks
//! of SPEC.md §6), `.npy` files, messages and I/O in [`Error`]; making and using views in
//! [`ViewError`] (which converts into [`Error`]) — each variant saying what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

use stridemap_core::{DType, Mode};

/// Everything that can go wrong opening a descriptor (or reading a `.npy`, a message); a view
/// operation's [`ViewError`] converts into [`Error::View`].
///
/// [`Error::rule`] names the SPEC.md rule a variant enforces: `R*`/`C*` for the descriptor
/// itself ([`Error::Descriptor`], and the layout checks a descriptor shares inside
/// [`Error::View`]), `O1` … `O12` for the checks made when opening the file, `S1`, `S2` for a
/// [`Session`](crate::socket::Session)'s (SPEC.md §6, "Reusing a mapping", case 4).
///
/// ```
/// use stridemap::{Error, OpenOptions};
/// use stridemap::{Builder, DType};
/// let d = Builder::new(DType::parse("<f8")?, &[4]).path("relative/x").build()?;
/// let err = OpenOptions::new().open(&d).unwrap_err();
/// assert!(matches!(err, Error::BadPath { .. }));
/// assert_eq!(err.rule(), Some("O1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The descriptor breaks a SPEC rule ([`DecodeError::rule`](stridemap_core::DecodeError::rule)
    /// names it).
    Descriptor(stridemap_core::DecodeError),
    /// O1: the path is relative, or has `.`, `..` or empty components.
    BadPath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// O2: the path is not below any allowed root.
    OutsideRoots {
        /// The path.
        path: PathBuf,
        /// The allowed roots.
        roots: Vec<PathBuf>,
    },
    /// O2: the path is below a default root, but the `stridemap-*` folder it names there is
    /// not a private folder of this user (a folder owned by this process's effective uid with
    /// mode 0700): anyone could have planted it.
    UntrustedFolder {
        /// The path.
        path: PathBuf,
        /// The `stridemap-*` entry.
        folder: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// O3: a component of the path is a symbolic link.
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// O4: the file could not be opened (missing, permission denied, …).
    Open {
        /// The path (or `<fd>`).
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// O5: the caller asked for more than the descriptor allows (e.g. `r+` of an `r` one).
    ModeNotAllowed {
        /// What the descriptor allows.
        allowed: Mode,
        /// What the caller asked for.
        wanted: Mode,
    },
    /// O6: the file is not a regular file (or memfd).
    NotRegularFile {
        /// The file type bits of `st_mode`.
        file_type: u32,
    },
    /// O7: the file's length is not the one the producer described.
    LengthMismatch {
        /// The descriptor's `file_len`.
        expected: u64,
        /// `st_size` now.
        actual: u64,
    },
    /// O8: the file is not the one the producer described (device or inode differ).
    IdentityMismatch {
        /// The descriptor's (device, inode).
        expected: (u64, u64),
        /// The file's (device, inode).
        actual: (u64, u64),
    },
    /// A descriptor whose source is an fd was opened without one (`opts.open(&desc)`, or
    /// `opts.open((&desc, None))`, with [`OpenOptions::open`](crate::OpenOptions::open)).
    MissingFd,
    /// A descriptor whose source is a path came with an fd (the pair of [`Error::MissingFd`]):
    /// the peer sent an fd the descriptor does not account for; it was closed.
    UnexpectedFd,
    /// O9: an fd-passed file is not sealed against shrinking.
    NotSealed {
        /// The seals found (`F_GET_SEALS`), or `None` if the file cannot be sealed.
        seals: Option<u32>,
    },
    /// O12: a file in shared memory (tmpfs, memfd) has fewer bytes allocated than the buffer
    /// it is to be read through: reading its holes would allocate the difference, charged to
    /// this process (a peer's sealed memfd made by `ftruncate` alone).
    Sparse {
        /// Bytes the file has allocated (`st_blocks` · 512).
        allocated: u64,
        /// The descriptor's `buffer_len`.
        buffer_len: u64,
    },
    /// O10: the segment header does not hold the descriptor's segment id and generation: the
    /// segment was recycled for another array, or the file is not a segment.
    StaleSegment {
        /// What the header holds, if it is a valid header.
        found: Option<([u8; 16], u64)>,
        /// What the descriptor expects.
        expected: ([u8; 16], u64),
    },
    /// A segment stayed locked exclusively (being recycled or deleted) for too long; asking
    /// again may succeed ([`Error::is_retryable`]).
    SegmentBusy,
    /// S1: a [`Session`](crate::socket::Session) got a segment's descriptor without its fd,
    /// and this connection holds no mapping of that segment and generation: it was never
    /// handed on this connection (or on another one only), was released, or was recycled
    /// since (a new generation). The sender must pass the fd again.
    NotInSession {
        /// The descriptor's segment id (all zero if it names none).
        segment_id: [u8; 16],
        /// The descriptor's generation.
        generation: u64,
    },
    /// S2: a [`Session`](crate::socket::Session) holds the descriptor's segment and
    /// generation, but the descriptor does not match what that mapping was checked with
    /// (`field` says which: device and inode, file length, buffer, path, or the mode granted).
    NotAsHeld {
        /// What differs.
        field: &'static str,
    },
    /// A release record (SPEC.md §6.2) that fails a check, or that came with an fd (closed).
    BadRelease(stridemap_core::ReleaseError),
    /// O11: mapping the buffer failed.
    Map {
        /// The system's error.
        source: io::Error,
    },
    /// A view could not be made or used ([`ViewError`]).
    View(ViewError),
    /// An inline array whose bytes are not exactly its shape's (a malformed message).
    InlineLength {
        /// Bytes the dtype and shape need.
        expected: u64,
        /// Bytes in the message.
        actual: u64,
    },
    /// A `.npy` file that cannot be read (details in `reason`).
    Npy {
        /// What is wrong.
        reason: String,
    },
    /// Another I/O error.
    Io {
        /// What was being done.
        context: String,
        /// The system's error.
        source: io::Error,
    },
}

impl Error {
    /// The SPEC.md rule this error enforces, if any.
    pub fn rule(&self) -> Option<&'static str> {
        Some(match self {
            Error::Descriptor(e) => e.rule(),
            Error::View(e) => return e.rule(),
            Error::BadPath { .. } => "O1",
            Error::OutsideRoots { .. } | Error::UntrustedFolder { .. } => "O2",
            Error::Symlink { .. } => "O3",
            Error::Open { .. } => "O4",
            Error::ModeNotAllowed { .. } => "O5",
            Error::NotRegularFile { .. } => "O6",
            Error::LengthMismatch { .. } => "O7",
            Error::IdentityMismatch { .. } => "O8",
            Error::NotSealed { .. } => "O9",
            Error::Sparse { .. } => "O12",
            Error::StaleSegment { .. } => "O10",
            Error::Map { .. } => "O11",
            Error::NotInSession { .. } => "S1",
            Error::NotAsHeld { .. } => "S2",
            _ => return None,
        })
    }

    /// Whether trying the same thing again may succeed: the segment was busy (being
    /// recycled), or an I/O call was interrupted or would block.
    ///
    /// ```
    /// assert!(stridemap::Error::SegmentBusy.is_retryable());
    /// assert!(!stridemap::Error::from(stridemap::ViewError::ReadOnly).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::SegmentBusy => true,
            Error::Open { source, .. } | Error::Map { source } | Error::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                )
            }
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ViewError> for Error {
    fn from(e: ViewError) -> Error {
        Error::View(e)
    }
}

impl From<stridemap_core::DecodeError> for Error {
    fn from(e: stridemap_core::DecodeError) -> Error {
        Error::Descriptor(e)
    }
}

impl From<stridemap_core::LayoutError> for Error {
    fn from(e: stridemap_core::LayoutError) -> Error {
        Error::View(ViewError::Layout(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(rule), false) = (
            self.rule(),
            matches!(self, Error::Descriptor(_) | Error::View(_)),
        ) {
            write!(f, "{rule}: ")?;
        }
        match self {
            Error::Descriptor(e) => write!(f, "invalid descriptor: {e}"),
            Error::BadPath { path, reason } => write!(
                f,
                "refusing path {}: {reason}; producers must send absolute, normalized paths",
                path.display()
            ),
            Error::OutsideRoots { path, roots } => {
                write!(
                    f,
                    "refusing {}: not below an allowed root (",
                    path.display()
                )?;
                for (i, r) in roots.iter().enumerate() {
                    write!(f, "{}{}", if i > 0 { ", " } else { "" }, r.display())?;
                }
                write!(f, "); allow its folder with OpenOptions::allow_root")
            }
            Error::UntrustedFolder {
                path,
                folder,
                reason,
            } => write!(
                f,
                "refusing {}: {} is not a private stridemap folder of this user ({reason}); \
                 to accept another user's producer, allow its folder with \
                 OpenOptions::allow_root",
                path.display(),
                folder.display()
            ),
            Error::Symlink { path } => write!(
                f,
                "refusing {}: a component is a symbolic link (or it escapes its root)",
                path.display()
            ),
            Error::Open { path, source } => write!(f, "cannot open {}: {source}", path.display()),
            Error::ModeNotAllowed { allowed, wanted } => write!(
                f,
                "the descriptor allows mode {allowed}, not {wanted}; ask for r (or c for \
                 private writes), or have the producer describe it as r+"
            ),
            Error::NotRegularFile { file_type } => {
                write!(f, "not a regular file (st_mode type {file_type:#o})")
            }
            Error::LengthMismatch { expected, actual } => write!(
                f,
                "the file is {actual} bytes but was {expected} when described: it was \
                 truncated, grown or replaced"
            ),
            Error::IdentityMismatch { expected, actual } => write!(
                f,
                "the file is device {}, inode {} but the descriptor names device {}, inode {}: \
                 it was replaced",
                actual.0, actual.1, expected.0, expected.1
            ),
            Error::NotInSession {
                segment_id,
                generation,
            } => {
                write!(f, "segment ")?;
                for b in segment_id {
                    write!(f, "{b:02x}")?;
                }
                write!(
                    f,
                    " generation {generation} came without its fd, and this connection's \
                     session holds no mapping of it (never handed here, released, or \
                     recycled): the sender must pass the fd again (stridemap-shm's \
                     Sender::forget, or a new connection)"
                )
            }
            Error::NotAsHeld { field } => write!(
                f,
                "the descriptor's {field} differs from the mapping this connection holds of \
                 its segment: the sender must pass the fd again (stridemap-shm's \
                 Sender::forget, or a new connection)"
            ),
            Error::BadRelease(e) => write!(f, "{e}"),
            Error::MissingFd => write!(
                f,
                "the descriptor's source is an fd but none came with it: the producer must \
                 send the segment's fd with the descriptor (stridemap::socket::send)"
            ),
            Error::UnexpectedFd => write!(
                f,
                "the descriptor names a path but an fd came with it (closed): the producer \
                 must send path descriptors without an fd"
            ),
            Error::NotSealed { seals } => match seals {
                Some(s) => write!(
                    f,
                    "the passed fd is not sealed against shrinking (seals {s:#x}); the \
                     producer must add F_SEAL_SHRINK, or allow unsealed fds explicitly"
                ),
                None => write!(
                    f,
                    "the passed fd cannot be sealed (F_GET_SEALS fails: not a memfd, or an \
                     O_PATH fd); allow unsealed fds explicitly if the producer is trusted"
                ),
            },
            Error::Sparse {
                allocated,
                buffer_len,
            } => write!(
                f,
                "the file lives in shared memory and has {allocated} bytes allocated, fewer \
                 than its {buffer_len}-byte buffer: reading its holes would allocate memory \
                 here; the producer must write (or fallocate) the buffer before sending it"
            ),
            Error::StaleSegment { found, expected } => match found {
                Some((id, _)) if *id != expected.0 || *id == [0; 16] => write!(
                    f,
                    "the file is segment {} but the descriptor names segment {}{}: it was made \
                     for another file",
                    hex(id),
                    hex(&expected.0),
                    if expected.0 == [0; 16] {
                        " (all zero, which names no segment)"
                    } else {
                        ""
                    }
                ),
                Some((_, g)) if *g != expected.1 => write!(
                    f,
                    "stale descriptor: the segment now holds generation {g}, the descriptor \
                     was made for generation {}; ask the producer again",
                    expected.1
                ),
                Some(_) => write!(
                    f,
                    "the descriptor's buffer is not inside the segment's data area"
                ),
                None => write!(f, "the file has no valid segment header"),
            },
            Error::SegmentBusy => write!(
                f,
                "the segment stayed locked by its producer (being recycled or deleted); ask \
                 the producer for a fresh descriptor"
            ),
            Error::Map { source } => write!(f, "cannot map the buffer: {source}"),
            Error::View(e) => write!(f, "{e}"),
            Error::InlineLength { expected, actual } => write!(
                f,
                "the inline array has {actual} bytes but its dtype and shape need {expected}"
            ),
            Error::Npy { reason } => write!(f, "cannot read .npy: {reason}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Descriptor(e) => Some(e),
            Error::View(e) => Some(e),
            Error::BadRelease(e) => Some(e),
            Error::Open { source, .. } | Error::Map { source } | Error::Io { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// Everything that can go wrong making or using a view (typed, byte-level or volatile) or
/// reaching a mapping's bytes: the errors of the view operations, apart from opening.
///
/// ```
/// use stridemap::{Layout, Order, View, ViewError};
/// let words = [0u64; 4];
/// let bytes: &[u8] = bytemuck::cast_slice(&words);
/// let err = View::<f64>::new(&bytes[..24], Layout::contiguous(8, &[4], Order::C)?).unwrap_err();
/// assert!(matches!(err, ViewError::BufferTooShort { needed: 32, len: 24 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub enum ViewError {
    /// A layout operation is impossible (bad axis, index out of range, zero step, …).
    Layout(stridemap_core::LayoutError),
    /// The descriptor of a view breaks a SPEC rule (describing a view whose layout the
    /// descriptor cannot hold).
    Descriptor(stridemap_core::DecodeError),
    /// A typed view of the wrong element type.
    DtypeMismatch {
        /// The descriptor's dtype.
        have: DType,
        /// The dtype of the requested Rust type.
        want: DType,
    },
    /// A typed view over a layout whose itemsize is not the Rust type's size.
    ItemsizeMismatch {
        /// The layout's itemsize.
        itemsize: u32,
        /// `size_of` the Rust type.
        type_size: usize,
    },
    /// A typed view whose elements are not all aligned for the Rust type.
    Misaligned {
        /// What is not aligned: the buffer's address, the first element's offset, or a stride.
        what: Unaligned,
        /// The alignment the type needs (for offsets and strides: its size, so that every
        /// element is a whole slot).
        align: usize,
    },
    /// A buffer too short for the layout put over it.
    BufferTooShort {
        /// Bytes the layout's elements reach.
        needed: u64,
        /// Bytes in the buffer.
        len: u64,
    },
    /// A slice given to copy into or out of a view does not have one element per element.
    SliceLength {
        /// The view's number of elements.
        expected: usize,
        /// The slice's.
        actual: usize,
    },
    /// Chunks of zero indices were asked for.
    ZeroChunk,
    /// A reference (`&[u8]`, a [`View`](crate::View)) to bytes that another process may
    /// change: the mapping is not frozen (a memfd sealed `F_SEAL_WRITE`; a named file, an
    /// `r+` array and a memfd sealed only `F_SEAL_FUTURE_WRITE` are not), and its owner has
    /// not promised otherwise with
    /// [`Mapping::assume_no_outside_writes`](crate::Mapping::assume_no_outside_writes).
    NotFrozen,
    /// The mapping or view is read-only: a mapping opened with the default
    /// [`OpenOptions`](crate::OpenOptions), whose mode is `r`; ask for
    /// `.mode(Mode::ReadWrite)` (an `r+` descriptor) or `.mode(Mode::CopyOnWrite)`.
    ReadOnly,
    /// A mutable operation over a layout whose elements overlap (zero or short strides).
    Overlapping,
    /// The view is not backed by a described file, so it cannot be described.
    NotDescribable,
    /// An `ndarray` view given to `Mapping::describe_array` (feature `ndarray`) does not
    /// point into the mapping's buffer.
    NotInMapping,
    /// A size, stride or offset does not fit this platform's `usize`/`isize`.
    TooLarge,
}

impl ViewError {
    /// The SPEC.md rule a wrapped descriptor error enforces (a sub-view's descriptor), if any.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            ViewError::Descriptor(e) => Some(e.rule()),
            ViewError::Layout(e) => e.rule(),
            _ => None,
        }
    }
}

impl From<stridemap_core::DecodeError> for ViewError {
    fn from(e: stridemap_core::DecodeError) -> ViewError {
        ViewError::Descriptor(e)
    }
}

impl From<stridemap_core::LayoutError> for ViewError {
    fn from(e: stridemap_core::LayoutError) -> ViewError {
        ViewError::Layout(e)
    }
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewError::Descriptor(e) => write!(f, "{e}"),
            ViewError::Layout(e) => write!(f, "{e}"),
            ViewError::DtypeMismatch { have, want } => write!(
                f,
                "the array's dtype is {have}, not {want}; view it with the Rust type of \
                 {have}, or copy its bytes out with Mapping::copy_array (Mapping::byte_view \
                 works on frozen mappings only)"
            ),
            ViewError::ItemsizeMismatch {
                itemsize,
                type_size,
            } => write!(
                f,
                "elements are {itemsize} bytes but the Rust type is {type_size}; use a byte view"
            ),
            ViewError::Misaligned { what, align } => write!(
                f,
                "{what} is not a multiple of {align}, as a typed view needs; use a byte view \
                 (ByteView::read) for unaligned data"
            ),
            ViewError::BufferTooShort { needed, len } => write!(
                f,
                "the layout reaches byte {needed} but the buffer has {len}; describe a layout \
                 inside the buffer"
            ),
            ViewError::SliceLength { expected, actual } => write!(
                f,
                "the slice has {actual} elements but the view {expected}; pass one per element"
            ),
            ViewError::ZeroChunk => write!(f, "chunks must hold at least one index"),
            ViewError::NotFrozen => write!(
                f,
                "another process may change these bytes, so no reference to them is lent: \
                 they are not frozen (a memfd sealed F_SEAL_WRITE; a named file, an r+ array \
                 and a memfd sealed only F_SEAL_FUTURE_WRITE are not, since a writable map \
                 made before that seal keeps writing); read with volatile_view() (element \
                 copies) or Mapping::copy_array, write with volatile_view_mut(), or promise \
                 that nobody else writes them with unsafe Mapping::assume_no_outside_writes"
            ),
            ViewError::ReadOnly => write!(
                f,
                "the mapping is read-only (OpenOptions opens with mode r unless asked): to \
                 write, open an r+ descriptor (as OutputArray::send sends) with \
                 OpenOptions::new().mode(Mode::ReadWrite), or use Mode::CopyOnWrite for \
                 writes that stay in this process"
            ),
            ViewError::Overlapping => write!(
                f,
                "the view's elements overlap (zero or short strides), so it cannot be written \
                 as a whole; write single elements or copy it first"
            ),
            ViewError::NotDescribable => write!(
                f,
                "the view is not backed by a described file; share it through a pool first"
            ),
            ViewError::NotInMapping => write!(
                f,
                "the array does not point into this mapping's buffer; describe arrays made \
                 from this mapping's views"
            ),
            ViewError::TooLarge => write!(f, "a size or offset does not fit this platform's usize"),
        }
    }
}

impl std::error::Error for ViewError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ViewError::Descriptor(e) => Some(e),
            ViewError::Layout(e) => Some(e),
            _ => None,
        }
    }
}

/// What a [`ViewError::Misaligned`] view got wrong.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unaligned {
    /// The buffer's address is not aligned for the type.
    Buffer {
        /// The address.
        addr: usize,
    },
    /// The first element's byte offset is not a multiple of the type's size.
    Offset {
        /// The offset.
        offset: u64,
    },
    /// A stride (of an axis longer than 1) is not a multiple of the type's size.
    Stride {
        /// The axis.
        axis: usize,
        /// Its stride in bytes.
        stride: i64,
    },
}

impl fmt::Display for Unaligned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unaligned::Buffer { addr } => write!(f, "the buffer's address {addr:#x}"),
            Unaligned::Offset { offset } => write!(f, "the first element's offset {offset}"),
            Unaligned::Stride { axis, stride } => write!(f, "the stride {stride} of axis {axis}"),
        }
    }
}

/// This layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result of a view operation.
pub type ViewResult<T> = std::result::Result<T, ViewError>;
