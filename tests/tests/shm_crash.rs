//! A producer killed with SIGKILL while its segments are outstanding: the sweep removes its
//! folder once no live process holds a file, never while one does, and never touches a live
//! pool's folder.

use std::io::{BufRead, BufReader};

use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use stridemap_core::Order;
use stridemap_shm::{Pool, PoolConfig, sweep};
use stridemap_tests::child;

const ENTRY: &str = "child_process_entry";

/// Not a test of its own: the entry point children run (see `stridemap_tests::child`).
#[test]
fn child_process_entry() {
    let Some(role) = child::role() else { return };
    assert_eq!(role, "producer");
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(child::arg("ROOT"))
            .sweep_on_start(false),
    )
    .unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| {
            let mut a = pool.alloc::<f64>(&[1000 + i], Order::C).unwrap();
            a.volatile_view_mut().unwrap().fill(i as f64);
            a.freeze().unwrap()
        })
        .collect();
    println!("folder {}", pool.folders()[0].display());
    // Wait to be killed, segments outstanding.
    std::thread::sleep(std::time::Duration::from_secs(600));
    drop(held);
}

fn files(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn kill_dash_nine_then_sweep() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let root = dir.path().canonicalize().unwrap();
    // A live pool of our own, with a segment.
    let live = Pool::with_config(
        PoolConfig::default()
            .temp_folder(&root)
            .sweep_on_start(false),
    )
    .unwrap();
    let _ours = live.alloc::<u8>(&[10], Order::C).unwrap();
    let live_folder = live.folders()[0].clone();

    let mut producer = child::spawn(ENTRY, "producer", &[("ROOT", root.display().to_string())]);
    // The test harness prints its own lines first; ours starts with "folder ".
    let out = BufReader::new(producer.stdout.take().unwrap());
    let line = out
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("folder "))
        .unwrap();
    let dead_folder = PathBuf::from(line.trim().strip_prefix("folder ").unwrap());
    assert_eq!(files(&dead_folder).len(), 3);

    // A live process (this one) still maps one of the dead producer's segments.
    let holder = std::fs::File::open(&files(&dead_folder)[0]).unwrap();
    flock(&holder, FlockOperation::LockShared).unwrap();

    producer.kill().unwrap(); // SIGKILL
    producer.wait().unwrap();
    assert!(dead_folder.exists(), "a killed producer cannot clean up");

    let report = sweep(std::slice::from_ref(&root), false).unwrap();
    assert_eq!(report.in_use, std::slice::from_ref(&dead_folder));
    assert_eq!(report.owner_alive, std::slice::from_ref(&live_folder));
    assert!(report.removed.is_empty());
    assert_eq!(files(&dead_folder).len(), 3, "swept under a reader");

    // The reader is done; a dry run says what would go, then the next pool's start sweeps it.
    drop(holder);
    let dry = sweep(std::slice::from_ref(&root), true).unwrap();
    assert_eq!(dry.removed, std::slice::from_ref(&dead_folder));
    assert!(dead_folder.exists());
    let next = Pool::with_config(PoolConfig::default().temp_folder(&root)).unwrap();
    assert!(
        !dead_folder.exists(),
        "the new pool's sweep removed the orphan"
    );
    assert!(
        live_folder.exists() && files(&live_folder).len() == 1,
        "a live pool was touched"
    );

    // Nothing is left behind but live pools' folders (and nothing at all once they go).
    drop((_ours, live, next));
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
