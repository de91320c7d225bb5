//! Huge pages: a fresh segment filled in place, with and without huge pages, against a warm
//! memcpy; a consumer's first read of a fresh mapping (its page faults), with and without;
//! and which mechanism this machine offers, or why none.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

use stridemap::OpenOptions;
use stridemap_core::Order;
use stridemap_shm::{
    HugePages, PageBacking, Pool, PoolConfig, SegmentKind, SharedArray, huge_probe,
};

use super::{Budget, Row, Scratch, fmt_rate, fmt_secs};

type Result<T> = std::result::Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The pool kind (and temp root) to measure: memfds when the system offers them huge pages,
/// else named files in the temp root the policy picks (`$STRIDEMAP_TEMP_FOLDER` first), else
/// memfds without. With the probe's one-line verdict for each.
fn setup(bytes: u64) -> (SegmentKind, Option<PathBuf>, Vec<String>) {
    let memfd = huge_probe(SegmentKind::Memfd, None, bytes);
    let file = huge_probe(SegmentKind::File, None, bytes);
    let notes = vec![
        format!("memfd: {}", memfd.summary()),
        format!("file: {}", file.summary()),
    ];
    if memfd.chosen().is_some() {
        return (SegmentKind::Memfd, None, notes);
    }
    if file.chosen().is_some() {
        let root =
            std::env::var_os(stridemap::__producer_policy::TEMP_FOLDER_ENV).map(PathBuf::from);
        return (SegmentKind::File, root, notes);
    }
    (SegmentKind::Memfd, None, notes)
}

fn pool(kind: SegmentKind, root: &Option<PathBuf>, mode: HugePages) -> Result<Pool> {
    let mut cfg = PoolConfig::default()
        .kind(kind)
        .huge_pages(mode)
        .recycle_max_bytes(0)
        .sweep_on_start(false);
    if let Some(r) = root {
        cfg = cfg.temp_folder(r);
    }
    Pool::with_config(cfg).map_err(s)
}

/// Seconds to allocate a fresh segment of `src.len()` bytes and fill it in place from `src`.
fn fresh_fill(pool: &Pool, src: &[f64]) -> Result<(f64, SharedArray<f64>)> {
    let t0 = Instant::now();
    let mut a = pool.alloc::<f64>(&[src.len()], Order::C).map_err(s)?;
    a.volatile_view_mut()
        .map_err(s)?
        .copy_from_slice(std::hint::black_box(src))
        .map_err(|e| e.to_string())?;
    let t = t0.elapsed().as_secs_f64();
    Ok((t, a.freeze().map_err(s)?))
}

/// A consumer's reads of `a` through a new mapping, one element per 4 KiB page: seconds for
/// the first read (page faults and cache misses) and for a second read of the same mapping
/// (the cache misses alone: 1 GiB is far larger than the caches). Their difference is the
/// first read's fault overhead. The mapping is made and dropped outside the clock.
fn first_read(a: &SharedArray<f64>, root: &Option<PathBuf>) -> Result<(f64, f64)> {
    let opts = match root {
        Some(r) => OpenOptions::new().allow_root(r).reuse_mappings(false),
        None => OpenOptions::new().reuse_mappings(false),
    };
    let m = if a.is_memfd() {
        let (tx, rx) = UnixStream::pair().map_err(s)?;
        a.send(&tx).map_err(s)?;
        stridemap::socket::recv(&rx)
            .and_then(|i| opts.open(i))
            .map_err(|e| e.to_string())?
    } else {
        opts.open(a.descriptor()).map_err(s)?
    };
    // One element per 4 KiB page, copied out (a named file is not frozen).
    let v = m.volatile_view::<f64>().map_err(|e| e.to_string())?;
    let n = v.len();
    let read = || {
        let t0 = Instant::now();
        let mut sum = 0f64;
        for i in (0..n).step_by(512) {
            sum += v.get(&[i]).unwrap_or(0.0);
        }
        std::hint::black_box(sum);
        t0.elapsed().as_secs_f64()
    };
    let first = read();
    let again = read();
    drop(m);
    Ok((first, again))
}

/// The fault overhead of first reads: the median of (first - second) over the rounds, at
/// least a microsecond (so that a ratio of it stays finite).
fn overhead(reads: &[(f64, f64)]) -> f64 {
    median(reads.iter().map(|(f, s)| f - s).collect()).max(1e-6)
}

