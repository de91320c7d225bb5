//! Attacks on the producer's fill in place (`SharedArrayMut`): another handle writes the
//! segment while the producer holds a `&mut [f64]` of it (issue 20, "named-file segments
//! never back a safe reference").
//!
//! Keep this file to these tests: the memfd one writes every `stridemap-*` memfd this
//! process holds, and other tests' outputs would take the writes.

use std::os::unix::fs::FileExt;

use stridemap_attacks::Scratch;
use stridemap_shm::{Error, Order, Pool, PoolConfig, SegmentKind};

/// The data offset of a base-page segment (SPEC.md §7).
const DATA: u64 = stridemap_core::SEGMENT_DATA_OFFSET;

fn pool(root: &Scratch, kind: SegmentKind) -> Pool {
    Pool::with_config(
        PoolConfig::default()
            .temp_folder(&root.p)
            .kind(kind)
            .huge_pages(stridemap_shm::HugePages::Never)
            .sweep_on_start(false),
    )
    .unwrap()
}

/// Before: `as_mut_slice()` lent a `&mut [f64]` of a named-file segment, and any process of
/// this user (here: this one, through `std::fs`, safe code) wrote the file under it: the
/// slice read 666.0 where the producer had written 1.0. Now the producer gets no slice of a
/// named file, and its copies see the write as a value.
#[test]
fn a_named_file_written_under_the_producers_fill_lends_no_slice() {
    let root = Scratch::new();
    let pool = pool(&root, SegmentKind::File);
    let mut a = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    let path = std::fs::read_dir(&pool.folders()[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
        })
        .expect("the segment's file");
    let write_666 = || {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&666f64.to_ne_bytes(), DATA).unwrap();
    };
    match a.as_mut_slice() {
        Ok(live) => {
            live[0] = 1.0;
            write_666();
            panic!(
                "a live &mut [f64] of a named file, {} after a write",
                live[0]
            );
        }
        Err(e) => {
            assert!(matches!(e, Error::NotPrivate { .. }), "{e}");
            assert!(e.to_string().contains("volatile_view_mut"), "{e}");
        }
    }
    assert!(!a.is_private() && a.view().is_err() && a.view_mut().is_err());
    let mut v = a.volatile_view_mut().unwrap();
    v.fill(1.0);
    write_666();
    assert_eq!(v.get(&[0]).unwrap(), 666.0, "copies see the write");
}

/// Before: a fresh memfd was sealed only against resizing until it was shared, and any
/// process that could open `/proc/<pid>/fd` (this one too, safe code) wrote it under the
/// producer's `&mut [f64]`. Now the memfd is sealed `F_SEAL_FUTURE_WRITE` as soon as the
/// producer's map exists: a write(2) or a new writable map through a reopened fd is refused,
/// and the slice keeps its values.
#[test]
fn a_private_memfd_reopened_through_proc_cannot_be_written_under_the_fill() {
    let root = Scratch::new();
    let pool = pool(&root, SegmentKind::Memfd);
    let mut a = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    assert!(a.is_private());
    let live = a.as_mut_slice().unwrap();
    live.fill(1.0);
    let mut tried = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_ours = std::fs::read_link(e.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:stridemap-"));
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(e.path())
        else {
            continue;
        };
        if !is_ours {
            continue;
        }
        tried += 1;
        let wrote = f.write_all_at(&666f64.to_ne_bytes(), DATA);
        assert!(wrote.is_err(), "write(2) to the private memfd was allowed");
        let mapped = memmap2::MmapOptions::new().len(4096).map_raw(&f);
        assert!(mapped.is_err(), "a new writable map of the private memfd");
    }
    assert!(
        tried >= 1,
        "the segment's memfd was not found in /proc/self/fd"
    );
    assert!(
        live.iter().all(|&x| x == 1.0),
        "the live &mut [f64] changed"
    );
}
