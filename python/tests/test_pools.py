"""stridemap.pools: the matrix {start method} x {pool} x {layout} x {argument, result}.

Each case is compared byte for byte with numpy and proves zero-copy in the receiver: the data
pointer lies in a ``memfd:`` or ``stridemap-`` mapping of the receiver's ``/proc/self/maps``
(an empty array has no byte to map: it is counted, and said to be vacuous). One pool per
(start method, pool kind) serves every case of that pool. The counts are printed at the end of
the run (conftest.py).
"""

import concurrent.futures
import multiprocessing
import warnings

import numpy as np
import pytest

import joblib
import joblib.externals.loky as jloky
from joblib.externals.loky.backend import context as loky_context
import poolwork
import stridemap
import stridemap.pools
from poolwork import LAYOUTS

METHODS = ("fork", "spawn", "forkserver")
KINDS = ("Pool", "ProcessPoolExecutor", "joblib stridemap", "joblib default")

MATRIX = poolwork.MATRIX = {"passed": 0, "failed": [], "vacuous": [], "not run": []}


def _shutdown_reusable():
    """Stop loky's process-wide executor (joblib's default backend), so that the next default
    Parallel starts one with loky's current start method."""
    from joblib.externals.loky import reusable_executor

    ex = reusable_executor._executor
    if ex is not None:
        ex.shutdown(wait=True)
        reusable_executor._executor = None


class Runner:
    """Run one function on one argument in a pool of two workers."""

    def __init__(self, method, kind):
        self.method, self.kind = method, kind
        self.pool = None
        ctx = multiprocessing.get_context(method)
        if kind == "Pool":
            self.pool = ctx.Pool(2, initializer=stridemap.pools.install)
        elif kind == "ProcessPoolExecutor":
            self.pool = concurrent.futures.ProcessPoolExecutor(
                2, mp_context=ctx, initializer=stridemap.pools.install
            )
        elif kind == "joblib default":
            _shutdown_reusable()
            loky_context.set_start_method(method, force=True)

    def __call__(self, fn, arg):
        if self.kind == "Pool":
            return self.pool.apply(fn, (arg,))
        if self.kind == "ProcessPoolExecutor":
            return self.pool.submit(fn, arg).result()
        if self.kind == "joblib stridemap":
            config = dict(backend="stridemap", n_jobs=2, start_method=self.method)
        else:
            config = dict(backend="loky", n_jobs=2)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`fork` start method should not be used")
            with joblib.parallel_config(**config):
                return joblib.Parallel()([joblib.delayed(fn)(arg)])[0]

    def close(self):
        if self.kind == "Pool":
            self.pool.close()
            self.pool.join()
        elif self.kind == "ProcessPoolExecutor":
            self.pool.shutdown()
        elif self.kind == "joblib stridemap":
            stridemap.pools.shutdown_backend()
        else:
            _shutdown_reusable()
            loky_context.set_start_method(None, force=True)


@pytest.fixture(scope="module", params=[(m, k) for m in METHODS for k in KINDS],
                ids=lambda p: f"{p[0]}-{p[1].replace(' ', '_')}")
def runner(request):
    method, kind = request.param
    previous = stridemap.pools.installed()
    stridemap.pools.install()
    if kind == "joblib default" and method == "fork":
        # loky's process-wide executor refuses fork; the case exists, and is said not to run.
        with warnings.catch_warnings(), pytest.raises(ValueError, match="fork"):
            warnings.filterwarnings("ignore", "`fork` start method should not be used")
            jloky.get_reusable_executor(2, context="fork")
        yield None
        return
    r = Runner(method, kind)
    try:
        yield r
    finally:
        r.close()
        if previous is None:
            stridemap.pools.uninstall()


def _check(where, name, sent_strides, got, want):
    """Compare one received array (its probe) with numpy's; record the case."""
    case = f"{where} {name}"
    problems = []
    if got["dtype"] != want.dtype.str or tuple(got["shape"]) != want.shape:
        problems.append(f"dtype/shape {got['dtype']} {got['shape']} != {want.dtype.str} "
                        f"{want.shape}")
    elif got["bytes"] != want.tobytes():
        problems.append("bytes differ")
    # Strides of axes of length 0 or 1 never address a byte (a descriptor may write them 0).
    live = [(g, s) for g, s, n in zip(got["strides"], sent_strides, want.shape)
            if n > 1 and want.size > 0]
    if any(g != s for g, s in live):
        problems.append(f"strides {got['strides']} != the sender's {sent_strides}")
    if want.nbytes == 0:
        MATRIX["vacuous"].append(case)
    elif not poolwork.zero_copy(got["mapping"]):
        problems.append(f"copied: the data lies in {got['mapping']!r}")
    if problems:
        MATRIX["failed"].append(f"{case}: {'; '.join(problems)}")
    else:
        MATRIX["passed"] += 1
    return problems


def _where(runner, direction):
    return f"{runner.method} x {runner.kind} x {direction}:" if runner else ""


def _not_run(request, direction):
    method, kind = request.node.callspec.params["runner"]
    for name in LAYOUTS:
        MATRIX["not run"].append(
            f"{method} x {kind} x {direction}: {name} (loky's process-wide executor, which "
            "joblib's default backend uses, refuses the fork start method)"
        )


def test_arguments(runner, request):
    if runner is None:
        _not_run(request, "argument")
        return
    arrays = [poolwork.shared(name) for name in LAYOUTS]
    got = runner(poolwork.probe_all, arrays)
    where = _where(runner, "argument")
    problems = []
    for name, a, g in zip(LAYOUTS, arrays, got):
        problems += _check(where, name, a.strides, g, poolwork.expected(name))
    assert not problems, problems


def test_results(runner, request):
    if runner is None:
        _not_run(request, "result")
        return
    got = runner(poolwork.make_all, LAYOUTS)
    where = _where(runner, "result")
    problems = []
    for name, (a, sent_strides) in zip(LAYOUTS, got):
        problems += _check(where, name, sent_strides, poolwork.probe(a), poolwork.expected(name))
    assert not problems, problems
