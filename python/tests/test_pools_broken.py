"""A broken pool lets go of what it had offered.

When a ``ProcessPoolExecutor`` or a joblib call (loky) breaks because a worker was killed, the
tasks already pickled into its call queue are never read, and the fds offered for their arrays
are never fetched. The parent kept them (and the arrays they hold: a named segment stayed on
disk) until it exited — the soak's strict xfail. They now belong to the call queue and are
withdrawn once the pool is gone (transport/queue_offers.py).

Each case runs in a fresh interpreter: it kills workers, and counts the parent's offers and the
named segment's file, which it owns.
"""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import gc, os, sys, time
import numpy as np, stridemap, stridemap.pools
from stridemap.transport import channel


def die(_=None):
    time.sleep(1)  # the tasks behind this one are pickled into the queue by now
    os._exit(9)


def first(a):
    return float(a[0])


def slow_first(a):
    time.sleep(1)  # the other worker is busy when the first dies
    return float(a[0])


def settle(seconds=30):
    # The first task's fd is released by a message from the worker: wait for what is in flight.
    deadline = time.monotonic() + seconds
    while channel.pending() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    return channel.pending()


def broken_executor(a):
    import concurrent.futures, multiprocessing
    ex = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"))
    assert ex.submit(first, a[1:]).result(60) == 1.0
    futures = [ex.submit(die)] + [ex.submit(first, a[i:]) for i in range(2, 6)]
    time.sleep(0.5)
    queued = channel.pending()
    concurrent.futures.wait(futures, timeout=60)
    broken = sum(type(f.exception()).__name__ == "BrokenProcessPool" for f in futures)
    ex.shutdown(wait=True)
    return broken, queued, ex


def broken_joblib(a):
    import joblib, threading
    from joblib.externals.loky.process_executor import TerminatedWorkerError
    seen = []
    def watch():  # what is offered while the dying worker sleeps
        time.sleep(0.7)
        seen.append(channel.pending())
    threading.Thread(target=watch).start()
    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        par = joblib.Parallel(pre_dispatch="all", batch_size=1)
        try:
            par([joblib.delayed(die)()] +
                [joblib.delayed(slow_first)(a[i:]) for i in range(2, 12)])
        except TerminatedWorkerError:
            broken = 1
        else:
            broken = 0
    return broken, seen[0], None


def clean_shutdown(a):
    # Tasks still queued when shutdown(wait=True) is called all run, with their arrays.
    import concurrent.futures, multiprocessing
    ex = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"))
    futures = [ex.submit(slow_first, a[i:]) for i in range(1, 4)]
    time.sleep(0.5)
    queued = channel.pending()
    ex.shutdown(wait=True)
    print("results", ",".join(str(f.result()) for f in futures))
    return 0, queued, ex


if __name__ == "__main__":
    stridemap.pools.install()
    root = sys.argv[2]
    a = stridemap.share(np.arange(1000.0), kind="file", temp_folder=root)
    path = stridemap.decode(stridemap.describe(a)).path
    cases = {"executor": broken_executor, "joblib": broken_joblib, "clean": clean_shutdown}
    broken, queued, pool = cases[sys.argv[1]](a)
    print("broken", broken)
    print("offered while queued", queued)
    print("offered once the pool is done", settle())
    del a
    gc.collect()
    print("file kept", os.path.exists(path))
    sys.stdout.flush()
    os._exit(0)  # the pool object is still held: its queue was not what let go of the offers
"""


def _run(tmp_path, case):
    script = tmp_path / "broken.py"
    script.write_text(SCRIPT)
    root = tmp_path / "root"
    root.mkdir()
    out = subprocess.run([sys.executable, str(script), case, str(root)], capture_output=True,
                         text=True, timeout=240,
                         env={**os.environ, "STRIDEMAP_POOLS_EXIT_WAIT": "0"})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    print(out.stdout)
    return dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())


@pytest.mark.parametrize("case", ["executor", "joblib"])
def test_a_broken_pool_withdraws_the_offers_of_its_queued_tasks(tmp_path, case):
    got = _run(tmp_path, case)
    assert got["broken"] != "0", "the pool did not break: the test showed nothing"
    assert int(got["offered while queued"]) > 0, \
        "no task was pickled into the queue: the test showed nothing"
    assert got["offered once the pool is done"] == "0"
    assert got["file kept"] == "False", "the named segment outlived every array of it"


def test_a_clean_shutdown_still_runs_the_queued_tasks(tmp_path):
    """The other side: offers are withdrawn only once the workers are joined, so the tasks
    still queued when a pool is shut down get their arrays."""
    got = _run(tmp_path, "clean")
    assert int(got["offered while queued"]) > 0, "nothing was queued: the test showed nothing"
    assert got["results"] == "1.0,2.0,3.0"
    assert got["offered once the pool is done"] == "0"


def test_a_call_queue_collected_under_the_channel_lock_does_not_deadlock():
    """The long soak hung: the fd channel's serving thread, holding the channel's lock,
    allocated, the collector ran, and a collected call queue's finalizer took the same lock to
    withdraw that queue's offers. A finalizer only queues that work now."""
    import gc
    import multiprocessing
    import threading
    from concurrent.futures import process

    from stridemap.transport import channel, queue_offers

    queue_offers.watch_call_queues()
    got = {}

    def feeder(queue):  # what Queue._start_thread passes its feeder, in part
        got["owned"] = queue_offers.owner_of_current_thread()

    queue = process._SafeQueue(
        max_size=1, ctx=multiprocessing.get_context("spawn"), pending_work_items={},
        shutdown_lock=threading.Lock(), thread_wakeup=None)
    t = threading.Thread(target=feeder, args=(queue._on_queue_feeder_error,))
    t.start()
    t.join()
    assert got["owned"] is not None, "the queue's feeder was not recognised"
    queue._reader.close()
    queue._writer.close()
    done = threading.Event()

    def collect_under_the_lock():
        nonlocal queue
        with channel._lock:
            del queue
            gc.collect()  # the queue's finalizer runs here
        channel.pending()  # and its work here
        done.set()

    worker = threading.Thread(target=collect_under_the_lock, daemon=True)
    worker.start()
    assert done.wait(10), "deadlocked on the channel's lock"
