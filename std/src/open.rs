//! Opening what a producer sent: [`OpenOptions::open`], the one way in, takes a descriptor
//! (with the fd that came with it), an [`Incoming`] or an [`ArrayMessage`] ([`Openable`]);
//! then the checks of SPEC.md §6, then the map.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, FlockOperation, SealFlags, Stat, fcntl_get_seals, flock, fstat};
use rustix::io::Errno;
use stridemap_core::{Mode, SEGMENT_HEADER_LEN, SegmentHeader, Source, ValidDescriptor};

use crate::mapping::{Origin, ReusableRegion};
use crate::message::{ArrayMessage, Received};
use crate::resolve::{check_form, find_root, open_beneath};
use crate::socket::Incoming;
use crate::{Error, Mapping, OpenOptions, Result, sys};

impl OpenOptions {
    /// Opens what a producer sent, under this trust policy, and maps it: the one `open` of
    /// this crate. It takes a descriptor, with the fd that came with it if its source is an
    /// fd, as [`socket::recv`](crate::socket::recv) gives them ([`Incoming`]) or as a pair,
    /// and gives a [`Mapping`]; or an [`ArrayMessage`], and gives a [`Received`] array (see
    /// [`Openable`] for every form).
    ///
    /// A descriptor whose source is a **path** is checked in this order: the mode asked for
    /// is allowed (O5), the path is absolute and normalized (O1) and below an allowed root
    /// (O2), no component is a symlink (O3); the file is opened read-only unless `r+` was
    /// granted, never created or truncated (O4); it is a regular file (O6) exactly as long as
    /// described (O7) with the described identity (O8), with its buffer's bytes allocated if
    /// it is in shared memory (O12); a segment (generation ≠ 0) is locked shared for as long
    /// as it is mapped (SPEC.md §7) and its header must name the descriptor's segment and
    /// generation (O10); then the buffer is mapped (O11). A read-only mapping of a region
    /// this process already mapped from the same path under an equal policy reuses that map
    /// after re-checking the file with `fstat` (O6–O8).
    ///
    /// A descriptor whose source is an **fd** (received with SCM_RIGHTS) consumes the fd,
    /// which the mapping keeps while it lives (it holds the segment lock of SPEC.md §7, and a
    /// reused region re-checks it with `fstat`). Checks, in order: mode (O5), regular file
    /// (O6), length (O7), identity (O8), — unless [`OpenOptions::allow_unsealed_fds`] — that
    /// the file is sealed against shrinking (O9), that a file in shared memory has its
    /// buffer's bytes allocated (O12), then the segment lock and header (O10) and the map
    /// (O11). A read-only mapping of the received file (same device and inode) already in
    /// this process is reused.
    ///
    /// A path-named file can still be truncated by whoever may write it after it was mapped;
    /// reading or writing the lost part then kills this process with `SIGBUS` (as with
    /// memmap2's maps), a fault no check can rule out. Files passed as fds must be sealed
    /// against shrinking (O9), and stridemap segments are locked while mapped (SPEC.md §7).
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use stridemap::{Builder, DType, OpenOptions, socket};
    ///
    /// fn total(stream: &UnixStream) -> Result<f64, stridemap::Error> {
    ///     // Whatever came: a path descriptor, or an fd descriptor and its fd.
    ///     let m = OpenOptions::new().open(socket::recv(stream)?)?;
    ///     Ok(m.volatile_view::<f64>()?.iter().sum())
    /// }
    ///
    /// // A descriptor of a file outside the allowed folders is refused before it is opened.
    /// let desc = Builder::new(DType::parse("<f8")?, &[4]).path("/etc/passwd").build()?;
    /// let (tx, rx) = UnixStream::pair()?;
    /// socket::send(&tx, &desc, None)?;
    /// assert!(matches!(total(&rx), Err(stridemap::Error::OutsideRoots { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// One per failed check, each naming what to fix: [`Error::ModeNotAllowed`] (O5),
    /// [`Error::MissingFd`] for an fd descriptor that came without its fd,
    /// [`Error::UnexpectedFd`] for a path descriptor that came with one (which is closed),
    /// [`Error::BadPath`] (O1), [`Error::OutsideRoots`] or [`Error::UntrustedFolder`] (O2),
    /// [`Error::Symlink`] (O3), [`Error::Open`] (O4), [`Error::NotRegularFile`] (O6),
    /// [`Error::LengthMismatch`] (O7), [`Error::IdentityMismatch`] (O8),
    /// [`Error::NotSealed`] (O9, unless [`OpenOptions::allow_unsealed_fds`]),
    /// [`Error::Sparse`] (O12), [`Error::SegmentBusy`] when a segment stays locked
    /// exclusively for more than two seconds (retryable, [`Error::is_retryable`]),
    /// [`Error::StaleSegment`] (O10), [`Error::Map`] (O11), and [`Error::Io`] when `fstat` or
    /// `flock` fails. For an [`ArrayMessage`]: a compact descriptor that breaks a SPEC rule,
    /// or an inline array's bad typestr ([`Error::Descriptor`]), shape
    /// ([`Error::View`]) or length ([`Error::InlineLength`]).
    pub fn open<W: Openable>(&self, what: W) -> Result<W::Output> {
        what.open_under(self, sealed::Token(()))
    }
}

