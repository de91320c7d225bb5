"""A receive that fails never hangs or breaks a pool: {start method} x {pool}, both directions.

The failure is made on purpose: an array in a named segment in /dev/shm whose file grew by a
page after it was shared, so the fd the receiver gets is not the length its descriptor says
(SPEC §6 O7). The receive fails with an ``OpenError``, an ``OSError``, which
``multiprocessing.pool.worker`` takes for the end of its input (the worker exits, the task is
lost, ``map`` waits forever), and which breaks a ``ProcessPoolExecutor`` or loky executor as a
whole. Here it must be that one task's exception (the rule and the fix in its message), the
same pool must serve the next tasks, and a result that cannot be received must raise when used.
"""

import pickle
from multiprocessing import reduction

import numpy as np
import pytest

import pooledges
import stridemap
import stridemap.pools
from pooledges import METHODS, POOLS

O7 = r"O7: .*the shared file was resized"


@pytest.fixture(scope="module")
def shm_root():
    mp = pytest.MonkeyPatch()
    mp.delenv("STRIDEMAP_TEMP_FOLDER", raising=False)
    before = stridemap.pools.installed()
    pooledges.install_numpy()
    try:
        yield
    finally:
        if before is None:
            stridemap.pools.uninstall()
        else:
            stridemap.pools.install(numpy=before.numpy, max_nbytes=before.max_nbytes)
        mp.undo()


@pytest.fixture
def runner(request, shm_root):
    method, kind = request.param
    r = pooledges.Runner(kind, method)
    try:
        yield r
    finally:
        r.close()


CASES = [(m, k) for m in METHODS for k in POOLS]
IDS = [f"{m}-{k}" for m, k in CASES]


@pytest.mark.parametrize("runner", CASES, ids=IDS, indirect=True)
def test_an_argument_that_cannot_be_received_fails_its_task_only(runner):
    good = stridemap.share(pooledges.values(2048), kind="file")
    bad = pooledges.grown_file(pooledges.values(2048))
    assert runner.run(pooledges.seen, good)[0] == good.sum()
    with pytest.raises(stridemap.LengthMismatch, match=O7) as e:
        runner.run(pooledges.seen, bad[::2])
    assert e.value.rule == "O7"
    # The same pool goes on (a broken executor would refuse every task from now on).
    for _ in range(3):
        assert runner.run(pooledges.seen, good[::-1])[0] == good.sum()
    with pytest.raises(stridemap.LengthMismatch, match=O7):
        runner.run(pooledges.seen, bad)
    assert runner.run(pooledges.seen, good)[0] == good.sum()


@pytest.mark.parametrize("runner", CASES, ids=IDS, indirect=True)
def test_a_result_that_cannot_be_received_raises_where_it_is_used(runner):
    got = runner.run(pooledges.make_grown, 1500)
    assert not isinstance(got, np.ndarray)
    with pytest.raises(stridemap.LengthMismatch, match=O7):
        np.asarray(got)
    with pytest.raises(stridemap.LengthMismatch, match=O7):
        got.sum()
    good = stridemap.share(pooledges.values(100), kind="file")
    assert runner.run(pooledges.seen, good)[0] == good.sum()


def test_a_pool_map_with_one_array_that_cannot_be_received_raises_and_goes_on(shm_root):
    import multiprocessing

    good = stridemap.share(pooledges.values(512), kind="file")
    bad = pooledges.grown_file(pooledges.values(512))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2, initializer=pooledges.install_numpy) as pool:
        results = [pool.apply_async(pooledges.seen, (a,)) for a in (good, bad, good, bad, good)]
        outcomes = []
        for r in results:
            try:
                outcomes.append(r.get(pooledges.DEADLINE)[0])
            except stridemap.LengthMismatch as e:
                outcomes.append(e.rule)
        assert outcomes == [good.sum(), "O7", good.sum(), "O7", good.sum()]
        with pytest.raises(stridemap.LengthMismatch, match=O7):
            pool.map_async(pooledges.seen, [good, bad, good], chunksize=1).get(
                pooledges.DEADLINE)
        got = pool.map_async(pooledges.seen, [good] * 8, chunksize=1).get(pooledges.DEADLINE)
        assert [g[0] for g in got] == [good.sum()] * 8


USES = {
    "a method": lambda a: a.sum(),
    "an attribute": lambda a: a.shape,
    "np.asarray": np.asarray,
    "a ufunc": lambda a: np.add(a, 1),
    "an operator": lambda a: a + 1,
    "indexing": lambda a: a[0],
    "len": len,
    "iter": iter,
    "bool": bool,
    "pickle": pickle.dumps,
    "a pool's pickler": reduction.ForkingPickler.dumps,
}


@pytest.mark.parametrize("use", USES)
def test_every_use_of_an_array_that_was_not_received_raises_its_error(shm_root, use):
    """In one process: the pickle of a grown segment unpickles, and every use raises."""
    grown = pooledges.grown_file(pooledges.values(64))
    # bytes: the pickler's memoryview of its BytesIO, caught in the cycle of a traceback, makes
    # the gc of Python 3.12.1 crash ("deallocated BytesIO object has exported buffers").
    payload = bytes(reduction.ForkingPickler.dumps(grown[::3]))
    got = pickle.loads(payload)
    with pytest.raises(stridemap.LengthMismatch, match=O7) as e:
        USES[use](got)
    assert e.value.rule == "O7"
    assert "O7" in repr(got) and "not received" in repr(got)
