"""A joblib call that replaces the backend's executor (here: another worker count) while tasks
of the old executor still run must let them finish: loky's ``shutdown(wait=False)`` drops the
executor's manager thread and call queue, and the backend, had it looked for them only after
the shutdown, took the old workers for orphans and killed them (SIGKILL) under their tasks.
"""

import subprocess
import sys

import pytest

pytest.importorskip("joblib")

SCRIPT = r"""
import os, signal, sys, threading, time
import joblib, stridemap.pools
from stridemap.integrations import joblib_backend


def slow(i, marks):
    open(os.path.join(marks, str(i)), "w").close()  # running
    time.sleep(1.0)
    return i * 10, os.getpid(), time.monotonic()


def run(n_jobs, tasks):
    try:
        return joblib.Parallel(n_jobs=n_jobs, backend="stridemap")(tasks)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    marks = sys.argv[1]
    old = []
    caller = threading.Thread(target=lambda: old.append(
        run(2, (joblib.delayed(slow)(i, marks) for i in range(2)))))
    caller.start()
    deadline = time.monotonic() + 60
    while len(os.listdir(marks)) < 2:
        if time.monotonic() > deadline:
            sys.exit("the old executor's tasks never started")
        time.sleep(0.005)
    ex = joblib_backend._executor[1]
    manager = ex._executor_manager_thread
    replaced_at = time.monotonic()
    # Another worker count, another executor: the old one is shut down under its tasks.
    print("new call", run(3, (joblib.delayed(abs)(-i) for i in range(6))))
    print("replaced", joblib_backend._executor is None or joblib_backend._executor[1] is not ex)
    caller.join(60)
    manager.join(60)
    if caller.is_alive() or manager.is_alive():
        sys.exit("the old call or its executor's shutdown hung")
    workers = {p.pid: p.exitcode for p in ex._processes.started}
    print("old workers killed", sum(c == -signal.SIGKILL for c in workers.values()),
          "exit codes", sorted(workers.values(), key=str))
    if isinstance(old[0], str):
        sys.exit(f"the old call failed: {old[0]}")
    print("old results", [r[0] for r in old[0]])
    print("old tasks ran in the old workers", {r[1] for r in old[0]} <= set(workers))
    # The replacement came while both old tasks still ran (each runs 1 s after its mark).
    print("replaced before the old tasks ended", replaced_at + 0.5 < min(r[2] for r in old[0]))
    stridemap.pools.shutdown_backend()
"""


def test_a_replaced_executors_running_tasks_finish_and_its_workers_are_not_killed(tmp_path):
    script = tmp_path / "replaced.py"
    script.write_text(SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        out = subprocess.run([sys.executable, str(script), str(marks)], capture_output=True,
                             text=True, timeout=180)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung: {e.stdout!r}")
    print(out.stdout, out.stderr[-2000:])
    assert "old workers killed 0 " in out.stdout, out.stdout + out.stderr[-3000:]
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "old results [0, 10]" in out.stdout, out.stdout
    assert "old tasks ran in the old workers True" in out.stdout, out.stdout
    assert "replaced before the old tasks ended True" in out.stdout, out.stdout
    assert "replaced True" in out.stdout, out.stdout
    assert "new call [0, 1, 2, 3, 4, 5]" in out.stdout, out.stdout