mod sealed {
    /// Only this crate's types are [`Openable`](super::Openable).
    pub trait Sealed {}

    /// Only this crate can call `Openable::open_under`.
    #[derive(Debug)]
    pub struct Token(pub(super) ());
}

/// What [`OpenOptions::open`] takes, and what it gives for each:
///
/// | what came | `opts.open(…)` | gives |
/// |---|---|---|
/// | a path descriptor | `opts.open(&desc)` | [`Mapping`] |
/// | an fd descriptor and its fd | `opts.open((&desc, fd))` | [`Mapping`] |
/// | a descriptor and the fd if any (`Option<OwnedFd>`) | `opts.open((&desc, fd))` | [`Mapping`] |
/// | what [`socket::recv`](crate::socket::recv) received | `opts.open(incoming)` | [`Mapping`] |
/// | an [`ArrayMessage`] (inline or a compact descriptor) | `opts.open(&msg)` | [`Received`] |
/// | an [`ArrayMessage`] and the fd if any | `opts.open((&msg, fd))` | [`Received`] |
///
/// Sealed: only these types implement it.
///
/// ```
/// use stridemap::{OpenOptions, message::ArrayMessage};
/// let msg = ArrayMessage::Inline { dtype: "<u2".into(), shape: vec![3], data: vec![1, 0, 2, 0, 3, 0] };
/// let got = OpenOptions::new().open(&msg)?; // inline: a copy this process owns
/// assert_eq!(got.view::<u16>()?.to_vec(), [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Openable: sealed::Sealed + Sized {
    /// What opening gives: a [`Mapping`] for a descriptor, a [`Received`] array for a message.
    type Output;

    /// Opens `self` under `opts` (called by [`OpenOptions::open`] only).
    #[doc(hidden)]
    fn open_under(self, opts: &OpenOptions, token: sealed::Token) -> Result<Self::Output>;
}

impl sealed::Sealed for &ValidDescriptor {}
impl Openable for &ValidDescriptor {
    type Output = Mapping;
    fn open_under(self, opts: &OpenOptions, _: sealed::Token) -> Result<Mapping> {
        by_source(self, None, opts)
    }
}

impl sealed::Sealed for (&ValidDescriptor, OwnedFd) {}
impl Openable for (&ValidDescriptor, OwnedFd) {
    type Output = Mapping;
    fn open_under(self, opts: &OpenOptions, _: sealed::Token) -> Result<Mapping> {
        by_source(self.0, Some(self.1), opts)
    }
}

impl sealed::Sealed for (&ValidDescriptor, Option<OwnedFd>) {}
impl Openable for (&ValidDescriptor, Option<OwnedFd>) {
    type Output = Mapping;
    fn open_under(self, opts: &OpenOptions, _: sealed::Token) -> Result<Mapping> {
        by_source(self.0, self.1, opts)
    }
}

impl sealed::Sealed for Incoming {}
impl Openable for Incoming {
    type Output = Mapping;
    fn open_under(self, opts: &OpenOptions, _: sealed::Token) -> Result<Mapping> {
        by_source(&self.descriptor, self.fd, opts)
    }
}

