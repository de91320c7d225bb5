//! Where segments live: the temp-root policy, pool folder names, and telling a live owner
//! from a dead one (pid plus process start time, so a reused pid is not mistaken for it).

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, access, statvfs};
use stridemap::__producer_policy::{SEGMENT_FOLDER_PREFIX, TEMP_FOLDER_ENV};

use crate::{Error, Result};

/// Free bytes in the filesystem holding `dir`, and its size.
pub(crate) fn space(dir: &Path) -> Result<(u64, u64)> {
    let st = statvfs(dir).map_err(|e| Error::from_io("statvfs", dir, e.into()))?;
    let unit = st.f_frsize.max(1);
    Ok((
        st.f_bavail.saturating_mul(unit),
        st.f_blocks.saturating_mul(unit),
    ))
}

/// Room kept free on a shared temp folder beyond the segment itself: 4 MiB and 1% of its size.
fn margin(total: u64) -> u64 {
    (4 << 20) + total / 100
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
            });
        }
        return Ok(dir);
    }
    let shm_state = if access(shm, Access::WRITE_OK).is_err() {
        Err("not writable".to_string())
    } else {
        match space(shm) {
            Ok((free, total)) if free >= needed.saturating_add(margin(total)) => Ok(()),
            Ok((free, _)) => Err(format!(
                "{} MiB free, {} MiB needed with margin",
                free >> 20,
                (needed + margin(free)) >> 20
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

/// Whether the process that created a folder is still the same live process.
pub(crate) fn owner_alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
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

/// Creates this pool's folder under `root`: mode 0700, failing if it exists.
pub(crate) fn create_pool_folder(root: &Path) -> Result<PathBuf> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let root = root
        .canonicalize()
        .map_err(|e| Error::from_io(format!("resolving {}", root.display()), root, e))?;
    let dir = root.join(folder_name(pid, start));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::from_io(format!("creating {}", dir.display()), &dir, e))?;
    log::debug!("stridemap: created pool folder {}", dir.display());
    Ok(dir)
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

    #[test]
    fn falls_back_to_the_temp_dir_when_shm_is_missing_or_small() {
        if std::env::var_os(TEMP_FOLDER_ENV).is_some() {
            return; // the environment decides; nothing to fall back from
        }
        let tmp = std::env::temp_dir();
        let missing = Path::new("/nonexistent/stridemap-shm");
        assert_eq!(choose_root_among(None, missing, 1 << 20).unwrap(), tmp);
        // A tiny tmpfs standing in for /dev/shm (needs mount rights; skipped with a note if not).
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("note: cannot mount a tmpfs here; the small-/dev/shm case is not exercised");
            return;
        }
        let small = choose_root_among(None, dir.path(), 1 << 20);
        let big = choose_root_among(None, dir.path(), 6 << 20);
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        assert_eq!(
            small.unwrap(),
            dir.path(),
            "1 MiB fits an 8 MiB tmpfs with its margin"
        );
        assert_eq!(big.unwrap(), tmp, "6 MiB plus the margin does not");
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
            }) => {
                assert_eq!(folder, dir.path());
                assert!(needed > available);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let pid = std::process::id();
        let start = start_time(pid).unwrap();
        assert!(owner_alive(pid, start));
        assert!(!owner_alive(pid, start + 1));
        assert!(!owner_alive(u32::MAX - 1, start));
    }
}
