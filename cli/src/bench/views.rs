//! The consumer side: open + map + first view at three sizes, re-opening into a live mapping,
//! and summing views against plain slices and hand-written strided loops.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use std::os::unix::net::UnixStream;

use stridemap::{OpenOptions, VolatileView, VolatileViewMut, socket};
use stridemap_core::{Builder, DType, Layout, Order, Slice, ValidDescriptor, decode};
use stridemap_shm::{Pool, PoolConfig, SegmentKind};

use super::{Budget, Row, Scratch, fmt_rate, fmt_secs, paired};

type Result<T> = std::result::Result<T, String>;

/// A file of `len` bytes (sparse beyond the first page) and the descriptor of its doubles.
/// Readers refuse a sparse file in shared memory (SPEC §6 O12), so [`open_rows`] keeps its
/// files on the system temp dir; where that is a tmpfs too, the file is allocated.
fn f64_file(path: &Path, len: u64, fill: bool) -> Result<ValidDescriptor> {
    let mut f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if fill {
        let n = (len / 8) as usize;
        let data: Vec<f64> = (0..n).map(|i| (i % 1024) as f64).collect();
        f.write_all(bytemuck::cast_slice(&data))
            .map_err(|e| e.to_string())?;
    } else {
        f.set_len(len).map_err(|e| e.to_string())?;
        f.write_all(&[0u8; 4096]).map_err(|e| e.to_string())?;
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        if rustix::fs::fstatfs(&f).is_ok_and(|st| st.f_type as u64 & 0xffff_ffff == TMPFS_MAGIC) {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len)
                .map_err(|e| format!("{}: fallocate: {e}", path.display()))?;
        }
    }
    let meta = f.metadata().map_err(|e| e.to_string())?;
    Builder::new(DType::parse("<f8").map_err(|e| e.to_string())?, &[len / 8])
        .file_len(meta.len())
        .identity(meta.dev(), meta.ino())
        .path(path.to_str().ok_or("non-UTF-8 scratch path")?)
        .build()
        .map_err(|e| e.to_string())
}

/// Median seconds of decode → open (a fresh map) → typed view → first element, each call
/// timed alone; the unmap (whose page-table teardown grows with the mapping's size) happens
/// after the clock stops, as it does not belong to opening.
fn open_first_view(wire: &[u8], opts: &OpenOptions, calls: usize) -> Result<f64> {
    let mut t = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        let m = decode(wire)
            .map_err(stridemap::Error::from)
            .and_then(|d| opts.open(&d))
            .map_err(|e| e.to_string())?;
        black_box(
            m.volatile_view::<f64>()
                .and_then(|v| v.get(&[0]))
                .map_err(|e| e.to_string())?,
        );
        t.push(t0.elapsed().as_secs_f64());
        drop(m);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

pub(crate) fn open_rows(budget: Budget, scratch: &Scratch) -> Result<Vec<Row>> {
    // The sizes' files are sparse: on a disk, not in shared memory (see `f64_file`).
    let disk = tempfile::tempdir().map_err(|e| format!("a temp folder: {e}"))?;
    let disk_dir = disk.path().canonicalize().map_err(|e| e.to_string())?;
    let fresh = OpenOptions::new()
        .allow_root(scratch.dir())
        .allow_root(&disk_dir)
        .reuse_mappings(false);
    let sizes: [(&str, u64); 3] = [("1 MiB", 1 << 20), ("64 MiB", 64 << 20), ("1 GiB", 1 << 30)];
    let mut wires = Vec::new();
    for (name, len) in sizes {
        let d = f64_file(&disk_dir.join(format!("open-{len}")), len, false)?;
        fresh.open(&d).map_err(|e| format!("open {name}: {e}"))?;
        wires.push((name, d.to_bytes()));
    }
    let mut rows = Vec::new();
    let small = &wires[0].1;
    let calls = if budget.quick { 200 } else { 1000 };
    for (name, wire) in &wires[1..] {
        // Alternate the sizes, round by round, so both see the same machine.
        let (mut big, mut base) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            big.push(open_first_view(wire, &fresh, calls / 5)?);
            base.push(open_first_view(small, &fresh, calls / 5)?);
        }
        big.sort_by(f64::total_cmp);
        base.sort_by(f64::total_cmp);
        let (t_big, t_small) = (big[2], base[2]);
        let ratio = t_big / t_small;
        rows.push(Row {
            group: "open",
            name: format!("open+map+first view, {name} vs 1 MiB"),
            ours: fmt_secs(t_big),
            reference: fmt_secs(t_small),
            ratio: Some(ratio),
            target: "<= 1.5x".into(),
            met: Some(ratio <= 1.5),
        });
    }

    // Re-opening a view of a segment this process already maps.
    let keep = decode(small).map_err(|e| e.to_string())?;
    let reuse = OpenOptions::new()
        .allow_root(scratch.dir())
        .allow_root(&disk_dir);
    let _live = reuse.open(&keep).map_err(|e| e.to_string())?;
    let sub = keep
        .layout()
        .slice_axis(0, Slice::range(1000, 2000))
        .map_err(|e| e.to_string())
        .and_then(|l| {
            keep.to_builder()
                .layout(&l)
                .build()
                .map_err(|e| e.to_string())
        })?
        .to_bytes();
    let t = open_first_view(&sub, &reuse, calls)?;
    rows.push(Row {
        group: "open",
        name: "re-open a view into a live mapping".into(),
        ours: fmt_secs(t),
        reference: "-".into(),
        ratio: None,
        target: "< 2 µs".into(),
        met: Some(t < 2e-6),
    });
    Ok(rows)
}