impl sealed::Sealed for &ArrayMessage {}
impl Openable for &ArrayMessage {
    type Output = Received;
    fn open_under(self, opts: &OpenOptions, _: sealed::Token) -> Result<Received> {
        crate::message::receive(self, None, opts)
    }
}

impl sealed::Sealed for (&ArrayMessage, Option<OwnedFd>) {}
impl Openable for (&ArrayMessage, Option<OwnedFd>) {
    type Output = Received;
    fn open_under(self, opts: &OpenOptions, _: sealed::Token) -> Result<Received> {
        crate::message::receive(self.0, self.1, opts)
    }
}

/// Opens a descriptor whose source is a path.
#[deprecated(note = "use OpenOptions::open, the one open: `opts.open(&desc)`")]
#[doc(hidden)]
pub fn open(desc: &ValidDescriptor, opts: &OpenOptions) -> Result<Mapping> {
    by_path(desc, opts)
}

/// Opens a descriptor whose source is a passed fd.
#[deprecated(note = "use OpenOptions::open, the one open: `opts.open((&desc, fd))`")]
#[doc(hidden)]
pub fn open_fd(desc: &ValidDescriptor, fd: OwnedFd, opts: &OpenOptions) -> Result<Mapping> {
    by_fd(desc, fd, opts)
}

/// Opens a descriptor by whatever came with it.
#[deprecated(note = "use OpenOptions::open, the one open: `opts.open((&desc, fd))`")]
#[doc(hidden)]
pub fn open_source(
    desc: &ValidDescriptor,
    fd: Option<OwnedFd>,
    opts: &OpenOptions,
) -> Result<Mapping> {
    by_source(desc, fd, opts)
}

/// The path case of [`OpenOptions::open`] (O5, O1–O4, O6–O8, O12, §7, O10, O11).
fn by_path(desc: &ValidDescriptor, opts: &OpenOptions) -> Result<Mapping> {
    let mode = grant(desc, opts)?;
    let Some(path) = desc.path().filter(|_| desc.source() == Source::Path) else {
        return Err(Error::MissingFd);
    };
    let path = Path::new(path);
    check_form(path)?;
    let (root, rel) = find_root(path, opts)?;
    if let Some(key) = desc.identity() {
        // Only a region this process opened by the same path under an equal policy.
        let accept = |r: &ReusableRegion| match r.origin() {
            Origin::Path { path: p, policy } => p == path && opts.same_policy(policy),
            Origin::Fd => false,
        };
        if let Some(m) = reuse_region(desc, mode, opts, key, accept)? {
            return Ok(m);
        }
    }
    let fd = open_beneath(root, rel, mode == Mode::ReadWrite, opts.use_openat2, path)?;
    let file = File::from(fd);
    let st = check_file(&file, desc)?;
    check_allocated(&file, &st, desc)?;
    let segment = lock_and_check_header(&file, desc)?;
    map(desc, mode, file, &st, segment, opts)
}

/// The fd case of [`OpenOptions::open`] (O5, O6–O9, O12, §7, O10, O11).
fn by_fd(desc: &ValidDescriptor, fd: OwnedFd, opts: &OpenOptions) -> Result<Mapping> {
    let mode = grant(desc, opts)?;
    if desc.source() != Source::Fd {
        return Err(Error::UnexpectedFd);
    }
    let file = File::from(fd);
    let st = check_file(&file, desc)?;
    check_seals(&file, opts)?;
    check_allocated(&file, &st, desc)?;
    // The received fd passed O6–O9 as the file (device, inode): any region of that very
    // file serves it.
    if let Some(m) = reuse_region(desc, mode, opts, (st.st_dev, st.st_ino), |_| true)? {
        return Ok(m);
    }
    let segment = lock_and_check_header(&file, desc)?;
    map(desc, mode, file, &st, segment, opts)
}

/// The dispatch of [`OpenOptions::open`]: by the fd that came, or by the path.
fn by_source(desc: &ValidDescriptor, fd: Option<OwnedFd>, opts: &OpenOptions) -> Result<Mapping> {
    match (desc.source(), fd) {
        (Source::Fd, Some(fd)) => by_fd(desc, fd, opts),
        (Source::Fd, None) => Err(Error::MissingFd),
        (Source::Path, None) => by_path(desc, opts),
        (Source::Path, Some(_)) => Err(Error::UnexpectedFd),
    }
}

