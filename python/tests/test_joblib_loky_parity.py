"""The "stridemap" joblib backend does what joblib's default (loky) backend does where users and
joblib's own tests look (issue 18): a nested ``Parallel(backend="stridemap")`` inside a worker,
``mmap_mode``, byte order through the pickled fallback, writable results.

Where a test is parametrized over ``backend``, the ``"loky"`` case is joblib's own behaviour, the
yardstick: the same assertions hold for both.
"""

import json
import os
import pickle
import subprocess
import sys
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest

import joblib
import lokyparity
import poolwork
import procmaps
import stridemap
import stridemap.pools

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ["loky", "stridemap"]
BIG = 300_000  # float64 elements: 2.4 MB, above joblib's max_nbytes ("1M")

_NESTED = """
import json, sys
import joblib
import stridemap.pools  # the "stridemap" backend, in this (parent) process only
import lokyparity

got = {}
for parent in ("stridemap", "loky"):
    try:
        got[parent] = joblib.Parallel(n_jobs=2, backend=parent)(
            joblib.delayed(lokyparity.nested_sum)(4) for _ in range(2))
    except Exception as e:
        got[parent] = f"{type(e).__name__}: {e}"
print(json.dumps(got))
"""


def test_nested_stridemap_backend_resolves_in_workers():
    """A worker of either backend runs ``Parallel(backend="stridemap")`` although its task's
    module never imports stridemap. In a fresh process: no worker of an earlier test has
    imported stridemap.pools already."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _NESTED], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"stridemap": [6, 6], "loky": [6, 6]}


# mmap_mode -> (writable in the worker, the worker's mapping: shared or private). joblib maps
# its dumped copy of the array with the mode ("w+" as "r+", the file exists).
MMAP_MODES = {"r": (False, "r--s"), "r+": (True, "rw-s"), "w+": (True, "rw-s"),
              "c": (True, "rw-p")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mmap_mode", list(MMAP_MODES))
def test_mmap_mode_is_honoured(backend, mmap_mode):
    writeable, perms = MMAP_MODES[mmap_mode]
    a = np.zeros(BIG)
    got = joblib.Parallel(n_jobs=2, backend=backend, mmap_mode=mmap_mode)(
        joblib.delayed(lokyparity.received)(a) for _ in range(2))
    for g in got:
        assert (g["writeable"], g["perms"]) == (writeable, perms), g
        if backend == "stridemap":
            assert poolwork.zero_copy(g["mapping"]), g
    if writeable:  # the worker writes in place; the caller's arrays are never touched
        # Two arrays: under "r+" joblib gives the tasks of a call that get the same array one
        # shared copy (which task writes last is a race); "stridemap" gives each its own.
        arrays = [np.zeros(BIG), np.zeros(BIG)]
        back = joblib.Parallel(n_jobs=2, backend=backend, mmap_mode=mmap_mode)(
            joblib.delayed(lokyparity.fill)(x, v) for x, v in zip(arrays, (1.0, 2.0)))
        assert [float(b[0]) for b in back] == [1.0, 2.0]
        assert [float(b[-1]) for b in back] == [1.0, 2.0]
        assert not any(x.any() for x in arrays)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("max_nbytes", [1, "1M"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_byte_order_is_kept(backend, max_nbytes, byteorder):
    """Shared (``max_nbytes=1``) and pickled (``"1M"``: the small array is below it)."""
    x = np.arange(6).reshape(2, 3).astype(f"{byteorder}i4")
    got = joblib.Parallel(n_jobs=2, backend=backend, max_nbytes=max_nbytes)(
        joblib.delayed(np.asarray)(x) for _ in range(2))  # the received array, sent back
    seen = joblib.Parallel(n_jobs=2, backend=backend, max_nbytes=max_nbytes)(
        joblib.delayed(lokyparity.received)(x) for _ in range(2))
    for g, s in zip(got, seen):
        assert s["dtype"] == x.dtype.str
        assert g.dtype.str == x.dtype.str
        np.testing.assert_array_equal(g, x)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_fallback_keeps_byte_order_at_any_protocol(protocol):
    """The pools' reducer pickles what it does not share (here every plain ndarray: numpy=False)
    readable by any pickler's protocol, byte order kept (numpy's own pickling below protocol 5
    turns ``>i4`` into ``<i4``), writable like any unpickled array."""
    stridemap.pools.install()
    try:
        for x in (np.arange(6).reshape(2, 3).astype(">i4"), np.asfortranarray(
                np.arange(12.0).reshape(3, 4).astype(">f8"))[:, ::-2], np.zeros((0, 3), ">i2")):
            back = pickle.loads(ForkingPickler.dumps(x, protocol))
            assert back.dtype.str == x.dtype.str
            np.testing.assert_array_equal(back, x)
            assert back.flags.writeable
        objects = np.array([{"a": 1}, None], dtype=object)
        assert pickle.loads(ForkingPickler.dumps(objects, protocol)).tolist() == [{"a": 1}, None]
    finally:
        stridemap.pools.uninstall()


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_results_come_back_writable(backend):
    """joblib returns writable arrays; "stridemap" maps them copy-on-write (private, zero-copy).
    Changes made in the caller then travel with the array to the next task."""
    got = joblib.Parallel(n_jobs=2, backend=backend)(
        joblib.delayed(np.ones)(BIG) for _ in range(2))
    for g in got:
        assert g.flags.writeable
        assert float(g.sum()) == BIG
        if backend == "stridemap":
            assert procmaps.mapping(g)[0] == "rw-p"
            assert poolwork.zero_copy(procmaps.mapping(g)[1])
        g[0] = 5.0
    assert joblib.Parallel(n_jobs=2, backend=backend)(
        joblib.delayed(lokyparity.first)(g) for g in got) == [5.0, 5.0]


def test_shared_inputs_stay_read_only_and_results_of_them_writable():
    """An input from ``stridemap.share`` reaches the worker read-only (as joblib's default
    backend passes it); the same view returned comes back writable, copy-on-write, and the
    shared array itself is never changed."""
    s = stridemap.share(np.arange(float(BIG)))
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        seen = joblib.Parallel()(joblib.delayed(lokyparity.received)(s[::-1]) for _ in range(2))
        back = joblib.Parallel()(joblib.delayed(np.flip)(s) for _ in range(2))
    assert [g["writeable"] for g in seen] == [False, False]
    for b in back:
        assert b.flags.writeable
        b[0] = -1.0
    assert float(s[-1]) == BIG - 1
