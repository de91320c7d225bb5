"""``initializer=stridemap.pools.install`` (the README's remedy for workers that return shared
arrays before they receive one): a bare ``install()`` in a worker takes the policy the parent
installed, under fork, spawn and forkserver, for ``multiprocessing.Pool`` and
``ProcessPoolExecutor``; so results the worker makes itself come back as descriptors (mapped
in the parent: zero-copy), never pickled."""

import concurrent.futures
import dataclasses
import multiprocessing
import pickle

import numpy as np
import pytest

import poolwork
import stridemap
import stridemap.pools
from stridemap.pools import Policy

METHODS = ("fork", "spawn", "forkserver")
N = 1 << 15  # 256 KiB of float64s: above the max_nbytes the parent installs below
PARENT = Policy(numpy=True, max_nbytes=1 << 16)


@pytest.fixture
def parent_policy():
    """The parent installs PARENT; the policy in force before is put back afterwards."""
    previous = stridemap.pools.installed()
    stridemap.pools.install(numpy=PARENT.numpy, max_nbytes=PARENT.max_nbytes)
    try:
        yield PARENT
    finally:
        stridemap.pools.uninstall()
        if previous is not None:
            stridemap.pools.install(**dataclasses.asdict(previous))


def _pool(kind, method, initializer):
    ctx = multiprocessing.get_context(method)
    if kind == "Pool":
        return ctx.Pool(1, initializer=initializer)
    return concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=initializer)


def _run(pool, fn, *args):
    if isinstance(pool, concurrent.futures.Executor):
        return pool.submit(fn, *args).result(timeout=120)
    return pool.apply(fn, args)


def _assert_shared(result, n):
    """The result arrived as a descriptor: a stridemap array mapped from a memfd here."""
    assert stridemap.segment_of(result) is not None, \
        "the worker pickled its result: no stridemap segment backs it here"
    assert poolwork.zero_copy(poolwork.mapping_of(result)), poolwork.mapping_of(result)
    np.testing.assert_array_equal(result, np.arange(float(n)))


@pytest.mark.parametrize("kind", ["Pool", "ProcessPoolExecutor"])
@pytest.mark.parametrize("method", METHODS)
def test_a_bare_install_initializer_takes_the_parents_policy(parent_policy, method, kind):
    with _pool(kind, method, stridemap.pools.install) as pool:
        assert _run(pool, poolwork.installed_policy, None) == parent_policy
        _assert_shared(_run(pool, poolwork.made_here, N), N)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_an_initializer_of_the_users_own_takes_the_policy_of_the_first_array(parent_policy,
                                                                              method):
    # The bare install() runs before anything tells the worker the parent's policy: it is the
    # default until the first array arrives, which brings the parent's.
    a = stridemap.share(np.ones(10))
    with _pool("Pool", method, poolwork.own_initializer) as pool:
        assert _run(pool, poolwork.installed_policy, None) == Policy()
        total, made = _run(pool, poolwork.sum_then_make, a, N)
        assert total == 10.0
        _assert_shared(made, N)
        assert _run(pool, poolwork.installed_policy, None) == parent_policy


def test_a_bare_install_keeps_the_policy_in_force(parent_policy):
    stridemap.pools.install()
    assert stridemap.pools.installed() == parent_policy


def test_install_with_arguments_replaces_the_policy(parent_policy):
    stridemap.pools.install(max_nbytes=10)
    assert stridemap.pools.installed() == Policy(numpy=False, max_nbytes=10)


def test_a_bare_install_with_no_policy_known_installs_the_default(parent_policy):
    stridemap.pools.uninstall()
    stridemap.pools.install()
    assert stridemap.pools.installed() == Policy()


def test_install_pickles_as_itself(parent_policy):
    assert pickle.loads(pickle.dumps(stridemap.pools.install)) is stridemap.pools.install
    stridemap.pools.uninstall()
    assert pickle.loads(pickle.dumps(stridemap.pools.install)) is stridemap.pools.install


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_without_a_parents_policy_the_worker_has_the_default(method):
    previous = stridemap.pools.installed()
    stridemap.pools.uninstall()
    try:
        with _pool("Pool", method, stridemap.pools.install) as pool:
            assert _run(pool, poolwork.installed_policy, None) == Policy()
            result = _run(pool, poolwork.made_here, N)
        assert stridemap.segment_of(result) is None  # the default policy pickles plain arrays
    finally:
        if previous is not None:
            stridemap.pools.install(**dataclasses.asdict(previous))
