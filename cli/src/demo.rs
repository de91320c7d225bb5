//! `stridemap demo`: the producer allocates a large f64 array in a shared segment and fills it
//! in place, hands worker processes descriptors of different views (a row block, a reversed
//! axis with a step, a transpose), the workers sum their views into a shared `r+` output
//! array, and the producer checks every answer. Then the same bytes go through a Unix socket,
//! for comparison.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use stridemap_shm::{
    Layout, Order, PageBacking, Pool, PoolConfig, SegmentKind, SharedArray, Slice,
};

use crate::bench::fmt_secs;
use crate::files::out;
use crate::wire;
use crate::worker::{Crew, hand};
use crate::{CliResult, Failure};

const COLS: u64 = 1024;

/// The value at (i, j): integers below 1000, so every sum is exact in any order.
fn value(i: u64, j: u64) -> f64 {
    ((i * COLS + j) % 1000) as f64
}

/// One task: a view of the data and what its sum must be.
struct Task {
    name: String,
    layout: Layout,
    expect: f64,
}

pub(crate) fn run(size: u64, workers: u32, memfd: bool) -> CliResult {
    let rows = (size / 8 / COLS).max(u64::from(workers) * 3);
    let nbytes = rows * COLS * 8;
    let kind = if memfd {
        SegmentKind::Memfd
    } else {
        SegmentKind::File
    };
    let pool = Pool::with_config(PoolConfig::default().kind(kind))?;

    // Allocate and fill in place: the producer writes the segment itself, no copy.
    let start = Instant::now();
    let shape = [rows, COLS].map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut a = pool.alloc::<f64>(&shape, Order::C)?;
    if let Some(folder) = pool.folders().first() {
        // Where the bytes go: a named segment lands in the first temp root with room, which
        // may be a disk.
        let note = if folder.starts_with("/dev/shm") {
            ""
        } else {
            " (not /dev/shm: it had no room, or STRIDEMAP_TEMP_FOLDER chose this one)"
        };
        println!(
            "stridemap demo: the named segment goes to {}{note}",
            folder.display()
        );
    }
    let bar = ProgressBar::new(nbytes).with_style(
        ProgressStyle::with_template("  filling {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut row_sums, mut col_sums) = (vec![0f64; rows as usize], vec![0f64; COLS as usize]);
    {
        // Element copies in (an unfrozen segment lends the producer no slice: another process
        // may map it writable until it is frozen).
        let mut k = 0u64;
        a.volatile_view_mut()?.fill_with(|| {
            let (i, j) = (k / COLS, k % COLS);
            k += 1;
            let x = value(i, j);
            row_sums[i as usize] += x;
            col_sums[j as usize] += x;
            if j == 0 && i % 4096 == 0 {
                bar.set_position(i * COLS * 8);
            }
            x
        });
    }
    bar.finish_and_clear();
    let fill_time = start.elapsed();
    let a = a.freeze()?;
    let pages = huge_pages_line(&a, kind, nbytes);

    let tasks = tasks(&a, rows, workers, &row_sums, &col_sums)?;
    let output = pool.alloc_output::<f64>(&[tasks.len()], Order::C)?;
    let crew = Crew::spawn(workers)?;
    for c in &crew.conns {
        wire::put(c, &[wire::OUTPUT])?;
        output.send(c)?;
        wire::ack(c)?;
    }

    // Phase 1: hand every view to its worker (workers idle, so each handoff is timed alone).
    let mut latencies = Vec::new();
    for (id, t) in tasks.iter().enumerate() {
        let desc = a.descriptor().to_builder().layout(&t.layout).build()?;
        let c = &crew.conns[id % crew.conns.len()];
        let t0 = Instant::now();
        hand(c, id as u32, &desc, &a, None)?;
        latencies.push(t0.elapsed());
    }
    // The floor: a bare descriptor-sized message and its answer.
    let mut pings = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        wire::put(&crew.conns[0], &[wire::PING, 0, 0, 0, 0])?;
        wire::put(&crew.conns[0], &[0u8; stridemap_core::RECORD_LEN])?;
        wire::ack(&crew.conns[0])?;
        pings.push(t0.elapsed());
    }
    // Phase 2: every worker sums its views into the output array, all at once.
    let t0 = Instant::now();
    for (id, _) in tasks.iter().enumerate() {
        let c = &crew.conns[id % crew.conns.len()];
        wire::put(c, &[wire::TASK])?;
        wire::put_u32(c, id as u32)?;
        wire::put_u64(c, id as u64)?;
    }
    for id in 0..tasks.len() {
        wire::ack(&crew.conns[id % crew.conns.len()])?;
    }
    let compute = t0.elapsed();

    // The same bytes through the socket, for comparison.
    // A named file is not frozen (no slice of it is lent): copied out first, untimed.
    let elems = a.volatile_view()?.to_vec();
    let bytes: &[u8] = bytemuck::cast_slice(&elems);
    let t0 = Instant::now();
    wire::put(&crew.conns[0], &[wire::BULK])?;
    wire::put_u64(&crew.conns[0], bytes.len() as u64)?;
    wire::put(&crew.conns[0], bytes)?;
    wire::ack(&crew.conns[0])?;
    let copy = t0.elapsed();
    crew.finish()?;

    // Check every answer against the producer's own computation.
    let answers = output.to_vec()?;
    let mut failed = Vec::new();
    for (t, got) in tasks.iter().zip(&answers) {
        if *got != t.expect {
            failed.push(format!(
                "{}: worker says {got}, expected {}",
                t.name, t.expect
            ));
        }
    }

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (lat, ping) = (median(&mut latencies), median(&mut pings));
    let gib = nbytes as f64 / (1u64 << 30) as f64;
    let mut text = format!(
        "stridemap demo: {gib:.2} GiB of f64 ({rows} x {COLS}) in a {} segment, {workers} worker processes\n",
        if memfd { "memfd" } else { "named-file" }
    );
    let rows_out = [
        (
            "filled in place",
            format!(
                "{} ({:.2} GB/s)",
                fmt_secs(fill_time.as_secs_f64()),
                nbytes as f64 / fill_time.as_secs_f64() / 1e9
            ),
        ),
        ("huge pages", pages),
        (
            "handoffs",
            format!(
                "{} views: a row block, rows reversed with step 3, a column block of the transpose, per worker",
                tasks.len()
            ),
        ),
        (
            "handoff latency (median)",
            format!(
                "{} (descriptor sent → worker holds a mapped, validated view)",
                fmt_secs(lat.as_secs_f64())
            ),
        ),
        (
            "bare 1 KiB message",
            format!(
                "{} round trip (the socket's own latency)",
                fmt_secs(ping.as_secs_f64())
            ),
        ),
        (
            "same bytes via the socket",
            format!(
                "{} for {gib:.2} GiB (measured)",
                fmt_secs(copy.as_secs_f64())
            ),
        ),
        (
            "socket copy / handoff",
            format!("{:.0}x", copy.as_secs_f64() / lat.as_secs_f64()),
        ),
        (
            "workers summing their views",
            fmt_secs(compute.as_secs_f64()),
        ),
        (
            "answers verified",
            format!("{}/{}", tasks.len() - failed.len(), tasks.len()),
        ),
    ];
    for (k, v) in rows_out {
        text.push_str(&format!("  {k:<28} {v}\n"));
    }
    for f in &failed {
        text.push_str(&format!("  WRONG: {f}\n"));
    }
    out(&text)?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::other(format!(
            "{} answer(s) were wrong",
            failed.len()
        )))
    }
}

