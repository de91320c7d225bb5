//! Timing that survives a noisy, shared machine: interleaved rounds and medians, so that
//! ratios measured in one run mean something even when absolute times wander.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Median seconds per call of `f`, from `rounds` batches sized to about `batch` each.
pub(crate) fn per_call(mut f: impl FnMut(), rounds: usize, batch: Duration) -> f64 {
    let n = calls_for(&mut f, batch);
    let mut samples: Vec<f64> = (0..rounds).map(|_| time_batch(&mut f, n)).collect();
    median(&mut samples)
}

/// Median seconds per call of `a` and of `b`, measured in alternating batches so that both
/// see the same machine.
pub(crate) fn paired(
    mut a: impl FnMut(),
    mut b: impl FnMut(),
    rounds: usize,
    batch: Duration,
) -> (f64, f64) {
    let (na, nb) = (calls_for(&mut a, batch), calls_for(&mut b, batch));
    let mut sa = Vec::with_capacity(rounds);
    let mut sb = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        sa.push(time_batch(&mut a, na));
        sb.push(time_batch(&mut b, nb));
    }
    (median(&mut sa), median(&mut sb))
}

/// How many calls take about `batch` (at least one).
fn calls_for(f: &mut impl FnMut(), batch: Duration) -> usize {
    f(); // warm up
    let mut n = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        let el = t.elapsed();
        if el >= batch / 4 || n >= 1 << 24 {
            let per = el.as_secs_f64() / n as f64;
            return ((batch.as_secs_f64() / per.max(1e-12)) as usize).clamp(1, 1 << 26);
        }
        n *= 4;
    }
}

fn time_batch(f: &mut impl FnMut(), n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    black_box(());
    t.elapsed().as_secs_f64() / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Seconds as a short human string (ns, µs, ms, s).
pub(crate) fn fmt_secs(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Bytes per second as GB/s.
pub(crate) fn fmt_rate(bytes: u64, secs: f64) -> String {
    format!("{:.2} GB/s", bytes as f64 / secs / 1e9)
}
