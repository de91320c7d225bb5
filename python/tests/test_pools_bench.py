"""The pools' benchmark, as a smoke run: ``python -m stridemap.bench --quick`` (1 MiB, one
repeat) runs every way, checks what the workers read, and prints its tables."""

import subprocess
import sys


def test_bench_quick_runs_and_reports_every_way():
    out = subprocess.run(
        [sys.executable, "-m", "stridemap.bench", "--quick"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for row in ("| 1 MiB | first |", "| 1 MiB | repeated |", "| 1 MiB | results |",
                "| 1 MiB | results, whole |"):
        cells = next(line for line in lines if line.startswith(row)).split("|")
        assert all(c.strip().endswith(("ms", " s", "x")) for c in cells[3:-1]), cells
    # joblib's failing views: whatever joblib does, the stridemap backend is exact.
    views = [line for line in lines if line.startswith("| `m")]
    assert len(views) == 2 and all(line.rstrip(" |").endswith("exact") for line in views), views
    # Many arrays in one task: every way ran and was exact (the bench checks the values).
    for way in ("pickle", "shared_memory, a block per array", "shared_memory, one block",
                "stridemap.share_many"):
        assert any(line.startswith(f"| {way} |") for line in lines), way
    # Where a handoff's time goes: every step measured, a hit cheaper than a miss.
    steps = dict((c[1].strip(), float(c[2])) for c in (line.split("|") for line in lines)
                 if len(c) == 4 and c[2].strip().replace(".", "").isdigit())
    for step in ("record", "fd for the receiver", "offer", "fetch fd", "checks", "map",
                 "cache hit", "pickle", "unpickle (miss)", "unpickle (hit)",
                 "shared_memory: attach, view, detach"):
        assert step in steps and steps[step] > 0, (step, steps)
    assert steps["unpickle (hit)"] < steps["unpickle (miss)"], steps
