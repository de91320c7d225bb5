//! 10,000 share → send → open → drop cycles leave the open fds, the mappings and the files in
//! the temp root where they started, for named and memfd segments, recycled or not.

use std::os::unix::net::UnixStream;
use std::path::Path;

use stridemap::{ByteView, OpenOptions};
use stridemap_core::{DType, Layout, Order};
use stridemap_shm::{Pool, PoolConfig, SegmentKind};

const CYCLES: usize = 10_000;

fn count_dir(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

fn files_below(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_below(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Open fds, mappings of segments (named ones below `root`, or memfds), and files below
/// `root`. (The total count of /proc/self/maps lines moves with malloc arenas and with the
/// kernel merging neighbouring maps, so the segment maps are counted by name.)
fn resources(root: &Path) -> (usize, usize, usize) {
    let name = root.display().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&name) || l.contains("/memfd:stridemap-"))
        .count();
    (
        count_dir(Path::new("/proc/self/fd")),
        maps,
        files_below(root),
    )
}

fn soak(kind: SegmentKind, recycle: bool) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let root = dir.path().canonicalize().unwrap();
    let cfg = PoolConfig::default()
        .temp_folder(&root)
        .kind(kind)
        .recycle_max_bytes(if recycle { 1 << 30 } else { 0 });
    let pool = Pool::with_config(cfg).unwrap();
    let opts = OpenOptions::new().allow_root(&root);
    let (tx, rx) = UnixStream::pair().unwrap();
    let data: Vec<f64> = (0..8192).map(f64::from).collect();
    let layout = Layout::contiguous(8, &[64, 128], Order::C).unwrap();
    let view = ByteView::new(
        bytemuck::cast_slice(&data),
        layout,
        DType::parse("<f8").unwrap(),
    )
    .unwrap();
    let cycle = |i: usize| {
        let shared = pool.share(&view).unwrap();
        shared.send(&tx).unwrap();
        let m = stridemap::socket::recv(&rx)
            .and_then(|i| opts.open(i))
            .unwrap();
        let v = m.volatile_view::<f64>().unwrap();
        assert_eq!(v.get(&[i % 64, 5]).unwrap(), (i % 64) as f64 * 128.0 + 5.0);
        drop(m);
        drop(shared);
    };
    cycle(0); // the pool folder (and a recycled segment) exist from here on
    pool.collect();
    let before = resources(&root);
    for i in 1..=CYCLES {
        cycle(i);
    }
    pool.collect();
    let after = resources(&root);
    assert_eq!(
        before, after,
        "{kind:?} recycle={recycle}: (fds, maps, files) changed"
    );
    drop(pool);
    assert_eq!(files_below(&root), 0);
}

/// One test, the four variants in turn: the counts are per process, so nothing else may run
/// beside it in this binary.
#[test]
fn soak_every_kind() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        for recycle in [true, false] {
            soak(kind, recycle);
        }
    }
}
