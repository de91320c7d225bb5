//! The error of the segment layer: space, descriptors, permissions and kernel features, each
//! with what to do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong creating, sharing, passing or sweeping segments.
///
/// ```
/// use stridemap_shm::Error;
/// let e = Error::NoSpace {
///     folder: "/dev/shm".into(),
///     needed: 2 << 30,
///     available: 64 << 20,
///     limit: None,
/// };
/// assert!(e.to_string().contains("STRIDEMAP_TEMP_FOLDER"));
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The temp folder, the pool's quota or the machine's memory (the admission check of
    /// SPEC.md §7, rule 6) cannot hold the segment. Raised before anything is written or touched;
    /// no file is left behind.
    NoSpace {
        /// The folder (or `memfd`).
        folder: PathBuf,
        /// Bytes the segment needs.
        needed: u64,
        /// Bytes available there (or left in the pool's quota, or under the memory limit).
        available: u64,
        /// The memory limit that refused it (`MemAvailable`, or a cgroup's limit file, with
        /// the margin kept free below it); `None` for a filesystem's free space or the quota.
        limit: Option<String>,
    },
    /// The filesystem filled up while a segment was being reserved or written (ENOSPC); the
    /// segment is removed.
    RanOutOfSpace {
        /// The folder (or `memfd`).
        folder: PathBuf,
        /// Bytes being reserved, when known.
        needed: Option<u64>,
        /// The system's error.
        source: io::Error,
    },
    /// A segment larger than this platform's address space.
    TooLarge {
        /// Bytes asked for.
        bytes: u64,
    },
    /// The process or system is out of file descriptors.
    TooManyFiles {
        /// The system's error (EMFILE or ENFILE).
        source: io::Error,
    },
    /// Creating or opening something was not permitted.
    PermissionDenied {
        /// What was being created or opened.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The kernel lacks a feature this needs (memfd, a seal, fallocate on this filesystem).
    Unsupported {
        /// The feature.
        feature: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// A descriptor sent with a segment's fd is not a view of that segment's current use
    /// (read-only, for a [`SharedArray`](crate::SharedArray)).
    NotThisSegment,
    /// The pool was dropped.
    PoolClosed,
    /// An array [`Pool::share_arc`](crate::Pool::share_arc) cannot lend as one buffer.
    NotShareable {
        /// Why, and what to do.
        reason: &'static str,
    },
    /// [`HugePages::Require`](crate::HugePages::Require) and no huge page mechanism is
    /// available for the pool's kind of segment.
    HugePagesUnavailable {
        /// The pool's kind of segment.
        kind: crate::SegmentKind,
        /// Each mechanism considered and why it is not available (what to enable).
        why: String,
    },
    /// A descriptor, view or open error from the layers below.
    Stridemap(stridemap::Error),
    /// Another I/O error.
    Io {
        /// What was being done (empty for an `io::Error` converted by `?`).
        context: String,
        /// The system's error.
        source: io::Error,
    },
}

impl Error {
    /// Classifies an I/O error from creating `path`: space, descriptors, permission, or other.
    pub(crate) fn from_io(
        context: impl Into<String>,
        path: &std::path::Path,
        e: io::Error,
    ) -> Error {
        match e.raw_os_error() {
            Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() => Error::RanOutOfSpace {
                folder: path.to_path_buf(),
                needed: None,
                source: e,
            },
            Some(c)
                if c == rustix::io::Errno::MFILE.raw_os_error()
                    || c == rustix::io::Errno::NFILE.raw_os_error() =>
            {
                Error::TooManyFiles { source: e }
            }
            Some(c)
                if c == rustix::io::Errno::ACCESS.raw_os_error()
                    || c == rustix::io::Errno::PERM.raw_os_error() =>
            {
                Error::PermissionDenied {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
            _ => Error::Io {
                context: context.into(),
                source: e,
            },
        }
    }
}

impl Error {
    /// Whether trying the same thing again may succeed: a segment busy being recycled, an
    /// interrupted call (see [`stridemap::Error::is_retryable`]).
    ///
    /// ```
    /// let e = stridemap_shm::Error::from(stridemap::Error::SegmentBusy);
    /// assert!(e.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Stridemap(e) => e.is_retryable(),
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// The SPEC.md rule a wrapped descriptor or open error enforces, if any
    /// ([`stridemap::Error::rule`]).
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Error::Stridemap(e) => e.rule(),
            _ => None,
        }
    }
}

/// An I/O error of the caller's own, so that `?` works on `std::io` calls in functions that
/// return this crate's [`Result`]: out of file descriptors as [`Error::TooManyFiles`] (whose
/// message says what to do), anything else as [`Error::Io`] with no context of its own.
///
/// ```
/// use std::io::Write;
/// fn log_shape(pool: &stridemap_shm::Pool, out: &mut impl Write) -> stridemap_shm::Result<()> {
///     let a = pool.alloc::<f64>(&[2, 3], stridemap_shm::Order::C)?;
///     writeln!(out, "{:?}", a.layout().shape())?;
///     Ok(())
/// }
/// let mut out = Vec::new();
/// log_shape(&stridemap_shm::Pool::new()?, &mut out)?;
/// assert_eq!(out, b"[2, 3]\n");
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        let fds = [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE];
        if fds
            .iter()
            .any(|c| e.raw_os_error() == Some(c.raw_os_error()))
        {
            return Error::TooManyFiles { source: e };
        }
        Error::Io {
            context: String::new(),
            source: e,
        }
    }
}

