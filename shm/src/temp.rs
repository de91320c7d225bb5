//! Where segments live: the temp-root policy, pool folder names, and the pool folder itself,
//! created, locked (the lock is what says the pool is alive, SPEC.md §7) and removed through
//! directory fds.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{
    Access, AtFlags, FileType, FlockOperation, Mode, OFlags, access, fchmod, flock, fstat, mkdirat,
    openat, statat, statvfs, unlinkat,
};
use rustix::io::Errno;
use stridemap::__producer_policy::{SEGMENT_FOLDER_PREFIX, TEMP_FOLDER_ENV};

use crate::{Error, Result};

/// Free bytes in the filesystem holding `dir`, and its size.
pub(crate) fn space(dir: &Path) -> Result<(u64, u64)> {
    let st = statvfs(dir).map_err(|e| Error::from_io("statvfs", dir, e.into()))?;
    let unit = st.f_frsize.max(1);
    if st.f_blocks == 0 {
        // No limit reported (hugetlbfs without size=): the kernel's own checks decide.
        return Ok((u64::MAX, u64::MAX));
    }
    Ok((
        st.f_bavail.saturating_mul(unit),
        st.f_blocks.saturating_mul(unit),
    ))
}

/// Room kept free on a shared temp folder beyond the segment itself: 4 MiB and 1% of its size.
fn margin(total: u64) -> u64 {
    (4 << 20) + total / 100
}

/// The free space of `dir`'s filesystem less the margin stridemap leaves there when it
/// chooses a temp root (4 MiB and 1% of the filesystem's size): what a tool may fill without
/// leaving the filesystem full for everyone else. `u64::MAX` where no limit is reported.
///
/// ```
/// let spare = stridemap_shm::spare_space(&std::env::temp_dir())?;
/// println!("{spare} bytes may be written there");
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] when `statvfs` fails.
pub fn spare_space(dir: &Path) -> Result<u64> {
    let (free, total) = space(dir)?;
    Ok(free.saturating_sub(margin(total)))
}

/// The folder a segment of `needed` bytes goes to, joblib's policy with the space check done
/// against this request: an explicit folder (configuration, then `$STRIDEMAP_TEMP_FOLDER`) if
/// it has room; else `/dev/shm` when writable with room for the segment plus a margin; else
/// the system temp dir, with a log line saying why.
pub(crate) fn choose_root(explicit: Option<&Path>, needed: u64) -> Result<PathBuf> {
    choose_root_among(explicit, Path::new("/dev/shm"), needed)
}

/// [`choose_root`] with the shared-memory folder given (tests use a tiny tmpfs).
fn choose_root_among(explicit: Option<&Path>, shm: &Path, needed: u64) -> Result<PathBuf> {
    let env = std::env::var_os(TEMP_FOLDER_ENV).map(PathBuf::from);
    if let Some(dir) = explicit.map(Path::to_path_buf).or(env) {
        let (free, _) = space(&dir)?;
        if free < needed {
            return Err(Error::NoSpace {
                folder: dir,
                needed,
                available: free,
                limit: None,
            });
        }
        return Ok(dir);
    }
    let shm_state = if access(shm, Access::WRITE_OK).is_err() {
        Err("not writable".to_string())
    } else {
        match space(shm) {
            Ok((free, total)) if free >= needed.saturating_add(margin(total)) => Ok(()),
            Ok((free, total)) => Err(format!(
                "{} MiB free, {} MiB needed with margin",
                free >> 20,
                needed.saturating_add(margin(total)) >> 20
            )),
            Err(_) => Err("no statvfs".to_string()),
        }
    };
    match shm_state {
        Ok(()) => Ok(shm.to_path_buf()),
        Err(why) => {
            let tmp = std::env::temp_dir();
            let (free, _) = space(&tmp)?;
            if free < needed {
                return Err(Error::NoSpace {
                    folder: tmp,
                    needed,
                    available: free,
                    limit: None,
                });
            }
            log::info!(
                "stridemap: {} {why}; this {} MiB segment goes to {} (set {TEMP_FOLDER_ENV} to choose)",
                shm.display(),
                needed >> 20,
                tmp.display()
            );
            Ok(tmp)
        }
    }
}

/// This process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. There, field 3 (state) is at index 0, so field 22 is at index 19.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// `stridemap-<pid>-<start time>-<uuid>`.
pub(crate) fn folder_name(pid: u32, start: u64) -> String {
    format!(
        "{SEGMENT_FOLDER_PREFIX}{pid}-{start}-{}",
        uuid::Uuid::new_v4().simple()
    )
}

/// The owner (pid, start time) a pool folder's name records.
pub(crate) fn parse_folder_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix(SEGMENT_FOLDER_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((pid, start))
}