/// Whether the segment got huge pages: the mechanism, how much of the producer's map the
/// kernel maps with them, or why there were none.
fn huge_pages_line<T>(a: &SharedArray<T>, kind: SegmentKind, nbytes: u64) -> String {
    let backing = a.page_backing().unwrap_or(PageBacking::Base);
    let mapped = a.huge_page_bytes().unwrap_or(0);
    if backing.is_huge() {
        format!(
            "yes: {backing}; {} MiB of the map in huge pages ({} MiB of data)",
            mapped >> 20,
            nbytes >> 20
        )
    } else {
        let probe = stridemap_shm::huge_probe(kind, None, nbytes);
        format!("no (4 KiB pages): {}", probe.summary())
    }
}

/// Three views per worker, and the sums they must have.
fn tasks(
    a: &SharedArray<f64>,
    rows: u64,
    workers: u32,
    row_sums: &[f64],
    col_sums: &[f64],
) -> CliResult<Vec<Task>> {
    let whole = a.descriptor().layout();
    let n = u64::from(workers);
    let mut out = Vec::new();
    for k in 0..n {
        let (r0, r1) = (k * rows / n, (k + 1) * rows / n);
        out.push(Task {
            name: format!("rows {r0}..{r1}"),
            layout: whole.slice_axis(0, Slice::range(r0 as i64, r1 as i64))?,
            expect: row_sums[r0 as usize..r1 as usize].iter().sum(),
        });
        let first = rows - 1 - k;
        out.push(Task {
            name: format!("rows {first}::-3"),
            layout: whole.slice_axis(0, Slice::new(Some(first as i64), None, -3))?,
            expect: (0..=first)
                .rev()
                .step_by(3)
                .map(|i| row_sums[i as usize])
                .sum(),
        });
        let (c0, c1) = (k * COLS / n, (k + 1) * COLS / n);
        out.push(Task {
            name: format!("transpose, columns {c0}..{c1}"),
            layout: whole
                .transpose()
                .slice_axis(0, Slice::range(c0 as i64, c1 as i64))?,
            expect: col_sums[c0 as usize..c1 as usize].iter().sum(),
        });
    }
    Ok(out)
}
