//! The admission check (SPEC.md §7, rule 6): before a segment of shared memory is made or grown,
//! what it needs against what is there, so that a request the machine cannot hold is refused
//! with [`Error::NoSpace`] before any memory is touched, instead of filling RAM until the OOM
//! killer picks a process.
//!
//! A memfd and a tmpfs file are memory that nothing limits but the machine: the kernel's shmem
//! mount has no size, a default `/dev/shm` is as big as RAM, and a container's pages count
//! against its cgroup. The limits weighed are `MemAvailable` (`/proc/meminfo`) and each memory
//! cgroup limit on this process, v2 (`memory.max - memory.current`) and v1
//! (`memory.limit_in_bytes - memory.usage_in_bytes`), of its cgroup and every ancestor (from
//! `/proc/self/cgroup` and the cgroup mounts of `/proc/self/mountinfo`). Below each, a margin
//! is kept free: 64 MiB and 1/32 of the limit's size (`MemTotal`, or the cgroup's limit).
//! Hugetlb pages are reserved apart from the rest of memory and are not weighed here (a
//! hugetlb map that finds too few fails cleanly). Python's `stridemap.segments.admit` makes
//! the same check.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A cgroup v1 "no limit" is `PAGE_COUNTER_MAX` pages, just below 2^63.
const UNLIMITED: u64 = 1 << 62;
/// Requests of this size or more always read the limits anew.
const FRESH_FROM: u64 = 16 << 20;
/// A smaller request is weighed against a reading at most this old, less what was admitted
/// since (reading the limits costs 50-500 µs: `/proc/meminfo` is made anew on each read).
const STALE_AFTER: Duration = Duration::from_millis(50);

/// One limit on new shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    /// What to look at or raise: `MemAvailable`, or a cgroup's limit file.
    pub name: String,
    /// Bytes available under it now.
    pub available: u64,
    /// Its size, from which the margin is taken.
    pub size: u64,
}

impl Limit {
    /// What the check keeps free below this limit: 64 MiB and 1/32 of its size.
    pub(crate) fn margin(&self) -> u64 {
        (64 << 20) + self.size / 32
    }
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// `MemAvailable` and `MemTotal` of `/proc/meminfo`, in bytes.
fn meminfo() -> Option<Limit> {
    let text = read(Path::new("/proc/meminfo"))?;
    let field = |key: &[u8]| {
        text.split(|&c| c == b'\n').find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(b":")?;
            let kib = rest
                .split(|c| c.is_ascii_whitespace())
                .find(|w| !w.is_empty())?;
            parse_u64(kib)?.checked_mul(1024)
        })
    };
    Some(Limit {
        name: "MemAvailable".into(),
        available: field(b"MemAvailable")?,
        size: field(b"MemTotal").unwrap_or(0),
    })
}

