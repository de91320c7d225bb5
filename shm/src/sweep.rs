//! The orphan sweep: pool folders whose producer died (`kill -9`) are removed once no live
//! process holds any of their files.
//!
//! Liveness is a lock, not a pid (SPEC.md §7): a live pool holds `LOCK_SH` on its folder's
//! own fd, so a sweep that can lock the folder exclusively knows the pool is gone, in any PID
//! namespace. The sweep works only through directory fds — `openat(O_DIRECTORY |
//! O_NOFOLLOW)`, `fstatat`, `unlinkat` relative to the folder's fd — so a folder swapped for
//! a symbolic link mid-sweep cannot make it delete anything outside the root.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{
    Access, AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, StatxFlags, accessat, flock,
    fstat, openat, statat, statx, unlinkat,
};
use rustix::io::Errno;

use crate::Result;
use crate::temp::parse_folder_name;

/// What a sweep may touch.
///
/// ```
/// let opts = stridemap_shm::SweepOptions::default().dry_run(true);
/// assert!(opts.dry_run && !opts.all_users);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Also sweep folders owned by other users (root only, in practice). Off by default: a
    /// sweep removes only folders owned by the caller's effective uid.
    pub all_users: bool,
}

impl SweepOptions {
    /// Report only.
    pub fn dry_run(mut self, on: bool) -> SweepOptions {
        self.dry_run = on;
        self
    }

    /// Sweep every user's folders, not only the caller's.
    pub fn all_users(mut self, on: bool) -> SweepOptions {
        self.all_users = on;
        self
    }
}

/// Why a dead producer's folder was kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kept {
    /// A live process still maps (holds `LOCK_SH` on) this segment file.
    Mapped(String),
    /// It holds an entry stridemap never makes (a folder, FIFO, symbolic link, socket or
    /// device): left for a human.
    Foreign {
        /// The entry's name.
        name: String,
        /// What it is ("folder", "symbolic link", …).
        kind: &'static str,
    },
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kept::Mapped(name) => write!(f, "owner dead, {name} still mapped by a reader"),
            Kept::Foreign { name, kind } => write!(
                f,
                "owner dead, holds a {kind} ({name}) stridemap did not make; remove it by hand"
            ),
        }
    }
}

/// What a sweep found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Folders removed (or, in a dry run, that would be).
    pub removed: Vec<PathBuf>,
    /// Folders whose owner is alive (it holds the folder's lock).
    pub owner_alive: Vec<PathBuf>,
    /// Folders of a dead owner whose files some live process still maps.
    pub in_use: Vec<PathBuf>,
    /// Folders of a dead owner kept for another reason, and the reason.
    pub kept: Vec<(PathBuf, Kept)>,
    /// Folders owned by another user (swept only with [`SweepOptions::all_users`]).
    pub other_users: Vec<PathBuf>,
    /// Roots, folders or files the sweep could not handle, and why. The sweep goes on after
    /// each; a caller reports them and fails.
    pub failed: Vec<(PathBuf, String)>,
}

