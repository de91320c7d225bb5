//! joblib's memmapping handoff of the same arrays on the same machine, when the repository's
//! Python venv has numpy and joblib (`$STRIDEMAP_PYTHON`, else `.venv/bin/python`).

use std::process::Command;
use std::time::Instant;

use stridemap::ByteView;
use stridemap_core::{DType, Layout, Order};
use stridemap_shm::{Pool, PoolConfig};

use super::{Budget, Row, Scratch, fmt_secs};
use crate::worker::{Crew, hand};

const SCRIPT: &str = include_str!("joblib_handoff.py");

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
        hand(c, 0, a.descriptor(), &a).map_err(|f| f.message)?;
        let fresh = t0.elapsed().as_secs_f64();
        let mut reps = Vec::new();
        for i in 1..16 {
            let t0 = Instant::now();
            hand(c, i, a.descriptor(), &a).map_err(|f| f.message)?;
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
    Ok(rows)
}