/// A frozen memfd of `n` doubles, received and opened as a consumer would: its views lend
/// references (the kernel's seals, checked on the received fd).
fn frozen_memfd(n: u64) -> Result<(Pool, stridemap::Mapping)> {
    let e = |e: stridemap_shm::Error| e.to_string();
    let pool = Pool::with_config(
        PoolConfig::default()
            .kind(SegmentKind::Memfd)
            .sweep_on_start(false),
    )
    .map_err(e)?;
    let n = usize::try_from(n).map_err(|e| e.to_string())?;
    let mut a = pool.alloc::<f64>(&[n], Order::C).map_err(e)?;
    let mut i = 0usize;
    a.volatile_view_mut().map_err(e)?.fill_with(|| {
        i += 1;
        ((i - 1) % 1024) as f64
    });
    let a = a.freeze().map_err(e)?;
    let (tx, rx) = UnixStream::pair().map_err(|e| e.to_string())?;
    a.send(&tx).map_err(e)?;
    let m = socket::recv(&rx)
        .and_then(|i| OpenOptions::new().open(i))
        .map_err(|e| e.to_string())?;
    if !m.is_frozen() {
        return Err("a frozen memfd was not seen as frozen".into());
    }
    Ok((pool, m))
}

pub(crate) fn sum_rows(budget: Budget, _scratch: &Scratch) -> Result<Vec<Row>> {
    let n: u64 = if budget.quick { 1 << 20 } else { 8 << 20 };
    let (_pool, m) = frozen_memfd(n)?;
    let view = m.view::<f64>().map_err(|e| e.to_string())?;
    let slice: &[f64] = view.as_slice().ok_or("not contiguous")?;
    let mut rows = Vec::new();

    // Contiguous: the view's iterator against the slice's.
    let (t_view, t_slice) = paired(
        || {
            black_box(view.iter().sum::<f64>());
        },
        || {
            black_box(slice.iter().sum::<f64>());
        },
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: format!(
            "sum contiguous f64, frozen memfd ({} MB)",
            n * 8 / 1_000_000
        ),
        ours: fmt_rate(n * 8, t_view),
        reference: fmt_rate(n * 8, t_slice),
        ratio: Some(t_slice / t_view),
        target: ">= 0.9 of a slice".into(),
        met: Some(t_slice / t_view >= 0.9),
    });

    // The same sum through the copying view every mapping has (volatile element reads).
    let shared = m.volatile_view::<f64>().map_err(|e| e.to_string())?;
    let (t_shared, t_slice) = paired(
        || {
            black_box(shared.iter().sum::<f64>());
        },
        || {
            black_box(slice.iter().sum::<f64>());
        },
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: "sum contiguous f64, volatile view (element copies)".into(),
        ours: fmt_rate(n * 8, t_shared),
        reference: fmt_rate(n * 8, t_slice),
        ratio: Some(t_slice / t_shared),
        target: "(cost of no references)".into(),
        met: None,
    });

    // An integer sum, which a slice loop vectorizes and volatile reads cannot.
    let ints: &[u64] = bytemuck::cast_slice(slice);
    let shared_ints = VolatileView::<u64>::new(bytemuck::cast_slice(slice), *view.layout())
        .map_err(|e| e.to_string())?;
    let (t_shared, t_slice) = paired(
        || {
            black_box(shared_ints.iter().fold(0u64, u64::wrapping_add));
        },
        || {
            black_box(ints.iter().fold(0u64, |a, &b| a.wrapping_add(b)));
        },
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: "sum contiguous u64, volatile view (element copies)".into(),
        ours: fmt_rate(n * 8, t_shared),
        reference: fmt_rate(n * 8, t_slice),
        ratio: Some(t_slice / t_shared),
        target: "(cost of no references)".into(),
        met: None,
    });

    // Strided: m[::-3], the view against a hand-written loop.
    let rev3 = view
        .slice_axis(0, Slice::step(-3))
        .map_err(|e| e.to_string())?;
    let hand = || {
        let mut sum = 0.0;
        let mut i = slice.len() - 1;
        loop {
            sum += slice[i];
            if i < 3 {
                break;
            }
            i -= 3;
        }
        black_box(sum);
    };
    let (t_view, t_hand) = paired(
        || {
            black_box(rev3.iter().sum::<f64>());
        },
        hand,
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: "sum m[::-3] (strided, reversed)".into(),
        ours: fmt_secs(t_view),
        reference: fmt_secs(t_hand),
        ratio: Some(t_view / t_hand),
        target: "<= 2x a hand loop".into(),
        met: Some(t_view / t_hand <= 2.0),
    });

    // 2-d transpose: column-major walk of a C-ordered matrix.
    let side = (n as f64).sqrt() as usize;
    let mat = view
        .slice_axis(0, Slice::range(0, (side * side) as i64))
        .and_then(|v| v.reshape(&[side, side], stridemap_core::Order::C))
        .map_err(|e| e.to_string())?
        .t();
    let hand_t = || {
        let mut sum = 0.0;
        let s = side;
        for j in 0..s {
            for i in 0..s {
                sum += slice[i * s + j];
            }
        }
        black_box(sum);
    };
    let (t_view, t_hand) = paired(
        || {
            black_box(mat.iter().sum::<f64>());
        },
        hand_t,
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: format!("sum transpose of {side}x{side}"),
        ours: fmt_secs(t_view),
        reference: fmt_secs(t_hand),
        ratio: Some(t_view / t_hand),
        target: "<= 2x a hand loop".into(),
        met: Some(t_view / t_hand <= 2.0),
    });
    rows.extend(shared_write_rows(budget, n)?);
    Ok(rows)
}

