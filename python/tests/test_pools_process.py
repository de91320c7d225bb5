"""``multiprocessing.Process`` arguments and ``multiprocessing.Queue`` with stridemap.pools, under
each start method: a shared array goes to a child as a Process argument (spawn and forkserver
pickle it while they start the child: the fd is inherited) and through a Queue, and the child's
result comes back through a Queue; byte for byte, and zero-copy on both sides. The child exits
right after its last put: it waits at exit until the parent has fetched the fds."""

import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import poolwork
import stridemap
import stridemap.pools


def child(arg, inbox, outbox):
    """Probe the Process argument and what comes through the inbox; send back a new shared
    array and a view of the received one."""
    got = inbox.get(timeout=60)
    outbox.put((poolwork.probe(arg), poolwork.probe(got)))
    made = poolwork.shared("transposed")
    outbox.put((made, got[::2]))
    # Let the queue's feeder thread pickle (and so start this process's fd listener) before
    # the exit begins: the listener's socket must outlive the wait at exit.
    time.sleep(0.5)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_arguments_and_queues(method):
    stridemap.pools.install()
    ctx = multiprocessing.get_context(method)
    arg = poolwork.shared("reversed")
    sent = poolwork.shared("big-endian")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=child, args=(arg, inbox, outbox))
    p.start()
    inbox.put(sent)
    got_arg, got_sent = outbox.get(timeout=60)
    # Read the last message late: the child has reached its exit by then, and must wait there
    # until the fds it sent are fetched (its resource_sharer thread holds them).
    time.sleep(1)
    made, back = outbox.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert got_arg["bytes"] == poolwork.expected("reversed").tobytes()
    assert got_sent["bytes"] == poolwork.expected("big-endian").tobytes()
    if method != "fork":  # a forked child inherits the parent's memory: nothing is pickled
        assert poolwork.zero_copy(got_arg["mapping"]), got_arg["mapping"]
    assert poolwork.zero_copy(got_sent["mapping"]), got_sent["mapping"]
    assert np.array_equal(made, poolwork.expected("transposed"))
    assert np.array_equal(back, poolwork.expected("big-endian")[::2])
    for a in (made, back):
        assert poolwork.zero_copy(poolwork.mapping_of(a)), poolwork.mapping_of(a)


BROKEN_POOL = r"""
import concurrent.futures, multiprocessing, os, signal, sys, time
import numpy as np, stridemap, stridemap.pools
from stridemap.transport import channel


def die():
    time.sleep(0.5)  # the tasks behind this one are in the queue by now
    os._exit(9)


if __name__ == "__main__":
    stridemap.pools.install()
    a = stridemap.share(np.arange(1000.0))
    ex = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(
        "forkserver"))
    ex.submit(os.getpid).result(60)  # the worker is up
    # The worker kills itself on its next task: the tasks queued behind it were pickled (their
    # fds offered) and are never read.
    futures = [ex.submit(die)] + [ex.submit(np.sum, a[i:]) for i in range(1, 4)]
    concurrent.futures.wait(futures, timeout=60)
    ex.shutdown(wait=True)
    # The offers of the tasks in the broken pool's queue are withdrawn once its workers are
    # joined (test_pools_broken.py); a pickle made and never sent anywhere stays offered.
    unsent = multiprocessing.reduction.ForkingPickler.dumps(a[::2])
    print(channel.pending(), time.monotonic(), flush=True)
"""


def test_exit_does_not_wait_for_fds_that_no_live_process_can_fetch(tmp_path):
    """The soak's finding, the exit half: fds offered that no live process can fetch (those of
    a broken pool's queue were, before they were withdrawn once its workers are joined; here a
    pickle never sent) made the parent wait the whole STRIDEMAP_POOLS_EXIT_WAIT (10 s) at exit.
    Its workers are gone and it has no parent that could fetch them: it exits at once now."""
    script = tmp_path / "broken_pool.py"
    script.write_text(BROKEN_POOL)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "STRIDEMAP_POOLS_EXIT_WAIT": "30"})
    ended = time.monotonic()
    assert out.returncode == 0, out.stderr[-3000:]
    pending, at = out.stdout.split()
    print(f"{pending} fds offered and never fetched; the exit took {ended - float(at):.2f} s")
    assert int(pending) > 0, "no fd was left offered: the test showed nothing"
    assert ended - float(at) < 10, f"the exit waited {ended - float(at):.1f} s"
    assert ended - t0 < 100