impl SweepReport {
    /// Whether every folder the sweep looked at was handled (nothing in `failed`).
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Sweeps `stridemap-<pid>-<start>-<uuid>` folders directly below each of `roots`, owned by
/// the calling user: a folder nobody holds locked (its pool is gone) whose files are all
/// free (each can be locked exclusively) is removed with its files. With `dry_run`,
/// nothing is removed. See [`sweep_with`].
///
/// ```no_run
/// let report = stridemap_shm::sweep(&stridemap_shm::segment_bases(), true)?;
/// for f in &report.removed { println!("would remove {}", f.display()); }
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
///
/// # Errors
/// As [`sweep_with`]: none as a whole today; each root, folder or file that could not be
/// handled is in [`SweepReport::failed`] (check [`SweepReport::succeeded`]).
pub fn sweep(roots: &[PathBuf], dry_run: bool) -> Result<SweepReport> {
    sweep_with(roots, &SweepOptions::default().dry_run(dry_run))
}

/// [`sweep`] with options. Never stops at the first failure: every failure is in
/// [`SweepReport::failed`], and a root that does not exist is skipped.
///
/// ```no_run
/// use stridemap_shm::{SweepOptions, sweep_with};
/// let report = sweep_with(&["/dev/shm".into()], &SweepOptions::default().all_users(true))?;
/// assert!(report.succeeded());
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
///
/// # Errors
/// None as a whole today: a root that cannot be opened or listed, a folder that is alive,
/// not the caller's, not private or not a folder, and a file that cannot be locked or
/// removed are each one entry of [`SweepReport::failed`] (or left alone, as the SPEC §7
/// liveness rules say), and the sweep goes on. The `Result` is there so that a failure of
/// the sweep itself can be reported without a breaking change.
pub fn sweep_with(roots: &[PathBuf], opts: &SweepOptions) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    let me = rustix::process::geteuid().as_raw();
    for root in roots {
        // The root is the caller's configuration: it may be reached through a link.
        let root_fd = match rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                report
                    .failed
                    .push((root.clone(), format!("cannot open: {e}")));
                continue;
            }
        };
        let names = match list(&root_fd) {
            Ok(n) => n,
            Err(e) => {
                report
                    .failed
                    .push((root.clone(), format!("cannot list: {e}")));
                continue;
            }
        };
        for name in names {
            if !name.to_str().is_ok_and(|n| parse_folder_name(n).is_some()) {
                continue;
            }
            let folder = root.join(name.to_string_lossy().as_ref());
            sweep_folder(&root_fd, &name, folder, me, opts, &mut report);
        }
    }
    Ok(report)
}

/// The names in a directory (not `.` and `..`).
fn list(dir: &OwnedFd) -> rustix::io::Result<Vec<CString>> {
    let mut names = Vec::new();
    let mut d = Dir::read_from(dir)?;
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name();
        if !matches!(name.to_bytes(), b"." | b"..") {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "folder",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        _ => "file of unknown type",
    }
}

