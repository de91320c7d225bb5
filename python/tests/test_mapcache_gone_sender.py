"""Issue #21: the parent keeps its mapping of a worker's result segment past the result's life
(the worker's next result in it is a hit). Once that worker has exited (``maxtasksperchild``,
a worker that crashed, a pool shut down) no later result can come in it, and the mapping is all
that holds the segment's memory: it is let go of at the next sweep after its last view, not
after the grace and ``mapcache.STILL_FULL`` (10 s by default, here made 60 s so that only the
new rule can pass). Whether the worker has exited is its pidfd's word, not its connection's: a
living worker whose connection was closed keeps its mapping."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

RUN = """
import multiprocessing, os, sys, time
import stridemap, stridemap.pools
from stridemap.transport import fetch, mapcache
sys.path.insert(0, {here!r})
from test_mapcache_gone_sender import made
import procmaps

def mapped(ino):
    with open("/proc/self/maps") as f:
        return any(len(x) > 4 and x[4] == str(ino) for x in (line.split() for line in f))

def exited(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True

stridemap.pools.install()
ctx = multiprocessing.get_context({method!r})
with ctx.Pool(1, maxtasksperchild={per_child}, initializer=stridemap.pools.install) as pool:
    a, pid = pool.apply(made, (3.0,))
    ok = bool((a == 3.0).all())
    ino = procmaps.inode(a)
    kept = mapcache.stats()["recycled"]
    if {hold!r}:  # the result outlives its worker
        t0 = time.monotonic()
        while not exited(pid) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        time.sleep(1.2)  # two sweeps with the view alive
        ok = ok and bool((a == 3.0).all()) and mapped(ino)
    if {drop_connections!r}:  # closed for any reason but the worker's exit
        for address, c in list(fetch._conns.items()):
            fetch._drop(address, c)
    del a
    t0 = time.monotonic()
    while mapcache.stats()["recycled"] and time.monotonic() - t0 < {wait}:
        time.sleep(0.05)
    took = time.monotonic() - t0
    left, still = mapcache.stats()["recycled"], mapped(ino)
    hits = mapcache.stats()["hits"]
    if {per_child!r} is None:  # the living worker's next result
        b, _ = pool.apply(made, (4.0,))
        ok = ok and bool((b == 4.0).all())
        hits = mapcache.stats()["hits"] - hits
        del b
    print(f"ok={{ok}} kept={{kept}} left={{left}} mapped={{still}} took={{took:.2f}} "
          f"hits={{hits}}")
"""


def made(value):
    """A worker's result: a stridemap.empty() array of 4 MiB, and the worker's pid."""
    import stridemap

    a = stridemap.empty(((4 << 20) // 8,), "<f8")
    a.fill(value)
    return a, os.getpid()


def run(method, per_child, wait, hold=False, drop_connections=False):
    env = dict(os.environ, STRIDEMAP_RECYCLE_SECONDS="60", STRIDEMAP_RECYCLE_HOLLOW_SECONDS="60",
               PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))
    code = RUN.format(here=HERE, method=method, per_child=per_child, wait=wait, hold=hold,
                      drop_connections=drop_connections)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=180, env=env)
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


def test_a_result_held_past_its_workers_exit_stays_and_goes_with_its_last_view():
    got = run("forkserver", per_child=1, wait=30, hold=True)
    assert got["ok"] == "True" and got["kept"] == "1", got  # exact and mapped while held
    assert got["left"] == "0" and got["mapped"] == "False", got


@pytest.mark.parametrize("drop_connections", [False, True])
def test_a_live_workers_kept_mapping_stays(drop_connections):
    # The counterpart: the same result from a worker that lives on is kept (the sweeps ran
    # meanwhile: 3 s is six of them), and its next result is a hit, even when this process's
    # connection to the worker was closed (an error on it, a prune): that says nothing of
    # whether the worker lives.
    got = run("forkserver", per_child=None, wait=3, drop_connections=drop_connections)
    assert got["ok"] == "True" and got["kept"] == "1", got
    assert got["left"] == "1" and got["mapped"] == "True", got
    assert got["hits"] == "1", got


def test_a_sender_counts_as_gone_once_its_process_exited_a_zombie_included():
    import time

    from stridemap.transport import mapcache

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    s = mapcache._Sender(p.pid)
    try:
        assert s.pidfd is not None and not s.exited()
        p.kill()  # not reaped yet: a zombie, whose pid nobody else can have
        t0 = time.monotonic()
        while not s.exited() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert s.exited()
    finally:
        s.close()
        p.wait()
    # Reaped already when first seen (ESRCH): gone from the start. Its own process is never
    # watched (it cannot have exited while it asks).
    assert mapcache._Sender(p.pid).exited()
    assert mapcache._sender(os.getpid()) is None