/// A pool's folder, open and locked: the producer holds `LOCK_SH` on the folder's own fd for
/// as long as this value lives, which is how a sweep (in any PID namespace) tells a live pool
/// from a dead one (SPEC.md §7). Segment files are created and removed relative to `fd`.
#[derive(Debug)]
pub(crate) struct PoolFolder {
    /// The temp root the folder is in, as the policy chose it.
    pub(crate) root: PathBuf,
    /// `root/name`, for descriptors and messages.
    pub(crate) path: PathBuf,
    /// `stridemap-<pid>-<start>-<uuid>`.
    pub(crate) name: String,
    /// The root, opened once (never a path below it is followed after creation).
    pub(crate) root_fd: OwnedFd,
    /// The folder itself, `O_DIRECTORY | O_NOFOLLOW`, holding `LOCK_SH`.
    pub(crate) fd: OwnedFd,
}

/// How many times a folder swept away between its creation and its lock is made again.
const CREATE_ATTEMPTS: u32 = 4;

/// Creates this pool's folder under `root` (mode 0700, failing if the name exists), opens it
/// and takes the shared lock that marks it alive. A sweep may remove the fresh (empty, not
/// yet locked) folder in the instant between `mkdir` and `flock`: the lock is then checked
/// to be on the folder that still has the name, and the folder made again otherwise. The
/// lock is waited for at most [`LOCK_PATIENCE`]; a folder that stays locked is removed and
/// another made, [`CREATE_ATTEMPTS`] folders in all, then an error: nothing is left behind.
pub(crate) fn create_pool_folder(root: &Path) -> Result<PoolFolder> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let given = root.to_path_buf();
    let root = root
        .canonicalize()
        .map_err(|e| Error::from_io(format!("resolving {}", root.display()), root, e))?;
    let root_fd = rustix::fs::open(
        &root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::from_io(format!("opening {}", root.display()), &root, e.into()))?;
    let (mut last, mut locked_out) = (None, 0u32);
    for _ in 0..CREATE_ATTEMPTS {
        let name = folder_name(pid, start);
        let path = root.join(&name);
        let ctx = |what: &str| format!("{what} {}", path.display());
        mkdirat(&root_fd, name.as_str(), Mode::RWXU)
            .map_err(|e| Error::from_io(ctx("creating"), &path, e.into()))?;
        let fd = match openat(
            &root_fd,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Swept (or replaced) before it could be opened: make another.
            Err(e @ (Errno::NOENT | Errno::NOTDIR | Errno::LOOP)) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(Error::from_io(ctx("opening"), &path, e.into())),
        };
        // A sweep holds its exclusive lock only while it empties a folder: wait a little,
        // not forever (another process of this user may lock every new folder); a folder
        // that stays locked is removed again and another name tried.
        if !lock_shared_within(&fd, LOCK_PATIENCE)
            .map_err(|e| Error::from_io(ctx("locking"), &path, e.into()))?
        {
            drop(fd);
            let _ = unlinkat(&root_fd, name.as_str(), AtFlags::REMOVEDIR);
            locked_out += 1;
            last = Some(Errno::WOULDBLOCK);
            continue;
        }
        let mine = fstat(&fd).map_err(|e| Error::from_io(ctx("fstat"), &path, e.into()))?;
        let named = statat(&root_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW);
        match named {
            Ok(st) if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino) && mine.st_nlink > 0 => {
                // The umask may have taken bits away; the folder is private whatever it is.
                fchmod(&fd, Mode::RWXU)
                    .map_err(|e| Error::from_io(ctx("chmod 0700"), &path, e.into()))?;
                log::debug!("stridemap: created pool folder {}", path.display());
                return Ok(PoolFolder {
                    root: given,
                    path,
                    name,
                    root_fd,
                    fd,
                });
            }
            Ok(_) | Err(Errno::NOENT) => last = Some(Errno::NOENT),
            Err(e) => return Err(Error::from_io(ctx("fstatat"), &path, e.into())),
        }
    }
    let e = last.unwrap_or(Errno::NOENT);
    let why = if locked_out > 0 {
        format!(
            "{locked_out} of {CREATE_ATTEMPTS} new folders stayed locked by another process \
             for {LOCK_PATIENCE:?} (each was removed again)"
        )
    } else {
        format!(
            "it was removed before it could be locked, {CREATE_ATTEMPTS} times; is another \
             process sweeping this folder in a loop?"
        )
    };
    Err(Error::Io {
        context: format!("creating a pool folder in {}: {why}", root.display()),
        source: e.into(),
    })
}

