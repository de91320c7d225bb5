//! Turning a descriptor's path into an open file under the trust policy (SPEC.md §6, O1–O4):
//! absolute and normalized, below an allowed root, no symbolic link anywhere below it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Mode as FsMode, OFlags, ResolveFlags, openat, openat2, statat,
};
use rustix::io::Errno;

use crate::options::Root;
use crate::{Error, OpenOptions, Result};

/// O1: absolute, and no `.`, `..` or empty components (checked on the raw bytes:
/// `Path::components` would silently normalize `//` and `.`).
pub(crate) fn check_form(path: &Path) -> Result<()> {
    let bad = |reason| {
        Err(Error::BadPath {
            path: path.to_path_buf(),
            reason,
        })
    };
    let bytes = path.as_os_str().as_bytes();
    let Some(rest) = bytes.strip_prefix(b"/") else {
        return bad("it is relative");
    };
    for comp in rest.split(|&b| b == b'/') {
        match comp {
            b"" => return bad("it has an empty component (// or a trailing /)"),
            b"." => return bad("it has a . component"),
            b".." => return bad("it has a .. component"),
            _ => {}
        }
    }
    Ok(())
}

/// O2: the deepest allowed root `path` lies below, and the path relative to it.
pub(crate) fn find_root<'o, 'p>(
    path: &'p Path,
    opts: &'o OpenOptions,
) -> Result<(&'o Root, &'p Path)> {
    opts.roots
        .iter()
        .filter_map(|root| root.relative(path).map(|rel| (root, rel)))
        .min_by_key(|(_, rel)| rel.components().count())
        .ok_or_else(|| Error::OutsideRoots {
            path: path.to_path_buf(),
            roots: opts.roots(),
        })
}

/// O3 and O4: opens `rel` below `root` without following any symbolic link, never creating
/// or truncating; read-write only when `write`.
pub(crate) fn open_beneath(
    root: &Root,
    rel: &Path,
    write: bool,
    use_openat2: bool,
    path: &Path,
) -> Result<OwnedFd> {
    let (dir, cached) = root.handle(false).map_err(open_err(path))?;
    match open_from(dir.as_fd(), rel, write, use_openat2, path) {
        // The cached root folder may have been removed and made again: retry from a fresh one.
        Err(Error::Open { source, .. })
            if cached && source.kind() == std::io::ErrorKind::NotFound =>
        {
            let (dir, _) = root.handle(true).map_err(open_err(path))?;
            open_from(dir.as_fd(), rel, write, use_openat2, path)
        }
        other => other,
    }
}

fn open_err(path: &Path) -> impl Fn(Errno) -> Error + '_ {
    move |e| Error::Open {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn open_from(
    dir: BorrowedFd<'_>,
    rel: &Path,
    write: bool,
    use_openat2: bool,
    path: &Path,
) -> Result<OwnedFd> {
    let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
    // O_NONBLOCK: opening a FIFO must not block before O6 refuses it.
    let flags = access | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
    if use_openat2 {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match openat2(dir, rel, flags, FsMode::empty(), resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::LOOP | Errno::XDEV) => {
                return Err(Error::Symlink {
                    path: path.to_path_buf(),
                });
            }
            // Kernels before 5.6 (or seccomp filters) lack openat2: walk instead.
            Err(Errno::NOSYS | Errno::PERM) => {}
            Err(e) => return Err(open_err(path)(e)),
        }
    }
    walk(dir, rel, flags, path)
}

/// The portable walk: each directory opened with `O_NOFOLLOW | O_DIRECTORY` from the last.
fn walk(root: BorrowedFd<'_>, rel: &Path, flags: OFlags, path: &Path) -> Result<OwnedFd> {
    let mut below: Option<OwnedFd> = None;
    let symlink = || Error::Symlink {
        path: path.to_path_buf(),
    };
    let open_err = |e: Errno| Error::Open {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let comps: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let Some((last, dirs)) = comps.split_last() else {
        return Err(Error::BadPath {
            path: path.to_path_buf(),
            reason: "it names a root folder itself",
        });
    };
    for comp in dirs {
        let dir = below.as_ref().map_or(root, |fd| fd.as_fd());
        let next = openat(
            dir,
            *comp,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            FsMode::empty(),
        );
        below = match next {
            Ok(fd) => Some(fd),
            Err(Errno::NOTDIR | Errno::LOOP) => {
                // Either a symlink (O_NOFOLLOW) or a plain file in the middle of the path.
                return match statat(dir, *comp, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        Err(symlink())
                    }
                    _ => Err(open_err(Errno::NOTDIR)),
                };
            }
            Err(e) => return Err(open_err(e)),
        };
    }
    let dir = below.as_ref().map_or(root, |fd| fd.as_fd());
    match openat(dir, *last, flags, FsMode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP) => Err(symlink()),
        Err(e) => Err(open_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_forms() {
        for ok in ["/a", "/dev/shm/stridemap-1/seg", "/a/b.c/..d/e.."] {
            assert!(check_form(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "a/b", "", "/a//b", "/a/./b", "/a/../b", "/a/", "/..", "/.", "//a",
        ] {
            assert!(
                matches!(check_form(Path::new(bad)), Err(Error::BadPath { .. })),
                "{bad}"
            );
        }
    }
}
