//! Attacks on the producer's fill in place (`SharedArrayMut`): another handle writes the
//! segment while the producer fills it (issue 20, "named-file segments never back a safe
//! reference"; NEWUSER-20, a memfd mapped writable through `/proc/<pid>/fd`).
//!
//! Keep this file to these tests: the memfd one writes every `stridemap-*` memfd this
//! process holds, and other tests' outputs would take the writes.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use stridemap_attacks::Scratch;
use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};

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
/// slice read 666.0 where the producer had written 1.0. Now the producer's unfrozen array
/// lends no slice at all (no such method: the `compile_fail` doctests of
/// `stridemap_shm::SharedArrayMut`), and its copies see the write as a value.
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
    let mut v = a.volatile_view_mut().unwrap();
    v.fill(1.0);
    write_666();
    assert_eq!(v.get(&[0]).unwrap(), 666.0, "copies see the write");
    let a = a.freeze().unwrap();
    assert!(!a.is_frozen() && a.view().is_err());
}

/// What another process of this user (or root) does to a producer's memfd (NEWUSER-20,
/// `racer.c`): watch `/proc/<pid>/fd`, open the producer's memfd there for writing and map it
/// writable, before any seal. A thread of this process stands in for it (the kernel makes no
/// difference: a writable map of the file that is not the producer's). Returns the map, or
/// `None` if no memfd appeared with room for the data before `deadline`.
fn race_for_a_writable_map(deadline: Instant) -> Option<(std::fs::File, memmap2::MmapRaw)> {
    let len = (DATA + 8) as usize;
    while Instant::now() < deadline {
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let ours = std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:stridemap-"));
            if !ours {
                continue;
            }
            let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
            else {
                continue;
            };
            if f.metadata().map_or(0, |m| m.len()) < len as u64 {
                continue;
            }
            if let Ok(m) = memmap2::MmapOptions::new().len(len).map_raw(&f) {
                return Some((f, m));
            }
        }
        std::thread::yield_now();
    }
    None
}

/// NEWUSER-20: the producer's fill of a memfd lent a `&mut [f64]` (`as_mut_slice`, `view`)
/// on the premise that the memfd, sealed `F_SEAL_FUTURE_WRITE` right after `alloc` mapped it,
/// had no other writer. The kernel does not enforce that premise: a process of this user
/// that opened `/proc/<pid>/fd/N` and mapped it before the seal keeps its writable map, and
/// changed a live `&mut [f64]` from 1.0 to 666.0 (3 runs out of 3 at 64 MiB), and a spin
/// loop on a `&f64` of it never saw the write (the load was hoisted). Now nothing lends a
/// reference before `freeze` (no such method: the `compile_fail` doctests of
/// `stridemap_shm::SharedArrayMut`), so the racer, which now always gets its map, changes
/// values that the producer's copies see; `freeze` is refused while the racer's map exists,
/// with a message that says so, and a frozen array lends `&[f64]` only once the kernel
/// granted `F_SEAL_WRITE` (no writable map left anywhere).
#[test]
fn a_racer_that_maps_the_memfd_during_the_fill_gets_no_reference_to_change() {
    let root = Scratch::new();
    let pool = pool(&root, SegmentKind::Memfd);
    let n = (64 << 20) / 8; // NEWUSER-20: a 64 MiB fill left the racer ~23 ms before the seal
    let deadline = Instant::now() + Duration::from_secs(10);
    let racer = std::thread::spawn(move || race_for_a_writable_map(deadline));
    let mut a = pool.alloc::<f64>(&[n], Order::C).unwrap();
    let (file, map) = racer
        .join()
        .unwrap()
        .expect("the racer mapped the producer's memfd writable during the fill");
    a.volatile_view_mut().unwrap().fill(1.0);
    // SAFETY: the racer's map is `DATA + 8` bytes long (made above), so the element at `DATA`
    // is inside it; the producer accesses these bytes only through volatile copies.
    unsafe {
        map.as_mut_ptr()
            .add(DATA as usize)
            .cast::<f64>()
            .write_volatile(666.0);
    }
    let v = a.volatile_view().unwrap();
    assert_eq!(v.get(&[0]).unwrap(), 666.0, "copies see the racer's write");
    assert_eq!(v.get(&[1]).unwrap(), 1.0);
    // Sealing F_SEAL_WRITE is refused while the racer's writable map exists: no reference.
    let e = a.freeze().unwrap_err();
    assert!(
        e.to_string().contains("another mapping of it is writable"),
        "{e}"
    );
    drop((map, file));
    // Without the racer's map, the kernel grants the seal: the frozen array lends &[f64],
    // and nobody can write it any more.
    let mut b = pool.alloc::<f64>(&[n], Order::C).unwrap();
    b.volatile_view_mut().unwrap().fill(2.0);
    let b = b.freeze().unwrap();
    assert!(b.is_frozen());
    let frozen = b.view().unwrap();
    assert!(frozen.as_slice().unwrap().iter().all(|&x| x == 2.0));
}
