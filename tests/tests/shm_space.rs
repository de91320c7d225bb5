//! A temp folder that is too small: a clear error before anything is written, naming the
//! folder, the bytes needed and available and the fix; no file left behind. On a real tiny
//! tmpfs when this machine allows mounting one, and with a configured quota always. And a
//! /dev/shm too small for a segment sends it to the temp dir: a child process in a private
//! mount namespace with an 8 MiB tmpfs on /dev/shm (needs root, as CI runs; says so if not).

use std::path::Path;
use std::process::Command;

use stridemap::ByteView;
use stridemap_core::{DType, Layout, Order};
use stridemap_shm::{Error, Pool, PoolConfig, SegmentKind};
use stridemap_tests::child;

const ENTRY: &str = "child_process_entry";

/// Not a test of its own: the entry point children run (see `stridemap_tests::child`).
#[test]
fn child_process_entry() {
    match child::role().as_deref() {
        None => {}
        Some("small-dev-shm") => small_dev_shm(),
        Some("few-fds") => few_fds(),
        Some(other) => panic!("unknown role {other}"),
    }
}

/// In its own mount namespace, where /dev/shm is an 8 MiB tmpfs.
fn small_dev_shm() {
    // This process sees an 8 MiB tmpfs on /dev/shm (its own mount namespace).
    let st = rustix::fs::statvfs("/dev/shm").unwrap();
    assert_eq!(st.f_blocks * st.f_frsize, 8 << 20, "the test's tmpfs");
    assert!(std::env::var_os("STRIDEMAP_TEMP_FOLDER").is_none());
    let tmp = std::env::temp_dir().canonicalize().unwrap();
    let pool = Pool::with_config(PoolConfig::default().sweep_on_start(false)).unwrap();
    // 1 MiB plus the margin (4 MiB and 1% of the 8 MiB) fits.
    let small = pool.alloc::<u8>(&[1 << 20], Order::C).unwrap();
    let folders = pool.folders();
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert!(folders[0].starts_with("/dev/shm"), "{folders:?}");
    // 6 MiB plus the margin does not: the segment goes to the temp dir instead.
    let big = pool.alloc::<u8>(&[6 << 20], Order::C).unwrap();
    let folders = pool.folders();
    assert_eq!(folders.len(), 2, "{folders:?}");
    assert!(folders[1].starts_with(&tmp), "{folders:?} not in {tmp:?}");
    drop((small, big));
}

/// The `child_process_entry` above, in a private mount namespace with an 8 MiB tmpfs on
/// /dev/shm. Needs root with CAP_SYS_ADMIN (as CI runs): without it, it says it did not run.
#[test]
fn a_small_dev_shm_sends_big_segments_to_the_temp_dir() {
    let can_mount = rustix::process::geteuid().is_root()
        && Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !can_mount {
        eprintln!(
            "note: NOT RUN: a_small_dev_shm_sends_big_segments_to_the_temp_dir needs root with \
             CAP_SYS_ADMIN and util-linux's unshare (it mounts a tmpfs on /dev/shm in a private \
             mount namespace); run the suite as root, as CI does"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=8m tmpfs /dev/shm && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(["--exact", ENTRY, "--nocapture", "--test-threads=1", "-q"])
        .env(child::ROLE_ENV, "small-dev-shm")
        .env_remove("STRIDEMAP_TEMP_FOLDER")
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "the child in its own mount namespace failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            out.extend(entries(&e.path()));
        }
    }
    out
}

fn assert_no_space(r: Result<impl std::fmt::Debug, Error>, folder: &Path) {
    match r {
        Err(e @ Error::NoSpace { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&folder.display().to_string()), "{text}");
            assert!(
                text.contains("STRIDEMAP_TEMP_FOLDER") && text.contains("--shm-size"),
                "{text}"
            );
            if let Error::NoSpace {
                needed, available, ..
            } = e
            {
                assert!(needed > available, "{needed} > {available}");
            }
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
}

/// Unmounts on drop.
struct Mount<'a>(&'a Path);

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_tiny_tmpfs_gives_the_clear_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("note: cannot mount a tmpfs here; the quota test below covers the error path");
        return;
    }
    let _guard = Mount(dir.path());
    let root = dir.path().canonicalize().unwrap();
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(&root)
            .recycle_max_bytes(0),
    )
    .unwrap();
    assert_no_space(pool.alloc::<f64>(&[512 * 1024], Order::C), &root);
    let data = vec![0u8; 4 << 20];
    let view = ByteView::new(
        &data,
        Layout::contiguous(1, &[4 << 20], Order::C).unwrap(),
        DType::parse("|u1").unwrap(),
    )
    .unwrap();
    assert_no_space(pool.share(&view), &root);
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));
    // What fits still works (a named file: read through a volatile view, it lends no slice).
    let small = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    assert_eq!(small.volatile_view().unwrap().len(), 1000);
}

#[test]
fn a_quota_gives_the_clear_error_and_leaves_no_file() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let root = dir.path().canonicalize().unwrap();
        let pool = Pool::with_config(
            PoolConfig::default()
                .temp_folder(&root)
                .quota(1 << 20)
                .kind(kind),
        )
        .unwrap();
        let first = pool.alloc::<u8>(&[600 << 10], Order::C).unwrap();
        let folder = if kind == SegmentKind::File {
            root.clone()
        } else {
            "memfd".into()
        };
        match pool.alloc::<u8>(&[600 << 10], Order::C) {
            Err(Error::NoSpace {
                folder: f,
                needed,
                available,
                limit: None,
            }) => {
                assert!(f.starts_with(&folder), "{f:?}");
                assert!(needed > available);
            }
            other => panic!("{kind:?}: {other:?}"),
        }
        let files: Vec<_> = entries(&root).into_iter().filter(|p| p.is_file()).collect();
        assert_eq!(
            files.len(),
            usize::from(kind == SegmentKind::File),
            "{files:?}"
        );
        drop(first);
    }
}

/// Runs out of file descriptors.
fn few_fds() {
    let root = stridemap_tests::child::arg("ROOT");
    let kind = match stridemap_tests::child::arg("KIND").as_str() {
        "memfd" => SegmentKind::Memfd,
        _ => SegmentKind::File,
    };
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(&root)
            .kind(kind)
            .sweep_on_start(false),
    )
    .unwrap();
    // Allow only a few more descriptors than are open now.
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let limit = rustix::process::Rlimit {
        current: Some(open_now + 4),
        maximum: Some(open_now + 4),
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
    let mut held = Vec::new();
    for _ in 0..64 {
        match pool.alloc::<u8>(&[4096], Order::C).and_then(|a| a.freeze()) {
            Ok(a) => held.push(a),
            Err(e) => {
                println!("stopped after {}: {e:?}", held.len());
                assert!(matches!(e, Error::TooManyFiles { .. }), "{e:?}");
                println!("TooManyFiles");
                return;
            }
        }
    }
    panic!("never ran out of descriptors");
}

#[test]
fn running_out_of_descriptors_is_its_own_error() {
    for kind in ["file", "memfd"] {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let root = dir.path().canonicalize().unwrap().display().to_string();
        let out = stridemap_tests::child::run(
            "child_process_entry",
            "few-fds",
            &[("ROOT", root), ("KIND", kind.to_string())],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("TooManyFiles"), "{kind}: {text}");
    }
}