/// How long a reader waits for a segment's producer to finish recycling it (it holds the
/// exclusive lock only while it rewrites the header).
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// SPEC.md §7 and O10: the shared lock that keeps a segment from being deleted or recycled
/// while this process maps it, then the header check. Files that are not segments
/// (generation 0) get the lock if it is free and are never waited for.
pub(crate) fn lock_and_check_header(
    file: &File,
    desc: &ValidDescriptor,
) -> Result<Option<([u8; 16], u64)>> {
    if desc.generation() == 0 {
        let _ = flock(file, FlockOperation::NonBlockingLockShared);
        return Ok(None);
    }
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        match flock(file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK | Errno::INTR) if start.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(Errno::WOULDBLOCK) => return Err(Error::SegmentBusy),
            Err(e) => return Err(Error::io("flock(LOCK_SH)", e.into())),
        }
    }
    let expected = (desc.segment_id().unwrap_or_default(), desc.generation());
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let header = file
        .read_exact_at(&mut buf, 0)
        .ok()
        .and_then(|()| SegmentHeader::decode(&buf).ok())
        .ok_or(Error::StaleSegment {
            found: None,
            expected,
        })?;
    if !header.matches(desc) {
        return Err(Error::StaleSegment {
            found: Some((header.segment_id, header.generation.get())),
            expected,
        });
    }
    Ok(Some(expected))
}

/// O5: the mode the caller asked for, if the descriptor allows it.
pub(crate) fn grant(desc: &ValidDescriptor, opts: &OpenOptions) -> Result<Mode> {
    desc.mode().grant(opts.mode).ok_or(Error::ModeNotAllowed {
        allowed: desc.mode(),
        wanted: opts.mode,
    })
}

/// O6, O7, O8 on an open file.
pub(crate) fn check_file(file: &File, desc: &ValidDescriptor) -> Result<Stat> {
    let st = fstat(file).map_err(|e| Error::io("fstat", e.into()))?;
    let file_type = FileType::from_raw_mode(st.st_mode);
    if file_type != FileType::RegularFile {
        return Err(Error::NotRegularFile {
            file_type: st.st_mode & 0o170000,
        });
    }
    let actual = st.st_size as u64;
    if actual != desc.file_len() {
        return Err(Error::LengthMismatch {
            expected: desc.file_len(),
            actual,
        });
    }
    if let Some(expected) = desc.identity() {
        let actual = (st.st_dev, st.st_ino);
        if actual != expected {
            return Err(Error::IdentityMismatch { expected, actual });
        }
    }
    Ok(st)
}

/// O9: a passed fd must be sealed against shrinking.
pub(crate) fn check_seals(file: &File, opts: &OpenOptions) -> Result<()> {
    if !opts.require_seals {
        return Ok(());
    }
    match fcntl_get_seals(file) {
        Ok(seals) if seals.contains(SealFlags::SHRINK) => Ok(()),
        Ok(seals) => Err(Error::NotSealed {
            seals: Some(seals.bits()),
        }),
        // Not sealable (EINVAL), or not a file at all for fcntl (EBADF: an O_PATH fd): O9 in
        // every reader (SPEC.md §6).
        Err(_) => Err(Error::NotSealed { seals: None }),
    }
}

/// `f_type` of a tmpfs (`fstatfs`), where memfds live too.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Whether `file` lives in a tmpfs (memfds do).
fn on_tmpfs(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|st| st.f_type as u64 & 0xffff_ffff == TMPFS_MAGIC)
}

/// O12: a file sealed against shrinking (a sealed memfd, a peer's) must have at least its
/// buffer's bytes allocated, so that reading its holes cannot allocate more memory here than
/// its producer already did.
pub(crate) fn check_allocated(file: &File, st: &Stat, desc: &ValidDescriptor) -> Result<()> {
    let allocated = (st.st_blocks as u64).saturating_mul(512);
    let sealed = fcntl_get_seals(file).is_ok_and(|s| s.contains(SealFlags::SHRINK));
    if allocated < desc.buffer_len() && sealed {
        return Err(Error::Sparse {
            allocated,
            buffer_len: desc.buffer_len(),
        });
    }
    Ok(())
}

