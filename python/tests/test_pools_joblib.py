"""The joblib backend "stridemap": joblib's failing cases, and loky's process-wide executor left
alone.

joblib 1.6 with its default backend gives wrong values for ``m[::-1]``, ``m[8::-2]``,
``m[500:490:-1]`` and ``m.T`` of an ``np.memmap``, and its worker dies (SIGSEGV) on ``m.T[::-1]``
(joblib #1019); through "stridemap" each arrives exactly, described in place (no copy: the
worker's data pointer lies in the memmap's own file).
"""

import os

import numpy as np
import pytest

import joblib
from joblib.externals.loky import reusable_executor
import poolwork
import stridemap
import stridemap.pools
from stridemap.integrations import joblib_backend

# name -> (the memmap it views: "1d" (1000,) or "2d" (30, 40), the view)
FAILING = {
    "m[::-1]": ("1d", lambda m: m[::-1]),
    "m[8::-2]": ("1d", lambda m: m[8::-2]),
    "m[500:490:-1]": ("1d", lambda m: m[500:490:-1]),
    "m.T": ("2d", lambda m: m.T),
    "m.T[::-1]": ("2d", lambda m: m.T[::-1]),
    "m[:, ::-1]": ("2d", lambda m: m[:, ::-1]),
}


@pytest.fixture(scope="module")
def memmaps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memmaps")
    one = np.memmap(folder / "one.bin", dtype="<f8", mode="w+", shape=(1000,))
    one[:] = np.arange(1000)
    two = np.memmap(folder / "two.bin", dtype="<i4", mode="w+", shape=(30, 40))
    two[:] = np.arange(1200).reshape(30, 40)
    one.flush(), two.flush()
    yield {"1d": one, "2d": two}
    stridemap.pools.shutdown_backend()


def test_joblib_failing_cases_arrive_exactly_and_in_place(memmaps):
    views = {name: view(memmaps[which]) for name, (which, view) in FAILING.items()}
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        got = joblib.Parallel()(joblib.delayed(poolwork.probe)(v) for v in views.values())
    problems = []
    for (name, v), g in zip(views.items(), got):
        want = np.array(v)
        if g["bytes"] != want.tobytes() or tuple(g["shape"]) != want.shape:
            problems.append(f"{name}: wrong values")
        if g["strides"] != v.strides:
            problems.append(f"{name}: strides {g['strides']} != {v.strides}")
        if g["mapping"] != os.path.realpath(v.filename):
            problems.append(f"{name}: not in place: the data lies in {g['mapping']!r}")
    assert not problems, problems


def test_results_come_back_shared(memmaps):
    """A worker's new large array comes back as a memfd; a view of a received one in place."""
    big = np.arange(300_000.0)
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        doubled, reversed_view = joblib.Parallel()(
            [joblib.delayed(np.multiply)(big, 2.0), joblib.delayed(np.flip)(memmaps["2d"])]
        )
    assert np.array_equal(doubled, big * 2)
    assert poolwork.zero_copy(poolwork.mapping_of(doubled))
    assert np.array_equal(reversed_view, np.flip(memmaps["2d"]))
    assert poolwork.mapping_of(reversed_view) == os.path.realpath(memmaps["2d"].filename)


def test_small_and_object_arrays_are_pickled():
    small = np.arange(10.0)
    objects = np.array([{"a": 1}, None], dtype=object)
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        got, back = joblib.Parallel()(
            [joblib.delayed(poolwork.probe)(small), joblib.delayed(np.ndarray.tolist)(objects)]
        )
    assert got["bytes"] == small.tobytes()
    assert not poolwork.zero_copy(got["mapping"])
    assert back == [{"a": 1}, None]


def test_loky_reusable_executor_is_left_alone():
    """The backend runs its own workers; a later default Parallel() reuses loky's executor."""
    first = set(joblib.Parallel(n_jobs=2)(joblib.delayed(poolwork.pid)() for _ in range(8)))
    shared_executor = reusable_executor._executor
    assert shared_executor is not None
    workers = set(shared_executor._processes)  # loky starts all of them at once
    assert first <= workers
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        ours = set(joblib.Parallel()(joblib.delayed(poolwork.pid)() for _ in range(8)))
    assert not ours & workers, "the stridemap backend ran on loky's reusable executor"
    assert joblib_backend._executor[1] is not shared_executor
    again = set(joblib.Parallel(n_jobs=2)(joblib.delayed(poolwork.pid)() for _ in range(8)))
    assert reusable_executor._executor is shared_executor
    assert shared_executor._flags.broken is None and not shared_executor._flags.shutdown
    assert again <= workers, "loky's reusable executor was restarted"
    assert set(shared_executor._processes) == workers


def _fail(x):
    raise ValueError(f"task {x} fails")


def test_a_failing_task_leaves_the_backend_usable():
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        with pytest.raises(ValueError, match="task 3 fails"):
            joblib.Parallel()(joblib.delayed(_fail)(x) for x in [3])
        a = stridemap.share(np.arange(5000.0))
        got = joblib.Parallel()(joblib.delayed(poolwork.probe)(a[::-1]) for _ in range(2))
    assert all(g["bytes"] == a[::-1].tobytes() for g in got)