impl From<stridemap::ViewError> for Error {
    fn from(e: stridemap::ViewError) -> Error {
        Error::Stridemap(e.into())
    }
}

impl From<stridemap::Error> for Error {
    fn from(e: stridemap::Error) -> Error {
        Error::Stridemap(e)
    }
}

impl From<stridemap_core::DecodeError> for Error {
    fn from(e: stridemap_core::DecodeError) -> Error {
        Error::Stridemap(e.into())
    }
}

impl From<stridemap_core::LayoutError> for Error {
    fn from(e: stridemap_core::LayoutError) -> Error {
        Error::Stridemap(e.into())
    }
}

const MORE_SPACE: &str = "; point STRIDEMAP_TEMP_FOLDER (or PoolConfig::temp_folder) at a \
     larger folder, or give the container more shared memory (docker run --shm-size=2g)";

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSpace {
                folder,
                needed,
                available,
                limit: None,
            } => {
                write!(
                    f,
                    "{} has {} free but this segment needs {}",
                    folder.display(),
                    mib(*available),
                    mib(*needed)
                )?;
                write!(f, "{MORE_SPACE}")
            }
            Error::NoSpace {
                folder,
                needed,
                available,
                limit: Some(limit),
            } => write!(
                f,
                "no memory for a segment of {} in {}: {limit} leaves {} available; free \
                 memory or raise the limit (a container's memory limit), or share less at \
                 once (a named file on disk, SegmentKind::File with STRIDEMAP_TEMP_FOLDER on a \
                 disk folder, takes no memory)",
                mib(*needed),
                folder.display(),
                mib(*available)
            ),
            Error::RanOutOfSpace {
                folder,
                needed,
                source,
            } => {
                write!(f, "{} ran out of space", folder.display())?;
                if let Some(n) = needed {
                    write!(f, " reserving {} for a segment", mib(*n))?;
                }
                write!(f, " ({source}){MORE_SPACE}")
            }
            Error::TooLarge { bytes } => write!(
                f,
                "a segment of {bytes} bytes does not fit this platform's address space"
            ),
            Error::TooManyFiles { source } => write!(
                f,
                "out of file descriptors ({source}); raise the limit (ulimit -n) or keep fewer \
                 segments open"
            ),
            Error::PermissionDenied { path, source } => {
                write!(f, "permission denied for {} ({source})", path.display())
            }
            Error::Unsupported { feature, source } => write!(
                f,
                "the kernel or filesystem does not support {feature} ({source}); use named \
                 file segments (SegmentKind::File) or a newer kernel"
            ),
            Error::NotThisSegment => write!(
                f,
                "the descriptor is not a view of this segment's current use (same id and \
                 generation; read-only for a shared array): describe a layout of the array's \
                 own descriptor"
            ),
            Error::PoolClosed => write!(f, "the pool was dropped"),
            Error::NotShareable { reason } => write!(f, "cannot share this array: {reason}"),
            Error::HugePagesUnavailable { kind, why } => write!(
                f,
                "huge pages are required but none are available for a {} segment: {why}; \
                 or use HugePages::Auto to fall back to base pages",
                match kind {
                    crate::SegmentKind::Memfd => "memfd",
                    crate::SegmentKind::File => "named file",
                }
            ),
            Error::Stridemap(e) => write!(f, "{e}"),
            Error::Io { context, source } if context.is_empty() => write!(f, "{source}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Stridemap(e) => Some(e),
            Error::TooManyFiles { source }
            | Error::RanOutOfSpace { source, .. }
            | Error::PermissionDenied { source, .. }
            | Error::Unsupported { source, .. }
            | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// This layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
