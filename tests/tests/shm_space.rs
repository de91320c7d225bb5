//! A temp folder that is too small: a clear error before anything is written, naming the
//! folder, the bytes needed and available and the fix; no file left behind. On a real tiny
//! tmpfs when this machine allows mounting one, and with a configured quota always.

use std::path::Path;
use std::process::Command;

use stridemap::ByteView;
use stridemap_core::{DType, Layout, Order};
use stridemap_shm::{Error, Pool, PoolConfig, SegmentKind};

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
    // What fits still works.
    let small = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    assert_eq!(small.view().unwrap().len(), 1000);
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

/// Not a test of its own: the entry point children run (see `stridemap_tests::child`).
#[test]
fn child_process_entry() {
    let Some(role) = stridemap_tests::child::role() else {
        return;
    };
    assert_eq!(role, "few-fds");
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
