"""What a receiver may do with an array of a *writable* segment (``stridemap.empty``) that a pool
handed it: a pool (``multiprocessing``, ``concurrent.futures``, joblib's default backend once
``stridemap.pools`` is imported) hands it read-only, arguments and results alike, so a task that
writes into its argument fails loudly instead of writing into the caller's array; joblib's
``"stridemap"`` backend maps it as ``mmap_mode`` says ("r": read-only, "c": private
copy-on-write, "r+"/"w+": shared writes), and its results copy-on-write.

A user's trial found the caller's array changed by a task (the README promised read-only
views): these tests fail on that code."""

import concurrent.futures
import multiprocessing

import numpy as np
import pytest

import joblib
import lokyparity
import procmaps
import stridemap
import stridemap.pools


def write_into(a, value):
    """In a worker: write into the argument; what happened."""
    try:
        a[0] = value
    except ValueError as e:
        return f"refused: {e}"
    return "written"


def made(value):
    """In a worker: an ``empty()`` result."""
    a = stridemap.empty(1000, "<f8")
    a[:] = value
    return a


@pytest.fixture(scope="module")
def pool():
    stridemap.pools.install()
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=ctx, initializer=stridemap.pools.install) as ex:
        yield ex


def test_a_pool_task_cannot_write_into_the_callers_array(pool):
    s = stridemap.empty(1000, "<f8")
    s[:] = 5.0
    got = pool.submit(write_into, s, 4.0).result()
    assert got.startswith("refused") and "read-only" in got, got
    assert float(s[0]) == 5.0
    got = pool.submit(write_into, s[::-2], 4.0).result()  # a view of it, the same
    assert got.startswith("refused"), got
    assert bool((s == 5.0).all())


def test_a_pool_result_is_read_only_and_handed_on_read_only(pool):
    r = pool.submit(made, 3.0).result()
    assert not r.flags.writeable and bool((r == 3.0).all())
    with pytest.raises(ValueError, match="read-only"):
        r[0] = 1.0
    got = pool.submit(write_into, r, 4.0).result()  # handed on to a task
    assert got.startswith("refused"), got
    assert bool((r == 3.0).all())


@pytest.mark.parametrize("where", ["/dev/shm", "disk"])
def test_a_pool_hands_a_writable_memmap_on_read_only(where, tmp_path):
    """``install(numpy=True)`` describes np.memmap views in place: a task gets them read-only,
    a memmap file in /dev/shm (the default temp root) or on disk alike."""
    import os
    import tempfile

    folder = tempfile.mkdtemp(dir="/dev/shm") if where == "/dev/shm" else str(tmp_path)
    path = os.path.join(folder, "m.bin")
    stridemap.pools.install(numpy=True)
    ctx = multiprocessing.get_context("spawn")
    try:
        m = np.memmap(path, dtype="<f8", mode="w+", shape=(200_000,))  # above max_nbytes
        m[:] = 5.0
        with concurrent.futures.ProcessPoolExecutor(
                1, mp_context=ctx, initializer=stridemap.pools.install) as ex:
            got = ex.submit(write_into, m[::-1], 4.0).result()
        assert got.startswith("refused") and "read-only" in got, got
        assert bool((m == 5.0).all())
        del m
    finally:
        stridemap.pools.install()
        os.unlink(path)
        if where == "/dev/shm":
            os.rmdir(folder)


def test_joblib_default_backend_with_pools_imported_hands_it_read_only():
    s = stridemap.empty(1000, "<f8")
    s[:] = 5.0
    for mmap_mode in ("r", "c"):
        got = joblib.Parallel(n_jobs=2, backend="loky", mmap_mode=mmap_mode)(
            joblib.delayed(write_into)(s, 4.0) for _ in range(2))
        assert all(g.startswith("refused") for g in got), (mmap_mode, got)
        assert bool((s == 5.0).all()), mmap_mode


# mmap_mode -> (writable in the worker, its mapping, the caller sees the worker's write)
MODES = {"r": (False, "r--s", False), "c": (True, "rw-p", False),
         "r+": (True, "rw-s", True), "w+": (True, "rw-s", True)}


@pytest.mark.parametrize("mmap_mode", list(MODES))
def test_the_stridemap_backend_maps_it_as_mmap_mode_says(mmap_mode):
    writeable, perms, seen = MODES[mmap_mode]
    s = stridemap.empty(300_000, "<f8")  # above joblib's max_nbytes
    s[:] = 5.0
    with joblib.parallel_config(backend="stridemap", n_jobs=2, mmap_mode=mmap_mode):
        [how] = joblib.Parallel()([joblib.delayed(lokyparity.received)(s)])
        assert (how["writeable"], how["perms"]) == (writeable, perms), how
        [got] = joblib.Parallel()([joblib.delayed(write_into)(s, 4.0)])
    assert got == ("written" if writeable else got) and (writeable or "read-only" in got), got
    assert float(s[0]) == (4.0 if seen else 5.0), (mmap_mode, float(s[0]))


def test_the_stridemap_backend_returns_results_copy_on_write():
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        got = joblib.Parallel()(joblib.delayed(made)(float(i)) for i in range(4))
    for i, g in enumerate(got):
        assert g.flags.writeable and bool((g == float(i)).all())
        assert procmaps.mapping(g)[0] == "rw-p", procmaps.mapping(g)  # private to this process