/// The mount a file is on (`statx` `STATX_MNT_ID`), where the kernel says.
fn mount_id(dir: &OwnedFd, name: &CStr) -> Option<u64> {
    let st = statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID).ok()?;
    (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

/// One candidate folder: opened relative to the root without following a link, checked,
/// locked, emptied and removed — or the reason it was not, in `report`.
fn sweep_folder(
    root: &OwnedFd,
    name: &CStr,
    folder: PathBuf,
    me: u32,
    opts: &SweepOptions,
    report: &mut SweepReport,
) {
    let fd = match openat(
        root,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A plain file or a symbolic link named like a pool folder: not ours to follow.
        Err(Errno::NOTDIR | Errno::LOOP) => return,
        // Gone meanwhile (its owner or another sweep removed it).
        Err(Errno::NOENT) => return,
        Err(e) => {
            report.failed.push((folder, format!("cannot open: {e}")));
            return;
        }
    };
    let st = match fstat(&fd) {
        Ok(st) => st,
        Err(e) => {
            report.failed.push((folder, format!("fstat: {e}")));
            return;
        }
    };
    if st.st_uid != me && !opts.all_users {
        report.other_users.push(folder);
        return;
    }
    match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            report.owner_alive.push(folder);
            return;
        }
        Err(e) => {
            report.failed.push((folder, format!("flock(LOCK_EX): {e}")));
            return;
        }
    }
    // The owner is gone. Removing needs write access to the folder and to the root (a dry
    // run says so too, rather than promising a removal that would fail).
    for (dir, what) in [(&fd, "the folder"), (root, "the root")] {
        if let Err(e) = accessat(
            dir,
            ".",
            Access::WRITE_OK | Access::EXEC_OK,
            AtFlags::EACCESS,
        ) {
            report.failed.push((
                folder,
                format!("cannot remove: {what} is not writable ({e})"),
            ));
            return;
        }
    }
    // Every entry must be a segment file nobody maps.
    let names = match list(&fd) {
        Ok(n) => n,
        Err(e) => {
            report.failed.push((folder, format!("cannot list: {e}")));
            return;
        }
    };
    // First every entry's type, without an fd: a folder holding anything stridemap never
    // makes is left whole.
    let folder_mount = mount_id(root, name);
    let mut files: Vec<(CString, rustix::fs::Stat)> = Vec::with_capacity(names.len());
    for entry in names {
        let shown = entry.to_string_lossy().into_owned();
        let est = match statat(&fd, entry.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                report
                    .failed
                    .push((folder.join(&shown), format!("fstatat: {e}")));
                return;
            }
        };
        let t = FileType::from_raw_mode(est.st_mode);
        if t != FileType::RegularFile {
            let kind = kind_name(t);
            report
                .kept
                .push((folder, Kept::Foreign { name: shown, kind }));
            return;
        }
        if folder_mount.is_some() && mount_id(&fd, entry.as_c_str()) != folder_mount {
            report.failed.push((
                folder.join(&shown),
                "a mount point: cannot be removed (unmount it first)".into(),
            ));
            return;
        }
        files.push((entry, est));
    }
    // Then the files in batches (SPEC.md §7.5), so that the sweep needs at most
    // `SWEEP_BATCH` more fds whatever the folder holds: each batch is locked, unlinked while
    // its locks are held, and closed.
    for batch in files.chunks(SWEEP_BATCH) {
        if !lock_and_unlink(&fd, batch, &folder, opts.dry_run, report) {
            return;
        }
    }
    if opts.dry_run {
        report.removed.push(folder);
        return;
    }
    // Remove the name only if it still is the folder just emptied.
    match statat(root, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => {}
        _ => {
            report.removed.push(folder);
            return;
        }
    }
    match unlinkat(root, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => {
            log::debug!("stridemap: swept orphaned folder {}", folder.display());
            report.removed.push(folder);
        }
        Err(e) => report.failed.push((folder, format!("cannot remove: {e}"))),
    }
}

/// How many files of a folder a sweep holds open (and locked) at once.
const SWEEP_BATCH: usize = 32;

/// Opens and locks `LOCK_EX | LOCK_NB` each file of `batch` (checked by `fstatat` as
/// `(name, stat)`), then, unless `dry_run`, unlinks them while the locks are held; the fds
/// close on return. False (with the reason in `report`) when the folder must be kept: a file
/// is mapped by a reader, was replaced, or could not be opened, locked or removed.
fn lock_and_unlink(
    fd: &OwnedFd,
    batch: &[(CString, rustix::fs::Stat)],
    folder: &std::path::Path,
    dry_run: bool,
    report: &mut SweepReport,
) -> bool {
    let mut locked: Vec<(&CStr, OwnedFd)> = Vec::with_capacity(batch.len());
    for (entry, est) in batch {
        let shown = entry.to_string_lossy().into_owned();
        let file = match openat(
            fd,
            entry.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(f) => f,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                report
                    .failed
                    .push((folder.join(&shown), format!("cannot open: {e}")));
                return false;
            }
        };
        // The entry may have been replaced between fstatat and open: lock what was checked.
        match fstat(&file) {
            Ok(fs) if (fs.st_dev, fs.st_ino) == (est.st_dev, est.st_ino) => {}
            _ => {
                report
                    .failed
                    .push((folder.join(&shown), "replaced while being checked".into()));
                return false;
            }
        }
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => locked.push((entry.as_c_str(), file)),
            Err(Errno::WOULDBLOCK) => {
                report.in_use.push(folder.to_path_buf());
                report
                    .kept
                    .push((folder.to_path_buf(), Kept::Mapped(shown)));
                return false;
            }
            Err(e) => {
                report
                    .failed
                    .push((folder.join(&shown), format!("flock(LOCK_EX): {e}")));
                return false;
            }
        }
    }
    if dry_run {
        return true;
    }
    // Unlink while holding the locks, so no reader can start on a file being removed.
    for (entry, _file) in &locked {
        if let Err(e) = unlinkat(fd, *entry, AtFlags::empty())
            && e != Errno::NOENT
        {
            let shown = entry.to_string_lossy().into_owned();
            report
                .failed
                .push((folder.join(shown), format!("cannot remove: {e}")));
            return false;
        }
    }
    true
}