/// What the safe shared-write path costs: a shared `r+` output written element by element
/// (one volatile store each) and row by row (one copy each), against a plain slice.
fn shared_write_rows(budget: Budget, n: u64) -> Result<Vec<Row>> {
    let cols: u64 = 1024;
    let rows_n = (n / cols).max(1);
    let layout = Layout::contiguous(8, &[rows_n, cols], Order::C).map_err(|e| e.to_string())?;
    let mut out = vec![0f64; (rows_n * cols) as usize];
    let mut plain = vec![0f64; (rows_n * cols) as usize];
    let row: Vec<f64> = (0..cols).map(|j| j as f64).collect();
    let mut rows = Vec::new();

    // Element by element: set() per element against `slice[i] = x`.
    let (t_set, t_plain) = paired(
        || {
            if let Ok(mut v) =
                VolatileViewMut::<f64>::new(bytemuck::cast_slice_mut(&mut out), layout)
            {
                let mut k = 0.0;
                v.fill_with(|| {
                    k += 1.0;
                    k
                });
                black_box(&v);
            }
        },
        || {
            let mut k = 0.0;
            for x in plain.iter_mut() {
                k += 1.0;
                *x = k;
            }
            black_box(&plain);
        },
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: format!(
            "shared write, element by element ({} MB)",
            n * 8 / 1_000_000
        ),
        ours: fmt_rate(n * 8, t_set),
        reference: fmt_rate(n * 8, t_plain),
        ratio: Some(t_plain / t_set),
        target: "(cost of no references)".into(),
        met: None,
    });

    // Row by row: copy_from_slice per row (one memcpy) against `copy_from_slice` on slices.
    let (t_rows, t_plain) = paired(
        || {
            if let Ok(mut v) =
                VolatileViewMut::<f64>::new(bytemuck::cast_slice_mut(&mut out), layout)
            {
                for i in 0..usize::try_from(rows_n).unwrap_or(0) {
                    if let Ok(mut r) = v.reborrow().index_axis(0, i) {
                        let _ = r.copy_from_slice(&row);
                    }
                }
                black_box(&v);
            }
        },
        || {
            for r in plain.chunks_mut(cols as usize) {
                r.copy_from_slice(&row);
            }
            black_box(&plain);
        },
        budget.rounds,
        budget.batch,
    );
    rows.push(Row {
        group: "views",
        name: "shared write, row by row (copy_from_slice)".into(),
        ours: fmt_rate(n * 8, t_rows),
        reference: fmt_rate(n * 8, t_plain),
        ratio: Some(t_plain / t_rows),
        target: "(cost of no references)".into(),
        met: None,
    });
    Ok(rows)
}
