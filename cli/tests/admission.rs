//! The admission check through the real binary (SPEC.md §7, rule 6): `stridemap demo --size` beyond
//! what the machine or the process's memory cgroup can hold is refused within a second, exit 2,
//! naming the limit, with nothing allocated.
//!
//! Each run is guarded so that a missing check cannot take the machine: the binary runs with
//! `RLIMIT_FSIZE` of 64 MiB (SIGXFSZ ignored), so an unchecked `fallocate` of a huge memfd fails
//! with EFBIG instead of filling RAM, and the cgroup case runs inside a memory cgroup of 256 MiB
//! made for it (v2 where the memory controller is there, else v1; said and skipped when
//! neither can be made, e.g. not as root).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `stridemap ARGS` under the guard, first joining `cgroup` (its `cgroup.procs`) if given.
fn guarded(args: &str, cgroup: Option<&PathBuf>) -> (Output, Duration) {
    let join = cgroup.map_or_else(String::new, |d| {
        format!("echo $$ > '{}/cgroup.procs' && ", d.display())
    });
    let script = format!(
        "{join}ulimit -f 65536 && trap '' XFSZ && exec '{}' {args}",
        env!("CARGO_BIN_EXE_stridemap")
    );
    let t = Instant::now();
    let out = Command::new("sh")
        .args(["-c", &script])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sh");
    (out, t.elapsed())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_request_beyond_memory_is_refused_naming_mem_available() {
    let (out, took) = guarded("demo --size 1024G", None);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("MemAvailable") && msg.contains("--size"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// A memory cgroup of `limit` bytes below this process's own (removed on drop), or why not.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(limit: u64) -> Result<Cgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let name = format!("stridemap-admission-{}", std::process::id());
        let v2 = PathBuf::from("/sys/fs/cgroup/unified");
        let v2 = if v2.join("cgroup.controllers").exists() {
            v2
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let v2_memory = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (dir, file) = if v2_memory {
            (v2.join(&name), "memory.max")
        } else {
            let path = own
                .lines()
                .find_map(|l| {
                    let mut p = l.splitn(3, ':');
                    let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                    c.split(',')
                        .any(|c| c == "memory")
                        .then(|| path.to_string())
                })
                .ok_or("no memory cgroup (v1 or v2) on this machine")?;
            let base = PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            (base.join(&name), "memory.limit_in_bytes")
        };
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cg = Cgroup(dir);
        std::fs::write(cg.0.join(file), limit.to_string()).map_err(|e| format!("{file}: {e}"))?;
        Ok(cg)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes have exited: an empty cgroup is removed with rmdir.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_request_beyond_the_cgroup_is_refused_naming_it() {
    let cg = match Cgroup::new(256 << 20) {
        Ok(cg) => cg,
        Err(why) => {
            println!("not run: cannot make a memory cgroup here ({why})");
            return;
        }
    };
    let (out, took) = guarded("demo --size 200M", Some(&cg.0));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("cgroup") && msg.contains(&cg.0.display().to_string()),
        "{msg}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
