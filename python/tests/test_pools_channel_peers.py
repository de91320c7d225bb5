"""The parent lets go of its fd-channel connection to a worker once that worker is gone: ten
executors, shut down one after the other, leave no socket per worker behind (the soak found one
socket kept per worker ever received from)."""

import concurrent.futures
import multiprocessing
import os

import stridemap
import stridemap.pools


def make(n):
    a = stridemap.empty((n,), "<i8")
    a[:] = 1
    return a.freeze()


def sockets():
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return n


def test_connections_to_exited_workers_are_closed():
    stridemap.pools.install()
    ctx = multiprocessing.get_context("forkserver")
    before = None
    for round_ in range(10):
        with concurrent.futures.ProcessPoolExecutor(
                2, mp_context=ctx, initializer=stridemap.pools.install) as ex:
            for r in [ex.submit(make, 1000) for _ in range(8)]:
                assert int(r.result(timeout=60).sum()) == 1000
        if round_ == 0:
            before = sockets()  # the forkserver's and this round's connections are made
    # Each new executor's first result prunes the connections to the last one's workers.
    assert sockets() <= before + 2, (before, sockets())
