//! Turning a descriptor's path into an open file under the trust policy (SPEC.md §6, O1–O4):
//! absolute and normalized, below an allowed root, no symbolic link anywhere below it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Mode as FsMode, OFlags, ResolveFlags, fstat, openat, openat2, statat,
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
    match open_in(root, dir.as_fd(), rel, write, use_openat2, path) {
        // The cached root folder may have been removed and made again: retry from a fresh one.
        Err(Error::Open { source, .. })
            if cached && source.kind() == std::io::ErrorKind::NotFound =>
        {
            let (dir, _) = root.handle(true).map_err(open_err(path))?;
            open_in(root, dir.as_fd(), rel, write, use_openat2, path)
        }
        other => other,
    }
}

/// Opens `rel` below the root's fd `dir`; below a default root, through the private folder
/// its first component must be.
fn open_in(
    root: &Root,
    dir: BorrowedFd<'_>,
    rel: &Path,
    write: bool,
    use_openat2: bool,
    path: &Path,
) -> Result<OwnedFd> {
    if root.prefix.is_none() {
        return open_from(dir, rel, write, use_openat2, path);
    }
    let mut comps = rel.iter();
    let first = comps.next().unwrap_or_default();
    let rest = comps.as_path();
    let untrusted = |reason: String| Error::UntrustedFolder {
        path: path.to_path_buf(),
        folder: root.dir.join(first),
        reason,
    };
    if rest.as_os_str().is_empty() {
        return Err(untrusted(
            "the path names the folder itself, not a file in it".into(),
        ));
    }
    let folder = open_private_folder(dir, first, &untrusted, path)?;
    open_from(folder.as_fd(), rest, write, use_openat2, path)
}

/// A default root's `stridemap-*` entry, opened without following a link and checked on the
/// opened fd: a folder owned by this process's effective uid, mode 0700 (SPEC.md §6).
pub(crate) fn open_private_folder(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    untrusted: &dyn Fn(String) -> Error,
    path: &Path,
) -> Result<OwnedFd> {
    let fd = match openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        FsMode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return Err(untrusted(
                "it is not a folder (a plain file or a symbolic link)".into(),
            ));
        }
        Err(e) => return Err(open_err(path)(e)),
    };
    let st = fstat(&fd).map_err(open_err(path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(untrusted("it is not a folder".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(untrusted(format!(
            "it belongs to uid {}, not to this user (uid {me})",
            st.st_uid
        )));
    }
    let perms = st.st_mode & 0o7777;
    if perms != 0o700 {
        return Err(untrusted(format!("its mode is {perms:04o}, not 0700")));
    }
    Ok(fd)
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
    use crate::options::SEGMENT_FOLDER_PREFIX;
    use std::os::unix::fs::PermissionsExt;

    /// Options whose only root is `base` as a default root (stridemap-* folders in it).
    fn default_root(base: &Path) -> OpenOptions {
        let mut o = OpenOptions::new();
        o.roots = vec![Root::new(base, Some(SEGMENT_FOLDER_PREFIX))];
        o
    }

    fn desc_of(path: &Path) -> stridemap_core::ValidDescriptor {
        let len = std::fs::metadata(path).unwrap().len();
        stridemap_core::Builder::new(stridemap_core::DType::parse("|u1").unwrap(), &[len])
            .buffer(0, len)
            .file_len(len)
            .path(path.to_str().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn default_roots_take_only_private_folders_of_this_user() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let opts = default_root(base);
        let folder = |name: &str, mode: u32| {
            let d = base.join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::write(d.join("x"), b"abc").unwrap();
            d.join("x")
        };
        let ok = folder("stridemap-ok", 0o700);
        assert_eq!(
            opts.open(&desc_of(&ok))
                .unwrap()
                .copy_array()
                .unwrap()
                .bytes(),
            b"abc"
        );
        // Open to the group: not private.
        let wide = folder("stridemap-wide", 0o755);
        let e = opts.open(&desc_of(&wide)).unwrap_err();
        assert!(matches!(e, Error::UntrustedFolder { .. }), "{e}");
        assert_eq!(e.rule(), Some("O2"));
        assert!(e.to_string().contains("0755"), "{e}");
        // Another user's folder (needs root to plant; says so otherwise).
        let theirs = folder("stridemap-theirs", 0o700);
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(theirs.parent().unwrap(), Some(65534), None).unwrap();
            let e = opts.open(&desc_of(&theirs)).unwrap_err();
            assert!(e.to_string().contains("uid 65534"), "{e}");
        } else {
            eprintln!("note: not root; the foreign-uid folder case is not exercised");
        }
        // A plain file and a symbolic link named like a folder.
        std::fs::write(base.join("stridemap-file"), b"abc").unwrap();
        let e = opts
            .open(&desc_of(&base.join("stridemap-file")))
            .unwrap_err();
        assert!(matches!(e, Error::UntrustedFolder { .. }), "{e}");
        std::os::unix::fs::symlink(base.join("stridemap-ok"), base.join("stridemap-link")).unwrap();
        let mut d = desc_of(&ok);
        let linked = base.join("stridemap-link/x");
        d = stridemap_core::Builder::new(d.dtype(), d.shape())
            .buffer(0, 3)
            .file_len(3)
            .path(linked.to_str().unwrap())
            .build()
            .unwrap();
        let e = opts.clone().reuse_mappings(false).open(&d).unwrap_err();
        assert!(matches!(e, Error::UntrustedFolder { .. }), "{e}");
    }

    #[test]
    fn a_root_given_through_a_symbolic_link_holds_paths_spelled_either_way() {
        let real = tempfile::tempdir().unwrap();
        let real = real.path().canonicalize().unwrap();
        std::fs::write(real.join("x"), b"abc").unwrap();
        let links = tempfile::tempdir().unwrap();
        let link = links.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let opts = OpenOptions::new().only_roots([&link]).reuse_mappings(false);
        for p in [real.join("x"), link.join("x")] {
            let m = opts.open(&desc_of(&p)).unwrap();
            assert_eq!(m.copy_array().unwrap().bytes(), b"abc", "{}", p.display());
        }
    }

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