/// Whether `fd` is a directory fd (for tests).
#[cfg(test)]
fn is_dir(fd: impl std::os::fd::AsFd) -> bool {
    fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::create_pool_folder;
    use std::path::Path;

    fn orphan(root: &Path, name: &str) -> PathBuf {
        let p = root.join(name);
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("seg-0"), b"x").unwrap();
        p
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_locked_folder_is_alive_whatever_its_pid_and_an_unlocked_one_is_swept() {
        let root = tempfile::tempdir().unwrap();
        let live = create_pool_folder(root.path()).unwrap();
        std::fs::write(live.path.join("seg-1"), b"x").unwrap();
        // pid 1 with start time 0: the old pid test called this one dead.
        let dead = orphan(root.path(), &format!("stridemap-1-0-{ID}"));
        let r = sweep(&[root.path().to_path_buf()], false).unwrap();
        assert_eq!(r.owner_alive, std::slice::from_ref(&live.path));
        assert_eq!(r.removed, std::slice::from_ref(&dead));
        assert!(live.path.join("seg-1").exists() && !dead.exists());
        assert!(is_dir(&live.fd));
    }

    #[test]
    fn foreign_entries_keep_the_folder_with_their_kind_and_the_sweep_goes_on() {
        let root = tempfile::tempdir().unwrap();
        let a = orphan(root.path(), &format!("stridemap-2-0-{ID}"));
        std::fs::create_dir(a.join("sub")).unwrap();
        let b = orphan(root.path(), &format!("stridemap-3-0-{ID}"));
        std::os::unix::fs::symlink("/etc/passwd", b.join("link")).unwrap();
        let c = orphan(root.path(), &format!("stridemap-4-0-{ID}"));
        let r = sweep(&[root.path().to_path_buf()], true).unwrap();
        assert_eq!(r.removed, std::slice::from_ref(&c), "{r:?}");
        assert!(r.kept.contains(&(
            a.clone(),
            Kept::Foreign {
                name: "sub".into(),
                kind: "folder"
            }
        )));
        assert!(r.kept.contains(&(
            b.clone(),
            Kept::Foreign {
                name: "link".into(),
                kind: "symbolic link"
            }
        )));
        assert!(c.exists(), "a dry run removes nothing");
        let r = sweep(&[root.path().to_path_buf()], false).unwrap();
        assert_eq!(r.removed, std::slice::from_ref(&c));
        assert!(!c.exists() && a.exists() && b.exists());
        assert!(r.succeeded());
    }

    #[test]
    fn a_mapped_segment_keeps_its_folder() {
        let root = tempfile::tempdir().unwrap();
        let a = orphan(root.path(), &format!("stridemap-5-0-{ID}"));
        let reader = std::fs::File::open(a.join("seg-0")).unwrap();
        flock(&reader, FlockOperation::LockShared).unwrap();
        let r = sweep(&[root.path().to_path_buf()], false).unwrap();
        assert_eq!(r.in_use, std::slice::from_ref(&a));
        assert_eq!(r.kept, [(a.clone(), Kept::Mapped("seg-0".into()))]);
        drop(reader);
        let r = sweep(&[root.path().to_path_buf()], false).unwrap();
        assert_eq!(r.removed, std::slice::from_ref(&a));
    }
}
