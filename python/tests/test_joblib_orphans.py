"""The joblib backend's workers are stopped even when loky's manager thread, which alone joins
them, has died: the second new-user trial of issue #19 saw it die of ``EMFILE`` in psutil while
it killed the workers after a failed call, and the interpreter's exit then waited on those
workers for good. Here its ``kill_process_tree`` fails the same way, on purpose.
"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("joblib")

SCRIPT = r"""
import errno, os, sys, time, threading
import numpy as np, joblib, stridemap, stridemap.pools
import joblib.externals.loky.process_executor as pe


def pid(_):
    return os.getpid()


def emfile(process):
    raise OSError(errno.EMFILE, "Too many open files")


if __name__ == "__main__":
    threading.excepthook = lambda args: print("thread died:", args.exc_type.__name__,
                                               flush=True)
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        pids = set(joblib.Parallel()(joblib.delayed(pid)(i) for i in range(8)))
    pe.kill_process_tree = emfile
    stridemap.pools.shutdown_backend(kill_workers=True)
    alive = []
    for p in pids:
        try:
            os.kill(p, 0)
            alive.append(p)
        except ProcessLookupError:
            pass
    print("workers alive after shutdown", len(alive))
    print("leaving", time.monotonic(), flush=True)
"""


def test_workers_whose_manager_thread_died_do_not_hold_up_the_exit(tmp_path):
    script = tmp_path / "orphans.py"
    script.write_text(SCRIPT)
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the exit hung: {e.stdout!r}")
    print(out.stdout, out.stderr[-2000:])
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "thread died: OSError" in out.stdout, "the manager thread did not die: nothing shown"
    assert "workers alive after shutdown 0" in out.stdout
