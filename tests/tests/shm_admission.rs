//! The admission check of the Rust pool (SPEC.md §7, rule 6): `Pool::alloc` and `alloc_output` of
//! more shared memory than the machine has are refused with `Error::NoSpace` naming the limit,
//! before anything is allocated, for a memfd and for a named file in a tmpfs larger than RAM.
//!
//! Its own test binary: it sets `RLIMIT_FSIZE` to 64 MiB for the whole process, so that a
//! missing check cannot take the machine (the unchecked `fallocate` fails with EFBIG, or
//! SIGXFSZ ends the test) instead of filling RAM.

use std::path::Path;
use std::process::Command;

use stridemap_shm::{Error, Order, Pool, PoolConfig, SegmentKind};

fn guard() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = Some(64 << 20);
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: limit,
            maximum: limit,
        },
    )
    .expect("RLIMIT_FSIZE");
}

fn refused_for_memory(r: Result<impl std::fmt::Debug, Error>, what: &str) {
    match r {
        Err(Error::NoSpace {
            needed,
            available,
            limit: Some(limit),
            ..
        }) => {
            assert!(needed > available, "{what}: {needed} > {available}");
            assert!(limit.starts_with("MemAvailable"), "{what}: {limit}");
        }
        other => panic!("{what}: expected NoSpace from the memory check, got {other:?}"),
    }
}

/// A tmpfs of 64 TiB (far more than RAM, as `mount -o size=` allows) at a temp dir, unmounted
/// on drop; None (said) where mounting is not allowed.
struct BigTmpfs(tempfile::TempDir);

impl BigTmpfs {
    fn mount() -> Option<BigTmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64T,mode=1777", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(BigTmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for BigTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn oversized_allocations_are_refused_before_anything_is_allocated() {
    guard();
    let memfd = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd)).unwrap();
    refused_for_memory(memfd.alloc::<u8>(&[1 << 50], Order::C), "memfd alloc");
    refused_for_memory(
        memfd.alloc_output::<f64>(&[1 << 47], Order::C),
        "memfd alloc_output",
    );
    // A small one still fits.
    memfd.alloc::<u8>(&[1 << 20], Order::C).unwrap();

    let Some(tmpfs) = BigTmpfs::mount() else {
        println!("not run: the named-file case needs a 64 TiB tmpfs mount (root)");
        return;
    };
    let files = Pool::with_config(
        PoolConfig::default()
            .kind(SegmentKind::File)
            .temp_folder(tmpfs.path()),
    )
    .unwrap();
    refused_for_memory(files.alloc::<u8>(&[1 << 44], Order::C), "tmpfs file alloc");
    drop(files);
    let left: Vec<_> = walk(tmpfs.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out.retain(|p| p.is_file());
    out
}
