//! Fresh segments to be filled in place (`Pool::alloc`) of 16 MiB and more are prefaulted by
//! two threads before `alloc` returns (every page resident in the producer's map before
//! anything wrote it), smaller ones are not; either way they read as zeros and fill in place.

use stridemap_core::Order;
use stridemap_shm::{Pool, PoolConfig, SegmentKind};

const MIB: u64 = 1 << 20;

/// Resident bytes of the mapping of this process that holds `addr` (`/proc/self/smaps`).
fn rss_of_mapping(addr: usize) -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in text.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = head.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = lo <= addr && addr < hi;
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            return kb
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<u64>()
                .unwrap()
                * 1024;
        }
    }
    panic!("no mapping holds {addr:#x}");
}

fn pool(kind: SegmentKind) -> Pool {
    Pool::with_config(
        PoolConfig::default()
            .kind(kind)
            .recycle_max_bytes(0)
            .sweep_on_start(false),
    )
    .unwrap()
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

#[test]
fn a_large_alloc_is_resident_before_it_is_written_and_fills_in_place() {
    for kind in [SegmentKind::Memfd, SegmentKind::File] {
        let pool = pool(kind);
        let n = (32 * MIB / 8) as usize;
        let mut a = pool.alloc::<f64>(&[n], Order::C).unwrap();
        // SAFETY: the pool's folder is this test's own; nothing else opens its files.
        let slice = unsafe { a.as_mut_slice_unchecked() };
        let addr = slice.as_ptr() as usize;
        let rss = rss_of_mapping(addr);
        if two_cpus() {
            assert!(
                rss >= 32 * MIB,
                "{kind:?}: only {rss} bytes resident after alloc"
            );
        } else {
            eprintln!("note: one CPU here: no prefault expected ({rss} bytes resident)");
        }
        assert!(slice.iter().all(|&x| x == 0.0));
        for (i, x) in slice.iter_mut().enumerate() {
            *x = i as f64;
        }
        let frozen = a.freeze().unwrap();
        assert_eq!(
            frozen.volatile_view().unwrap().get(&[n - 1]).unwrap(),
            (n - 1) as f64
        );
    }
}

#[test]
fn a_small_alloc_is_not_prefaulted() {
    let pool = pool(SegmentKind::Memfd);
    let n = (8 * MIB / 8) as usize;
    let mut a = pool.alloc::<f64>(&[n], Order::C).unwrap();
    // SAFETY: a memfd of this test's own pool; no other process maps it meanwhile.
    let rss = rss_of_mapping(unsafe { a.as_mut_slice_unchecked() }.as_ptr() as usize);
    assert!(
        rss < 8 * MIB / 2,
        "{rss} bytes resident: prefaulted below the threshold"
    );
    a.volatile_view_mut().unwrap().set(&[n - 1], 1.0).unwrap();
    assert_eq!(
        *a.freeze().unwrap().view().unwrap().get(&[n - 1]).unwrap(),
        1.0
    );
}
