"""The soak, in its CI form: ``python -m stridemap.bench.soak --quick`` (5,000 tasks through
``multiprocessing.Pool``, ``ProcessPoolExecutor`` and joblib's ``"stridemap"`` backend, 1% of
them killing their worker with SIGKILL), run once in a subprocess; its report is asserted here.
It runs with its temp root on disk and without the memmaps in /dev/shm (a test of its own shows
those reach the workers: the first bug it found, fixed since).

What holds today is asserted plainly. What the soak found broken is a strict xfail naming the
bug, so that the fix turns it into a failure here until the marker goes:

- (fixed: the sender now names the kind) a named segment (``share(kind="file")``) in a tmpfs root
  (/dev/shm, the default) or a view of an ``np.memmap`` in /dev/shm could not be received by a
  pool worker: ``NotSealed`` (O9), since a tmpfs file answers ``F_GET_SEALS``;
- a ``multiprocessing.Pool`` worker killed before the parent fetched the fd of a result it had
  returned: that result is lost (a stand-in that raises ``OpenFailed`` where it is used; the
  result handler no longer ends), where plain ``multiprocessing`` would have delivered it, so
  the soak counts it as collateral. The fd would have to travel with the result (or be pushed
  to the parent at return) to survive its worker;
- (fixed: test_pools_broken.py) fds offered for tasks that a broken ``ProcessPoolExecutor`` or
  joblib call had already pickled were never fetched: the parent kept them (and the arrays they
  hold: a named input segment was never deleted) until it exited; and a broken loky pool's
  feeder thread, blocked on the call queue's full pipe, held the tasks still in its buffer for
  good;
- (fixed: test_pools_channel_peers.py, and pruned when a peer goes) the parent kept its
  fd-channel connection to every worker it received a result from, after the worker was gone.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

POOLS = ("multiprocessing.Pool", "ProcessPoolExecutor", 'joblib "stridemap"')
COLUMNS = ("pool", "tasks", "not run", "killed", "lost", "of which killed", "collateral", "exact",
           "wrong", "errors", "hangs", "leftovers", "swept folders", "wall")


def _soak(*args, timeout=300):
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "stridemap.bench.soak", *args],
                         capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    lines = out.stdout.splitlines()
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[0] in POOLS:
            row = dict(zip(COLUMNS, cells))
            for k in COLUMNS[1:11] + ("swept folders",):
                row[k] = int(row[k])
            rows[cells[0]] = row
    return {"rc": out.returncode, "stdout": out.stdout, "stderr": out.stderr, "rows": rows,
            "fails": [line for line in lines if line.startswith("FAIL ")],
            "verdict": next((line for line in lines if line.startswith("verdict: ")), None),
            "elapsed": elapsed}


@pytest.fixture(scope="module")
def quick():
    r = _soak("--quick", "--temp-base", tempfile.gettempdir(),
              "--kinds", "memfd,file,disk_memmap,plain")
    print(r["stdout"])
    print(f"the quick soak took {r['elapsed']:.1f} s")
    assert r["verdict"] is not None, (r["stdout"][-3000:], r["stderr"][-3000:])
    assert set(r["rows"]) == set(POOLS), r["stdout"]
    return r


def _fails(r, pool, pattern):
    return [f for f in r["fails"] if f.startswith(f"FAIL {pool}:") and re.search(pattern, f)]


def test_the_quick_form_runs_every_pool_and_kills(quick):
    for pool, row in quick["rows"].items():
        assert row["tasks"] >= 1600, row
        assert row["killed"] >= 5, row  # 1% of 1,666: the kills did happen
        assert row["exact"] > 0, row
    assert quick["elapsed"] < 240, quick["elapsed"]


def test_every_result_that_comes_back_is_exact(quick):
    for pool, row in quick["rows"].items():
        assert row["wrong"] == 0, (pool, _fails(quick, pool, "wrong"))


def test_every_killed_task_is_reported_lost(quick):
    for pool, row in quick["rows"].items():
        assert row["of which killed"] == row["killed"], (pool, row)
        assert not _fails(quick, pool, "not reported lost|no outcome"), quick["fails"]


def test_no_files_are_left_after_the_sweep(quick):
    for pool in POOLS:
        assert not _fails(quick, pool, "files left after the sweep"), quick["fails"]


# Not strict: the kill has to come before the parent fetched a result the worker returned (a
# race, which a few of the 17 kills of this run win).
@pytest.mark.xfail(strict=False, reason="a killed worker's unfetched results are lost "
                   "(module docstring)")
def test_multiprocessing_pool_loses_only_the_killed_tasks_and_never_hangs(quick):
    row = quick["rows"]["multiprocessing.Pool"]
    assert row["collateral"] == 0 and row["hangs"] == 0 and row["errors"] == 0, \
        _fails(quick, "multiprocessing.Pool", ".")


def test_the_parent_is_back_at_its_baseline(quick):
    for pool, row in quick["rows"].items():
        assert row["leftovers"] == "none", (pool, row["leftovers"])
    assert not [f for f in quick["fails"] if f.startswith("FAIL parent")], quick["fails"]


def test_the_verdict_is_pass(quick):
    assert quick["rc"] == 0 and quick["verdict"] == "verdict: PASS", quick["fails"]


def test_the_soak_reports_a_wrong_result():
    """The soak can fail: a task made to return a wrong checksum is reported, and the run
    fails."""
    r = _soak("--tasks", "40", "--pools", "cf", "--kill", "0", "--kinds", "memfd,plain",
              "--inject-wrong", "7", "--settle", "2", timeout=120)
    assert r["rows"]["ProcessPoolExecutor"]["wrong"] == 1, r["stdout"]
    assert any("task 7" in f or "(7," in f for f in r["fails"]), r["fails"]
    assert r["rc"] == 1 and r["verdict"] == "verdict: FAIL", r["stdout"]


def test_named_segments_and_memmaps_in_dev_shm_reach_the_workers():
    """Named segments in the default root (/dev/shm) and memmaps there, no kills: every task
    comes back exact."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    r = _soak("--tasks", "100", "--pools", "cf", "--kill", "0", "--kinds", "file,shm_memmap",
              "--settle", "2", timeout=120)
    row = r["rows"]["ProcessPoolExecutor"]
    assert row["exact"] == row["tasks"] and row["lost"] == 0, r["fails"]
