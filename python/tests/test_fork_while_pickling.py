"""Forked children never hang on a lock another thread of the parent held at the fork.

A Queue's feeder thread pickles shared arrays while the main thread starts fork-context
Processes: every lock stridemap takes on that path (what it builds on first use, its caches,
its fd channel, its producer state) may be held by the feeder at the moment of a fork, and a
child that then takes it waits forever. ``forkstorm.py`` runs that race in fresh processes (so
that first-use work is in flight at the first forks), each child under a deadline, on the
default temp root (/dev/shm).
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS, FORKS = 3, 100


def _folders_of(pid):
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"stridemap-{pid}-")]


def test_children_forked_while_a_thread_pickles_never_hang(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STRIDEMAP_TEMP_FOLDER"}
    for run in range(RUNS):
        root = tmp_path / f"run{run}"
        root.mkdir()
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "forkstorm.py"), str(FORKS), str(root)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE,
        )
        try:
            out, err = proc.communicate(timeout=600)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, err[-3000:]
        assert out.split() == ["forks", str(FORKS), "hung", "0", "failed", "0"], (
            out, err[-3000:])
        assert _folders_of(proc.pid) == []  # its named segment in /dev/shm went at its exit