/// How long a new pool folder's shared lock is waited for (a sweep holds the exclusive lock
/// only while it empties a folder).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// `LOCK_SH | LOCK_NB` on `fd`, retried with a growing pause for up to `patience`: whether it
/// was taken.
fn lock_shared_within(fd: &OwnedFd, patience: std::time::Duration) -> rustix::io::Result<bool> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(500);
    loop {
        match flock(fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK | Errno::INTR) if start.elapsed() < patience => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

impl PoolFolder {
    /// Removes the folder and every regular file in it, relative to its fd (a file is
    /// unlinked from this folder even if the folder was renamed). Entries of other types
    /// (nothing stridemap makes) are left, and so is the folder, with a warning.
    pub(crate) fn remove(&self) {
        let mut left = Vec::new();
        match rustix::fs::Dir::read_from(&self.fd) {
            Ok(mut dir) => {
                while let Some(entry) = dir.read() {
                    let Ok(entry) = entry else { break };
                    let name = entry.file_name().to_owned();
                    if matches!(name.to_bytes(), b"." | b"..") {
                        continue;
                    }
                    let regular = statat(&self.fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode).is_file());
                    if !regular {
                        left.push(name.to_string_lossy().into_owned());
                        continue;
                    }
                    if let Err(e) = unlinkat(&self.fd, name.as_c_str(), AtFlags::empty())
                        && e != Errno::NOENT
                    {
                        left.push(format!("{} ({e})", name.to_string_lossy()));
                    }
                }
            }
            Err(e) => left.push(format!("(cannot list: {e})")),
        }
        if !left.is_empty() {
            log::warn!(
                "stridemap: leaving pool folder {}: it holds {} that stridemap did not make \
                 or cannot remove; remove it by hand",
                self.path.display(),
                left.join(", ")
            );
            return;
        }
        // Only the folder this pool made: the name may have been swapped meanwhile.
        let ours = match (
            fstat(&self.fd),
            statat(&self.root_fd, self.name.as_str(), AtFlags::SYMLINK_NOFOLLOW),
        ) {
            (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
            _ => false,
        };
        if !ours {
            return;
        }
        match unlinkat(&self.root_fd, self.name.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) => log::debug!("stridemap: removed pool folder {}", self.path.display()),
            Err(Errno::NOENT) => {}
            Err(e) => log::warn!("stridemap: cannot remove {}: {e}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_round_trip() {
        let name = folder_name(42, 1234);
        assert_eq!(parse_folder_name(&name), Some((42, 1234)));
        for bad in [
            "stridemap-42-1234",
            "stridemap-x-1-0123456789abcdef0123456789abcdef",
            "stridemap-bench-77",
            "other-1-2-0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_folder_name(bad), None, "{bad}");
        }
    }

    /// A small /dev/shm (a real tmpfs, which needs root) is tested across processes:
    /// tests/tests/shm_space.rs, `a_small_dev_shm_sends_big_segments_to_the_temp_dir`.
    #[test]
    fn falls_back_to_the_temp_dir_when_shm_is_missing() {
        if std::env::var_os(TEMP_FOLDER_ENV).is_some() {
            eprintln!(
                "note: NOT RUN: {TEMP_FOLDER_ENV} is set, so nothing falls back; unset it to run"
            );
            return;
        }
        let tmp = std::env::temp_dir();
        let missing = Path::new("/nonexistent/stridemap-shm");
        assert_eq!(choose_root_among(None, missing, 1 << 20).unwrap(), tmp);
    }

    #[test]
    fn the_margin_is_4_mib_and_1_percent_of_the_folder() {
        assert_eq!(margin(0), 4 << 20);
        assert_eq!(margin(800 << 20), (4 << 20) + (8 << 20));
    }

    #[test]
    fn an_explicit_folder_without_room_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = space(dir.path()).unwrap();
        match choose_root_among(Some(dir.path()), Path::new("/dev/shm"), free + (1 << 30)) {
            Err(Error::NoSpace {
                folder,
                needed,
                available,
                limit: None,
            }) => {
                assert_eq!(folder, dir.path());
                assert!(needed > available);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pool_folder_is_private_locked_and_removed_through_its_fd() {
        let dir = tempfile::tempdir().unwrap();
        let f = create_pool_folder(dir.path()).unwrap();
        let st = fstat(&f.fd).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o700);
        assert!(parse_folder_name(&f.name).is_some());
        // Another open file description cannot lock it exclusively while the pool lives.
        let other =
            rustix::fs::open(&f.path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(
            flock(&other, FlockOperation::NonBlockingLockExclusive),
            Err(Errno::WOULDBLOCK)
        );
        std::fs::write(f.path.join("seg-x"), b"x").unwrap();
        f.remove();
        assert!(!f.path.exists());
    }
}
