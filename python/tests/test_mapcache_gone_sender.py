"""Issue #21: the parent keeps its mapping of a worker's result segment past the result's life
(the worker's next result in it is a hit). Once that worker has exited (``maxtasksperchild``,
a worker that crashed, a pool shut down) no later result can come in it, and the mapping is all
that holds the segment's memory: it is let go of at the next sweep, not after the grace and
``mapcache.STILL_FULL`` (10 s by default, here made 60 s so that only the new rule can pass)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

RUN = """
import multiprocessing, sys, time
import stridemap, stridemap.pools
from stridemap.transport import mapcache
sys.path.insert(0, {here!r})
from test_recycle_hollow import _make
import procmaps

def mapped(ino):
    with open("/proc/self/maps") as f:
        return any(len(x) > 4 and x[4] == str(ino) for x in (line.split() for line in f))

stridemap.pools.install()
ctx = multiprocessing.get_context({method!r})
with ctx.Pool(1, maxtasksperchild={per_child}, initializer=stridemap.pools.install) as pool:
    a = pool.apply(_make, ((4 << 20) // 8, 3.0))
    ok = bool((a == 3.0).all())
    ino = procmaps.inode(a)
    kept = mapcache.stats()["recycled"]
    del a
    t0 = time.monotonic()
    while mapcache.stats()["recycled"] and time.monotonic() - t0 < {wait}:
        time.sleep(0.05)
    took = time.monotonic() - t0
    print(f"ok={{ok}} kept={{kept}} left={{mapcache.stats()['recycled']}} "
          f"mapped={{mapped(ino)}} took={{took:.2f}}")
"""


def run(method, per_child, wait):
    env = dict(os.environ, STRIDEMAP_RECYCLE_SECONDS="60", STRIDEMAP_RECYCLE_HOLLOW_SECONDS="60",
               PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))
    code = RUN.format(here=HERE, method=method, per_child=per_child, wait=wait)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    print(method, per_child, p.stdout)
    return dict(w.split("=") for w in p.stdout.split())


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_gone_workers_kept_mapping_is_let_go_at_the_next_sweep(method):
    got = run(method, per_child=1, wait=30)
    assert got["ok"] == "True" and got["kept"] == "1", got
    # Kept 60 s past its last view by the grace alone (STRIDEMAP_RECYCLE_SECONDS): gone within
    # the 30 s waited only because its worker exited (sweeps are half a second apart).
    assert got["left"] == "0" and got["mapped"] == "False", got


def test_a_live_workers_kept_mapping_stays():
    # The counterpart: the same result from a worker that lives on is kept (the sweeps ran
    # meanwhile: 3 s is six of them), for its next result.
    got = run("forkserver", per_child=None, wait=3)
    assert got["ok"] == "True" and got["kept"] == "1", got
    assert got["left"] == "1" and got["mapped"] == "True", got
