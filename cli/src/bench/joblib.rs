//! joblib's memmapping handoff of the same arrays on the same machine, when the repository's
//! Python venv has numpy and joblib (`$STRIDEMAP_PYTHON`, else `.venv/bin/python`).

use std::process::Command;
use std::time::Instant;

use stridemap::ByteView;
use stridemap_core::{DType, Layout, Order, Slice};
use stridemap_shm::{HugePages, Pool, PoolConfig, SegmentKind};

use super::{Budget, Row, Scratch, fmt_secs};
use crate::wire;
use crate::worker::{Crew, hand};

const SCRIPT: &str = include_str!("joblib_handoff.py");
const END_TO_END: &str = include_str!("joblib_end_to_end.py");

fn python() -> Option<String> {
    // The workspace's .venv (where `bash scripts/test.sh` makes it), wherever this runs from.
    let py = std::env::var("STRIDEMAP_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").into());
    let ok = Command::new(&py)
        .args(["-c", "import numpy, joblib"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

/// The rows, or a note saying why there are none.
pub(crate) fn rows(budget: Budget, scratch: &Scratch) -> Result<Vec<Row>, String> {
    let Some(py) = python() else {
        return Ok(vec![Row {
            group: "joblib",
            name: "not measured: no Python with numpy and joblib (.venv or $STRIDEMAP_PYTHON)"
                .into(),
            ours: "-".into(),
            reference: "-".into(),
            ratio: None,
            target: "-".into(),
            met: None,
        }]);
    };
    let sizes: Vec<u64> = if budget.quick {
        vec![64 << 20]
    } else {
        vec![64 << 20, 1 << 30]
    };
    let out = Command::new(&py)
        .arg("-c")
        .arg(SCRIPT)
        .args(sizes.iter().map(u64::to_string))
        .output()
        .map_err(|e| format!("running joblib: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "joblib script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("joblib output: {e}"))?;
    let version = j["joblib"].as_str().unwrap_or("?").to_string();

    // Ours, the same way: a fresh share (the bytes written once) plus the handoff to a worker
    // process, then the handoff of the already shared array.
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(scratch.dir())
            .sweep_on_start(false),
    )
    .map_err(|e| e.to_string())?;
    let crew = Crew::spawn(1).map_err(|f| f.message)?;
    let c = &crew.conns[0];
    let mut rows = Vec::new();
    for size in sizes {
        let data: Vec<f64> = (0..size / 8).map(|i| i as f64).collect();
        let layout = Layout::contiguous(8, &[size / 8], Order::C).map_err(|e| e.to_string())?;
        let view = ByteView::new(
            bytemuck::cast_slice(&data),
            layout,
            DType::parse("<f8").map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let a = pool.share(&view).map_err(|e| e.to_string())?;
        hand(c, 0, a.descriptor(), &a, None).map_err(|f| f.message)?;
        let fresh = t0.elapsed().as_secs_f64();
        let mut reps = Vec::new();
        for i in 1..16 {
            let t0 = Instant::now();
            hand(c, i, a.descriptor(), &a, None).map_err(|f| f.message)?;
            reps.push(t0.elapsed().as_secs_f64());
        }
        reps.sort_by(f64::total_cmp);
        let repeat = reps[reps.len() / 2];
        let js = &j["sizes"][size.to_string()];
        let (jf, jr) = (
            js["first"].as_f64().unwrap_or(f64::NAN),
            js["repeat"].as_f64().unwrap_or(f64::NAN),
        );
        let mib = size >> 20;
        rows.push(Row {
            group: "joblib",
            name: format!("{mib} MiB first handoff (write + send + map) vs joblib {version}"),
            ours: fmt_secs(fresh),
            reference: fmt_secs(jf),
            ratio: Some(jf / fresh),
            target: "(joblib / ours)".into(),
            met: None,
        });
        rows.push(Row {
            group: "joblib",
            name: format!("{mib} MiB repeated handoff vs joblib (dispatch included)"),
            ours: fmt_secs(repeat),
            reference: fmt_secs(jr),
            ratio: Some(jr / repeat),
            target: "(joblib / ours)".into(),
            met: None,
        });
        drop(a);
    }
    crew.finish().map_err(|f| f.message)?;
    rows.extend(end_to_end(budget, &py)?);
    Ok(rows)
}

/// joblib's seconds for one end-to-end round of `size` bytes (a fresh Python process, its
/// workers started outside the clock).
fn joblib_round(py: &str, size: u64) -> Result<f64, String> {
    let out = Command::new(py)
        .arg("-c")
        .arg(END_TO_END)
        .args([size.to_string(), "1".into()])
        .output()
        .map_err(|e| format!("running joblib: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "joblib end-to-end script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("joblib output: {e}"))?;
    j["times"][0]
        .as_f64()
        .ok_or_else(|| "joblib output without a time".to_string())
}

/// Ours, one round: a fresh segment filled in place from `src`, `m[::-3]` handed to two
/// workers in halves, each sums its half into the output array, the sums read back.
fn ours_round(
    pool: &Pool,
    crew: &Crew,
    out: &stridemap_shm::OutputArray<f64>,
    src: &[f64],
    round: u32,
) -> Result<(f64, stridemap_shm::PageBacking), String> {
    let s = |e: stridemap_shm::Error| e.to_string();
    let t0 = Instant::now();
    let mut a = pool.alloc::<f64>(&[src.len()], Order::C).map_err(s)?;
    a.volatile_view_mut()
        .map_err(s)?
        .copy_from_slice(src)
        .map_err(|e| e.to_string())?;
    let a = a.freeze().map_err(s)?;
    let backing = a.page_backing().map_err(s)?;
    let rev = a
        .descriptor()
        .layout()
        .slice_axis(0, Slice::step(-3))
        .map_err(|e| e.to_string())?;
    let len = rev.shape().first().copied().unwrap_or(0);
    for k in 0..2u32 {
        let (lo, hi) = if k == 0 { (0, len / 2) } else { (len / 2, len) };
        let half = rev
            .slice_axis(0, Slice::range(lo as i64, hi as i64))
            .map_err(|e| e.to_string())?;
        let desc = a
            .descriptor()
            .to_builder()
            .layout(&half)
            .build()
            .map_err(|e| e.to_string())?;
        hand(&crew.conns[k as usize], round * 2 + k, &desc, &a, None).map_err(|f| f.message)?;
    }
    for k in 0..2u32 {
        let c = &crew.conns[k as usize];
        wire::put(c, &[wire::TASK]).map_err(|f| f.message)?;
        wire::put_u32(c, round * 2 + k).map_err(|f| f.message)?;
        wire::put_u64(c, u64::from(k)).map_err(|f| f.message)?;
    }
    for c in &crew.conns {
        wire::ack(c).map_err(|f| f.message)?;
    }
    let v = out.volatile_view().map_err(s)?;
    let total = v.get(&[0]).map_err(|e| e.to_string())? + v.get(&[1]).map_err(|e| e.to_string())?;
    let t = t0.elapsed().as_secs_f64();
    std::hint::black_box(total);
    for k in 0..2u32 {
        let c = &crew.conns[k as usize];
        wire::put(c, &[wire::DROP]).map_err(|f| f.message)?;
        wire::put_u32(c, round * 2 + k).map_err(|f| f.message)?;
        wire::ack(c).map_err(|f| f.message)?;
    }
    Ok((t, backing))
}

/// The end-to-end comparison, fresh arrays each round, rounds interleaved: ours with
/// huge pages (`Auto`: whatever this machine offers memfds) and without, against joblib.
fn end_to_end(budget: Budget, py: &str) -> Result<Vec<Row>, String> {
    let (size, rounds): (u64, u32) = if budget.quick {
        (64 << 20, 1)
    } else {
        (1 << 30, 3)
    };
    let src: Vec<f64> = (0..size / 8).map(|i| (i % 4096) as f64).collect();
    let crew = Crew::spawn(2).map_err(|f| f.message)?;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut got = stridemap_shm::PageBacking::Base;
    let pools = [HugePages::Auto, HugePages::Never].map(|mode| {
        Pool::with_config(
            PoolConfig::default()
                .kind(SegmentKind::Memfd)
                .huge_pages(mode)
                .recycle_max_bytes(0)
                .sweep_on_start(false),
        )
    });
    let mut outs = Vec::new();
    for p in &pools {
        let p = p.as_ref().map_err(|e| e.to_string())?;
        outs.push(
            p.alloc_output::<f64>(&[2], Order::C)
                .map_err(|e| e.to_string())?,
        );
    }
    for round in 0..rounds {
        for (i, p) in pools.iter().enumerate() {
            let p = p.as_ref().map_err(|e| e.to_string())?;
            for c in &crew.conns {
                wire::put(c, &[wire::OUTPUT]).map_err(|f| f.message)?;
                outs[i].send(c).map_err(|e| e.to_string())?;
                wire::ack(c).map_err(|f| f.message)?;
            }
            let (t, backing) = ours_round(p, &crew, &outs[i], &src, round * 2 + i as u32)?;
            times[i].push(t);
            if i == 0 {
                got = backing;
            }
        }
        times[2].push(joblib_round(py, size)?);
    }
    crew.finish().map_err(|f| f.message)?;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [mut h, mut b, mut j] = times;
    let (h, b, j) = (med(&mut h), med(&mut b), med(&mut j));
    let mib = size >> 20;
    let name = |what: &str| {
        format!(
            "end to end {mib} MiB fresh (fill, 2 workers sum m[::-3], reply), {what}, vs joblib"
        )
    };
    Ok(vec![
        Row {
            group: "joblib",
            name: name(&format!("huge pages: {got}")),
            ours: fmt_secs(h),
            reference: fmt_secs(j),
            ratio: Some(h / j),
            target: if got.is_huge() {
                "<= 0.5x joblib".into()
            } else {
                "(no huge pages here)".into()
            },
            met: got.is_huge().then_some(h / j <= 0.5),
        },
        Row {
            group: "joblib",
            name: name("4 KiB pages"),
            ours: fmt_secs(b),
            reference: fmt_secs(j),
            ratio: Some(b / j),
            target: "(context)".into(),
            met: None,
        },
    ])
}