pub(crate) fn rows(budget: Budget, scratch: &Scratch) -> Result<Vec<Row>> {
    let n_bytes: u64 = if budget.quick { 256 << 20 } else { 1 << 30 };
    let rounds = if budget.quick { 3 } else { 7 };
    let (kind, root, notes) = setup(n_bytes);
    let src: Vec<f64> = (0..n_bytes / 8).map(|i| (i % 4096) as f64).collect();
    let mut dst = vec![0f64; src.len()];
    dst.copy_from_slice(&src);
    let huge = pool(kind, &root, HugePages::Auto)?;
    // Base pages for named files need a root that is not mounted huge= (there the filesystem
    // decides, whatever the pool asks): the scratch folder (on /dev/shm).
    let base_root = match kind {
        SegmentKind::File => Some(scratch.dir().to_path_buf()),
        SegmentKind::Memfd => None,
    };
    let base = pool(kind, &base_root, HugePages::Never)?;
    let (mut th, mut tb, mut tm, mut rh, mut rb) = (vec![], vec![], vec![], vec![], vec![]);
    let mut got = PageBacking::Base;
    let mut mapped = 0u64;
    for _ in 0..rounds {
        let (t, a) = fresh_fill(&huge, &src)?;
        th.push(t);
        got = a.page_backing().map_err(s)?;
        mapped = a.huge_page_bytes().map_err(s)?;
        rh.push(first_read(&a, &root)?);
        drop(a);
        let (t, b) = fresh_fill(&base, &src)?;
        tb.push(t);
        rb.push(first_read(&b, &base_root)?);
        drop(b);
        let t0 = Instant::now();
        std::hint::black_box(&mut dst[..]).copy_from_slice(std::hint::black_box(&src[..]));
        tm.push(t0.elapsed().as_secs_f64());
    }
    let (oh, ob) = (overhead(&rh), overhead(&rb));
    let rh = median(rh.iter().map(|r| r.0).collect());
    let rb = median(rb.iter().map(|r| r.0).collect());
    let (th, tb, tm) = (median(th), median(tb), median(tm));
    let gib = n_bytes as f64 / (1u64 << 30) as f64;
    let size = if n_bytes >= 1 << 30 {
        format!("{gib:.0} GiB")
    } else {
        format!("{} MiB", n_bytes >> 20)
    };
    let kname = match kind {
        SegmentKind::Memfd => "memfd",
        SegmentKind::File => "file",
    };
    let mut rows = vec![Row {
        group: "huge pages",
        name: format!(
            "{kname} segments: {} MiB of the {size} segment's map huge (why: see stderr)",
            mapped >> 20
        ),
        ours: got.to_string(),
        reference: "-".into(),
        ratio: None,
        target: "(the mechanism)".into(),
        met: None,
    }];
    for n in &notes {
        eprintln!("huge pages, {n}");
    }
    let have = got.is_huge();
    rows.push(Row {
        group: "huge pages",
        name: format!("fresh {size} alloc + fill in place, huge pages, vs a warm memcpy"),
        ours: fmt_rate(n_bytes, th),
        reference: fmt_rate(n_bytes, tm),
        ratio: Some(tm / th),
        target: if have {
            ">= 0.7 of memcpy".into()
        } else {
            "(no huge pages here: see above)".into()
        },
        met: have.then_some(tm / th >= 0.7),
    });
    rows.push(Row {
        group: "huge pages",
        name: format!("fresh {size} alloc + fill in place, 4 KiB pages, vs a warm memcpy"),
        ours: fmt_rate(n_bytes, tb),
        reference: fmt_rate(n_bytes, tm),
        ratio: Some(tm / tb),
        target: "(context)".into(),
        met: None,
    });
    rows.push(Row {
        group: "huge pages",
        name: "consumer first-read fault overhead per GiB (first - second read), huge vs 4 KiB"
            .into(),
        ours: fmt_secs(oh / gib),
        reference: fmt_secs(ob / gib),
        ratio: Some(ob / oh),
        target: if have {
            ">= 10x lower".into()
        } else {
            "(no huge pages here)".into()
        },
        met: have.then_some(ob / oh >= 10.0),
    });
    rows.push(Row {
        group: "huge pages",
        name: "consumer first read per GiB (faults + cache misses), huge vs 4 KiB pages".into(),
        ours: fmt_secs(rh / gib),
        reference: fmt_secs(rb / gib),
        ratio: Some(rb / rh),
        target: "(context)".into(),
        met: None,
    });
    Ok(rows)
}
