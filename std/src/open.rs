//! Opening a descriptor: the checks of SPEC.md §6, then the map.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, SealFlags, Stat, fcntl_get_seals, fstat};
use rustix::io::Errno;
use stridemap_core::{Mode, Source, ValidDescriptor};

use crate::mapping::SharedRegion;
use crate::resolve::{check_form, find_root, open_beneath};
use crate::{Error, Mapping, OpenOptions, Result, sys};

/// Opens a descriptor whose source is a path, under the trust policy of `opts`, and maps its
/// enclosing buffer.
///
/// The checks, in order: the mode asked for is allowed (O5), the path is absolute and
/// normalized (O1) and below an allowed root (O2), no component is a symlink (O3); the file
/// is opened read-only unless `r+` was granted, never created or truncated (O4); it is a
/// regular file (O6) exactly as long as described (O7) with the described identity (O8);
/// then the buffer is mapped (O11). A read-only mapping of a region already mapped in this
/// process reuses that map after re-checking the file with `fstat`.
///
/// ```no_run
/// use stridemap::{OpenOptions, open};
/// use stridemap_core::decode;
/// # let bytes = [0u8; 1024];
/// let desc = decode(&bytes)?;
/// let m = open(&desc, &OpenOptions::new().allow_root("/data"))?;
/// println!("{} elements", m.view::<f32>()?.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open(desc: &ValidDescriptor, opts: &OpenOptions) -> Result<Mapping> {
    let mode = grant(desc, opts)?;
    let Some(path) = desc.path().filter(|_| desc.source() == Source::Path) else {
        return Err(Error::MissingFd);
    };
    let path = Path::new(path);
    check_form(path)?;
    let (root, rel) = find_root(path, opts)?;
    if let Some(m) = reuse(desc, mode, opts)? {
        return Ok(m);
    }
    let fd = open_beneath(root, rel, mode == Mode::ReadWrite, opts.use_openat2, path)?;
    let file = File::from(fd);
    let st = check_file(&file, desc)?;
    map(desc, mode, file, &st, opts)
}

/// Opens a descriptor whose source is a passed file descriptor (received with SCM_RIGHTS),
/// and maps its enclosing buffer. The fd is consumed: kept while a writable mapping needs it,
/// closed once a read-only map no longer does.
///
/// Checks, in order: mode (O5), regular file (O6), length (O7), identity (O8), and — unless
/// [`OpenOptions::allow_unsealed_fds`] — that the file is sealed against shrinking (O9).
pub fn open_fd(desc: &ValidDescriptor, fd: OwnedFd, opts: &OpenOptions) -> Result<Mapping> {
    let mode = grant(desc, opts)?;
    if desc.source() != Source::Fd {
        return Err(Error::MissingFd);
    }
    let file = File::from(fd);
    let st = check_file(&file, desc)?;
    check_seals(&file, opts)?;
    if let Some(m) = reuse_region(desc, mode, opts, (st.st_dev, st.st_ino))? {
        return Ok(m);
    }
    map(desc, mode, file, &st, opts)
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
        Err(Errno::INVAL) => Err(Error::NotSealed { seals: None }),
        Err(e) => Err(Error::io("F_GET_SEALS", e.into())),
    }
}

/// A mapping that reuses a live read-only region of the described file, found by the
/// identity the descriptor records, after re-checking the file.
fn reuse(desc: &ValidDescriptor, mode: Mode, opts: &OpenOptions) -> Result<Option<Mapping>> {
    match desc.identity() {
        Some(key) => reuse_region(desc, mode, opts, key),
        None => Ok(None),
    }
}

fn reuse_region(
    desc: &ValidDescriptor,
    mode: Mode,
    opts: &OpenOptions,
    key: (u64, u64),
) -> Result<Option<Mapping>> {
    if !opts.reuse || mode != Mode::ReadOnly || desc.buffer_len() == 0 {
        return Ok(None);
    }
    let Some((region, start)) = SharedRegion::find(key, desc.buffer_offset(), desc.buffer_len())
    else {
        return Ok(None);
    };
    check_file(region.file(), desc)?;
    Ok(Some(Mapping::shared(desc.clone(), region, start)))
}

/// O11: maps the enclosing buffer of the checked `file`.
fn map(
    desc: &ValidDescriptor,
    mode: Mode,
    file: File,
    st: &Stat,
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
            let region = SharedRegion::new(map, file, (st.st_dev, st.st_ino), offset);
            if opts.reuse {
                region.publish();
            }
            Ok(Mapping::shared(desc.clone(), region, 0))
        }
        Mode::ReadWrite => {
            let map = sys::map_write(&file, offset, len).map_err(map_err)?;
            Ok(Mapping::own(desc.clone(), mode, map, file))
        }
        Mode::CopyOnWrite => {
            let map = sys::map_private(&file, offset, len).map_err(map_err)?;
            Ok(Mapping::own(desc.clone(), mode, map, file))
        }
    }
}