/// A mapping that reuses a live read-only region of file `key` that `accept`s, after
/// re-checking O6–O8 and O12 against the descriptor on the file the region holds.
fn reuse_region(
    desc: &ValidDescriptor,
    mode: Mode,
    opts: &OpenOptions,
    key: (u64, u64),
    accept: impl Fn(&ReusableRegion) -> bool,
) -> Result<Option<Mapping>> {
    if !opts.reuse || mode != Mode::ReadOnly || desc.buffer_len() == 0 {
        return Ok(None);
    }
    let Some((region, start)) =
        ReusableRegion::find(key, desc.buffer_offset(), desc.buffer_len(), accept)
    else {
        return Ok(None);
    };
    // The region holds the segment's shared lock, so its generation cannot have changed
    // since its header was checked: a descriptor of another generation gets a fresh open
    // (which reports it stale).
    let wanted = (desc.segment_id().unwrap_or_default(), desc.generation());
    if desc.generation() != 0 && region.segment() != Some(wanted) {
        return Ok(None);
    }
    let st = check_file(region.file(), desc)?;
    check_allocated(region.file(), &st, desc)?;
    Ok(Some(Mapping::reusable(desc.clone(), region, start)))
}

/// O11: maps the enclosing buffer of the checked `file`.
pub(crate) fn map(
    desc: &ValidDescriptor,
    mode: Mode,
    file: File,
    st: &Stat,
    segment: Option<([u8; 16], u64)>,
    opts: &OpenOptions,
) -> Result<Mapping> {
    let (offset, len) = (desc.buffer_offset(), desc.buffer_len());
    if len == 0 {
        return Ok(Mapping::empty(desc.clone(), mode));
    }
    let len = usize::try_from(len).map_err(|_| Error::Map {
        source: std::io::Error::other("buffer larger than the address space"),
    })?;
    let map_err = |source| Error::Map { source };
    match mode {
        Mode::ReadOnly => {
            let map = sys::map_read(&file, offset, len).map_err(map_err)?;
            advise_huge(&file, len, |a| map.advise(a));
            // The file stays open (path-opened or received) to re-check it with fstat when
            // the region is reused.
            let origin = match desc.path().filter(|_| desc.source() == Source::Path) {
                Some(p) => Origin::Path {
                    path: Path::new(p).to_path_buf(),
                    policy: opts.policy(),
                },
                None => Origin::Fd,
            };
            let key = (st.st_dev, st.st_ino);
            let region = ReusableRegion::new(map, file, origin, key, offset, segment);
            if opts.reuse {
                region.publish();
            }
            Ok(Mapping::reusable(desc.clone(), region, 0))
        }
        Mode::ReadWrite => {
            let map = sys::map_write(&file, offset, len).map_err(map_err)?;
            advise_huge(&file, len, |a| map.advise(a));
            // Never frozen: a file sealed against writes cannot be mapped shared-writable.
            Ok(Mapping::own(desc.clone(), mode, map, file))
        }
        Mode::CopyOnWrite => {
            let map = sys::map_private(&file, offset, len).map_err(map_err)?;
            // Private pages not yet written still show the file's bytes: only seals make them
            // stable (the map checks them).
            Ok(Mapping::own(desc.clone(), mode, map, file))
        }
    }
}

/// Transparent huge pages for a shared map of 2 MiB or more of a shared-memory file (tmpfs, a
/// memfd): `MADV_HUGEPAGE`, so that pages this map faults in itself may be huge where the
/// kernel allows them only on request (`shmem_enabled=advise`, `huge=advise`). Pages the
/// producer already made huge are mapped whole (PMD) without it: the kernel aligns such maps
/// to 2 MiB and segments in huge pages keep their data at a 2 MiB offset (SPEC §8). Other
/// filesystems, and hugetlb files (always huge), are left alone; a failure changes nothing.
fn advise_huge(
    file: &File,
    len: usize,
    advise: impl FnOnce(memmap2::Advice) -> std::io::Result<()>,
) {
    if len >= 2 << 20 && on_tmpfs(file) {
        let _ = advise(memmap2::Advice::HugePage);
    }
}