/// mountinfo's octal escapes (`\040` for a space), on bytes.
fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match (b[i], code) {
            (b'\\', Some(d)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, &c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `(version, directory)` of each memory cgroup this process is in, from its own up to the
/// root of the mount (the limits of ancestors apply too).
fn cgroup_dirs() -> Vec<(u8, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let mountinfo = read(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    let mut mounts = Vec::new(); // (version, root in the hierarchy, mount point)
    for line in mountinfo.split(|&c| c == b'\n') {
        let Some(sep) = line.windows(3).position(|w| w == b" - ") else {
            continue;
        };
        let fields: Vec<&[u8]> = line[..sep].split(|&c| c == b' ').collect();
        let tail: Vec<&[u8]> = line[sep + 3..].split(|&c| c == b' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let version = match *fstype {
            b"cgroup2" => 2,
            b"cgroup"
                if tail
                    .get(2)
                    .is_some_and(|o| o.split(|&c| c == b',').any(|o| o == b"memory")) =>
            {
                1
            }
            _ => continue,
        };
        mounts.push((version, unescape(root), unescape(point)));
    }
    let mut dirs = Vec::new();
    let cgroup = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    for line in cgroup.split(|&c| c == b'\n') {
        let mut parts = line.splitn(3, |&c| c == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let version = if id == b"0" && controllers.is_empty() {
            2
        } else if controllers.split(|&c| c == b',').any(|c| c == b"memory") {
            1
        } else {
            continue;
        };
        for (v, root, point) in &mounts {
            let root = root.strip_suffix(b"/").unwrap_or(root);
            let Some(rel) = path.strip_prefix(root) else {
                continue;
            };
            if *v != version || !(rel.is_empty() || rel.starts_with(b"/")) {
                continue;
            }
            let parts: Vec<&[u8]> = rel
                .split(|&c| c == b'/')
                .filter(|p| !p.is_empty())
                .collect();
            for k in (0..=parts.len()).rev() {
                let mut d = PathBuf::from(std::ffi::OsStr::from_bytes(point));
                for p in &parts[..k] {
                    d.push(std::ffi::OsStr::from_bytes(p));
                }
                dirs.push((version, d));
            }
            break;
        }
    }
    dirs
}

/// The limits of the memory cgroups in `dirs` that have one.
fn cgroup_limits(dirs: &[(u8, PathBuf)]) -> Vec<Limit> {
    dirs.iter()
        .filter_map(|(version, d)| {
            let (max, used) = if *version == 2 {
                ("memory.max", "memory.current")
            } else {
                ("memory.limit_in_bytes", "memory.usage_in_bytes")
            };
            // "max", or a missing file: no limit there.
            let limit = parse_u64(&read(&d.join(max))?)?;
            let usage = parse_u64(&read(&d.join(used))?)?;
            (limit < UNLIMITED).then(|| Limit {
                name: format!("cgroup v{version} {}", d.join(max).display()),
                available: limit.saturating_sub(usage),
                size: limit,
            })
        })
        .collect()
}

struct Reading {
    pid: u32,
    at: Instant,
    limits: Vec<Limit>,
    /// Bytes admitted since the reading.
    taken: u64,
}

/// The cgroup directories (found once per process) and the last reading.
struct State {
    dirs: Option<(u32, Vec<(u8, PathBuf)>)>,
    reading: Option<Reading>,
}

static STATE: Mutex<State> = Mutex::new(State {
    dirs: None,
    reading: None,
});

/// Every limit on new shared memory for this process now: `MemAvailable` first, then its
/// memory cgroups' (innermost first).
pub(crate) fn limits() -> Vec<Limit> {
    let pid = std::process::id();
    let dirs = match STATE.try_lock() {
        Ok(mut st) => {
            if st.dirs.as_ref().is_none_or(|(p, _)| *p != pid) {
                st.dirs = Some((pid, cgroup_dirs()));
            }
            st.dirs.as_ref().map(|(_, d)| d.clone()).unwrap_or_default()
        }
        // Held by another thread (or by one that was running at a fork): found anew.
        Err(_) => cgroup_dirs(),
    };
    meminfo().into_iter().chain(cgroup_limits(&dirs)).collect()
}

/// Refuses with [`Error::NoSpace`] a new segment of `needed` bytes of shared memory (a memfd,
/// or a file in the tmpfs `folder`) that any limit cannot hold with its margin.
///
/// # Errors
/// [`Error::NoSpace`] with `limit` naming the limit that refused it.
pub(crate) fn check(needed: u64, folder: &Path) -> Result<()> {
    let pid = std::process::id();
    let now = Instant::now();
    let fresh = |taken| Reading {
        pid,
        at: now,
        limits: limits(),
        taken,
    };
    let mut guard = STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let stale = guard.reading.as_ref().is_none_or(|r| {
        needed >= FRESH_FROM || r.pid != pid || now.saturating_duration_since(r.at) > STALE_AFTER
    });
    if stale {
        drop(guard);
        let r = fresh(0);
        guard = STATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.reading = Some(r);
    }
    let Some(r) = guard.reading.as_mut() else {
        return Ok(());
    };
    for lim in &r.limits {
        let available = lim.available.saturating_sub(r.taken);
        if needed.saturating_add(lim.margin()) > available {
            return Err(Error::NoSpace {
                folder: folder.to_path_buf(),
                needed,
                available,
                limit: Some(format!(
                    "{} (of which {} are kept free: 64 MiB and 1/32 of the limit)",
                    lim.name,
                    lim.margin()
                )),
            });
        }
    }
    r.taken = r.taken.saturating_add(needed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_fits_and_the_limits_start_with_mem_available() {
        check(4096, Path::new("memfd")).unwrap();
        assert_eq!(limits()[0].name, "MemAvailable");
    }

    #[test]
    fn a_request_beyond_memory_is_refused_naming_the_limit() {
        let Err(Error::NoSpace {
            needed,
            available,
            limit: Some(limit),
            ..
        }) = check(1 << 50, Path::new("memfd"))
        else {
            panic!("a petabyte was admitted");
        };
        assert_eq!(needed, 1 << 50);
        assert!(
            available < 1 << 50 && limit.starts_with("MemAvailable"),
            "{limit}"
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone_on_bytes() {
        assert_eq!(unescape(b"/a\\040b/\\377"), b"/a b/\xff");
        assert_eq!(unescape(b"\\04"), b"\\04");
    }
}
