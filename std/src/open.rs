//! Opening a descriptor: the checks of SPEC.md §6, then the map.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, FlockOperation, SealFlags, Stat, fcntl_get_seals, flock, fstat};
use rustix::io::Errno;
use stridemap_core::{Mode, SEGMENT_HEADER_LEN, SegmentHeader, Source, ValidDescriptor};

use crate::mapping::{Origin, SharedRegion};
use crate::resolve::{check_form, find_root, open_beneath};
use crate::{Error, Mapping, OpenOptions, Result, sys};

/// Opens a descriptor whose source is a path, under the trust policy of `opts`, and maps its
/// enclosing buffer.
///
/// The checks, in order: the mode asked for is allowed (O5), the path is absolute and
/// normalized (O1) and below an allowed root (O2), no component is a symlink (O3); the file
/// is opened read-only unless `r+` was granted, never created or truncated (O4); it is a
/// regular file (O6) exactly as long as described (O7) with the described identity (O8),
/// with its buffer's bytes allocated if it is in shared memory (O12); a segment (generation ≠ 0) is locked shared for as long as it is mapped (SPEC.md §7) and its
/// header must name the descriptor's segment and generation (O10); then the buffer is mapped
/// (O11). A read-only mapping of a region this process already mapped from the same path
/// under an equal policy reuses that map after re-checking the file with `fstat` (O6–O8).
///
/// A path-named file can still be truncated by whoever may write it after it was mapped;
/// reading or writing the lost part then kills this process with `SIGBUS` (as with
/// memmap2's maps), a fault no check can rule out. Files passed as fds must be sealed
/// against shrinking (O9), and stridemap segments are locked while mapped (SPEC.md §7).
///
/// ```no_run
/// use stridemap::{OpenOptions, decode_any, open};
/// # let bytes = [0u8; 1024];
/// let desc = decode_any(&bytes)?;
/// let m = open(&desc, &OpenOptions::new().allow_root("/data"))?;
/// println!("{} elements", m.shared_view::<f32>()?.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// One per failed check, each naming what to fix: [`Error::ModeNotAllowed`] (O5),
/// [`Error::MissingFd`] for a descriptor whose source is an fd (use [`open_fd`] or
/// [`open_source`]), [`Error::BadPath`] (O1), [`Error::OutsideRoots`] or
/// [`Error::UntrustedFolder`] (O2), [`Error::Symlink`] (O3), [`Error::Open`] (O4),
/// [`Error::NotRegularFile`] (O6), [`Error::LengthMismatch`] (O7),
/// [`Error::IdentityMismatch`] (O8), [`Error::Sparse`] (O12), [`Error::SegmentBusy`] when a segment stays locked
/// exclusively for more than two seconds (retryable, [`Error::is_retryable`]),
/// [`Error::StaleSegment`] (O10), [`Error::Map`] (O11), and [`Error::Io`] when `fstat` or
/// `flock` fails.
pub fn open(desc: &ValidDescriptor, opts: &OpenOptions) -> Result<Mapping> {
    let mode = grant(desc, opts)?;
    let Some(path) = desc.path().filter(|_| desc.source() == Source::Path) else {
        return Err(Error::MissingFd);
    };
    let path = Path::new(path);
    check_form(path)?;
    let (root, rel) = find_root(path, opts)?;
    if let Some(key) = desc.identity() {
        // Only a region this process opened by the same path under an equal policy.
        let accept = |r: &SharedRegion| match r.origin() {
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

/// Opens a descriptor whose source is a passed file descriptor (received with SCM_RIGHTS),
/// and maps its enclosing buffer. The fd is consumed: kept while a writable mapping needs it,
/// closed once a read-only map no longer does.
///
/// Checks, in order: mode (O5), regular file (O6), length (O7), identity (O8), — unless
/// [`OpenOptions::allow_unsealed_fds`] — that the file is sealed against shrinking (O9), and
/// that a file in shared memory has its buffer's bytes allocated (O12). A
/// read-only mapping of the received file (same device and inode) already in this process is
/// reused.
///
/// # Errors
/// [`Error::ModeNotAllowed`] (O5), [`Error::UnexpectedFd`] for a descriptor whose source is a
/// path (the fd is closed; use [`open`] or [`open_source`]), [`Error::NotRegularFile`] (O6),
/// [`Error::LengthMismatch`] (O7), [`Error::IdentityMismatch`] (O8), [`Error::NotSealed`]
/// (O9, unless [`OpenOptions::allow_unsealed_fds`]), [`Error::Sparse`] (O12),
/// [`Error::SegmentBusy`] (retryable) and
/// [`Error::StaleSegment`] (O10) for a segment, [`Error::Map`] (O11), and [`Error::Io`] when
/// `fstat` or `flock` fails.
pub fn open_fd(desc: &ValidDescriptor, fd: OwnedFd, opts: &OpenOptions) -> Result<Mapping> {
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

/// Opens a descriptor by whatever came with it: `fd` for an fd descriptor ([`open_fd`]),
/// nothing for a path descriptor ([`open`]). The one dispatch every receiver uses.
///
/// # Errors
/// [`Error::MissingFd`] for an fd descriptor without an fd, [`Error::UnexpectedFd`] for a
/// path descriptor with one (which is closed); otherwise those of [`open`] and [`open_fd`].
pub fn open_source(
    desc: &ValidDescriptor,
    fd: Option<OwnedFd>,
    opts: &OpenOptions,
) -> Result<Mapping> {
    match (desc.source(), fd) {
        (Source::Fd, Some(fd)) => open_fd(desc, fd, opts),
        (Source::Fd, None) => Err(Error::MissingFd),
        (Source::Path, None) => open(desc, opts),
        (Source::Path, Some(_)) => Err(Error::UnexpectedFd),
    }
}

/// How long a reader waits for a segment's producer to finish recycling it (it holds the
/// exclusive lock only while it rewrites the header).
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// SPEC.md §7 and O10: the shared lock that keeps a segment from being deleted or recycled
/// while this process maps it, then the header check. Files that are not segments
/// (generation 0) get the lock if it is free and are never waited for.
fn lock_and_check_header(file: &File, desc: &ValidDescriptor) -> Result<Option<([u8; 16], u64)>> {
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
fn grant(desc: &ValidDescriptor, opts: &OpenOptions) -> Result<Mode> {
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
fn check_seals(file: &File, opts: &OpenOptions) -> Result<()> {
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
fn check_allocated(file: &File, st: &Stat, desc: &ValidDescriptor) -> Result<()> {
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
    accept: impl Fn(&SharedRegion) -> bool,
) -> Result<Option<Mapping>> {
    if !opts.reuse || mode != Mode::ReadOnly || desc.buffer_len() == 0 {
        return Ok(None);
    }
    let Some((region, start)) =
        SharedRegion::find(key, desc.buffer_offset(), desc.buffer_len(), accept)
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
    Ok(Some(Mapping::shared(desc.clone(), region, start)))
}

/// O11: maps the enclosing buffer of the checked `file`.
fn map(
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
            let region = SharedRegion::new(map, file, origin, key, offset, segment);
            if opts.reuse {
                region.publish();
            }
            Ok(Mapping::shared(desc.clone(), region, 0))
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
