"""A plain ndarray changed in place between two handoffs reaches the worker as it is now, never
as a stale copy (issue 18 review: share()'s identity reuse served the first copy again), while
one joblib call still copies an array it passes to many tasks only once."""

import concurrent.futures
import multiprocessing

import joblib
import numpy as np
import pytest

import stridemap
import stridemap.pools

N = 1 << 18  # 2 MiB of f64: above max_nbytes


def first(a):
    return float(a[0])


def segment_id(a):
    seg = stridemap.segment_of(a)
    return seg.segment_id.hex() if seg is not None else None


@pytest.fixture
def numpy_policy():
    before = stridemap.pools.installed()
    stridemap.pools.install(numpy=True)
    yield
    stridemap.pools.uninstall()
    if before is not None:
        stridemap.pools.install(numpy=before.numpy, max_nbytes=before.max_nbytes)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_sees_each_change(numpy_policy, method):
    a = np.zeros(N)
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(1) as pool:
        for value in (1.0, 7.0, 3.0):
            a[0] = value
            assert pool.apply(first, (a,)) == value
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        for value in (2.0, 5.0):
            a[0] = value
            assert ex.submit(first, a).result() == value


def test_joblib_sees_each_change_between_calls_and_copies_once_per_call():
    a = np.zeros(N)
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        for value in (1.0, 7.0):
            a[0] = value
            got = joblib.Parallel()(joblib.delayed(first)(a) for _ in range(4))
            assert got == [value] * 4
            ids = set(joblib.Parallel()(joblib.delayed(segment_id)(a) for _ in range(6)))
            assert len(ids) == 1 and None not in ids, ids  # one copy for the whole call
