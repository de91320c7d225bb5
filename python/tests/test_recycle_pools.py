"""Issue #21, the results path through real pools: ``stridemap.empty()`` results that the workers
of a ``ProcessPoolExecutor`` and a ``multiprocessing.Pool`` (fork, with another thread of the
parent in stridemap while it forks; spawn; forkserver) and of joblib's "stridemap" backend
return come back exact, most of them made in a recycled segment (the workers'
``recycle.stats()``) and served from the parent's kept mapping (``mapcache.stats()`` hits); a
result the parent holds never changes while many more come; once they are dropped the parent
keeps no fd and no mapping of their segments; and at ``RLIMIT_NOFILE`` 1,024 a pool returns
3,000 of them, 700 held at once, with no ``EMFILE`` and few fds.

Counts of recycling have lenient lower bounds (half of what an idle machine gives): they fail
when recycling stops, not when a busy machine makes a few results in new segments."""

import collections
import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import joblib
import numpy as np
import pytest

import stridemap
import stridemap.pools

import fdlimit
from stridemap.segments import recycle
from stridemap.transport import mapcache

import procmaps
from producer_util import settled

# Python 3.12+ warns of fork() with threads running: what the fork cases do on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")

METHODS = ("spawn", "fork", "forkserver")
N = 1000  # float64s a result: 8 KiB
SHAPES = ((N,), (25, 40), (8, 125))  # one size, so each fits the others' segments


def expected(value):
    """The contents of result ``value``: its own numbers, in its own shape."""
    return value * float(N) + np.arange(float(N)).reshape(SHAPES[value % len(SHAPES)])


def make(value):
    """In a worker: ``(recycled, array)``, an ``empty()`` array holding ``expected(value)``;
    ``recycled`` is 1 when ``empty()`` took a waiting segment (``recycle.stats()``)."""
    taken = recycle.stats()["taken"]
    a = stridemap.empty(SHAPES[value % len(SHAPES)], "<f8")
    a[...] = expected(value)
    return recycle.stats()["taken"] - taken, a


def check(r, value):
    """``r`` is result ``value``, exact, and mapped from a segment (not pickled)."""
    assert stridemap.segment_of(r) is not None, f"result {value} was pickled, not shared"
    want = expected(value)
    assert r.shape == want.shape and np.array_equal(r, want), f"result {value} is wrong"


def memfds_here():
    """``{"maps": inodes, "fds": inodes}`` of the stridemap memfds this process maps or holds
    an fd of."""
    maps = set()
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) > 5 and "memfd:stridemap" in fields[5]:
                maps.add(int(fields[4]))
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if "memfd:stridemap" in os.readlink(f"/proc/self/fd/{name}"):
                fds.add(os.stat(f"/proc/self/fd/{name}").st_ino)
        except OSError:
            pass  # closed meanwhile (the listing's own fd, another thread's)
    return {"maps": maps, "fds": fds}


def left_of(inodes):
    """What this process still maps or holds of ``inodes`` once the mappings kept for recycled
    segments are past their grace (as test_mapcache_recycled lets them go)."""
    gc.collect()
    mapcache.sweep(now=time.monotonic() + mapcache.LONGEST_KEPT + 1)
    return {k: v & inodes for k, v in memfds_here().items()}


@contextlib.contextmanager
def busy_parent():
    """A thread of this process that makes and drops ``empty()`` arrays while the block runs:
    pools fork while another thread is in stridemap, as users' programs do."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            a = stridemap.empty(N, "<f8")
            a[:] = 1.0
            del a
            stop.wait(0.002)

    t = threading.Thread(target=churn, name="busy-parent", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


@pytest.fixture(scope="module", params=METHODS)
def executor(request):
    """A 2-worker ``ProcessPoolExecutor`` of the start method, reducers installed both sides,
    started (and, for fork, forked) while :func:`busy_parent` runs."""
    stridemap.pools.install()
    ctx = multiprocessing.get_context(request.param)
    with busy_parent():
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx,
                                                    initializer=stridemap.pools.install) as ex:
            assert threading.active_count() > 1
            ex.submit(os.getpid).result(timeout=60)
            yield ex


def results(ex, values, ahead=2):
    """``(value, recycled, result)`` of ``make(value)`` for each of ``values`` in order, with
    ``ahead`` tasks submitted at most (one per worker): back to back. Nothing here holds a
    result once it is handed on."""
    pending = collections.deque()
    for v in values:
        pending.append((v, ex.submit(make, v)))
        if len(pending) >= ahead:
            yield taken(pending.popleft())
    while pending:
        yield taken(pending.popleft())


def taken(entry):
    value, future = entry
    return (value, *future.result(timeout=60))


def test_results_back_to_back_are_exact_and_mostly_recycled(executor):
    hits = mapcache.stats()["hits"]
    recycled = 0
    for value, rec, r in results(executor, range(60)):
        check(r, value)
        recycled += rec
        del r
    hits = mapcache.stats()["hits"] - hits
    # On an idle machine 56 to 59 of each (the first result of each worker is new).
    assert recycled >= 30 and hits >= 30, (
        f"of 60 results dropped back to back, {recycled} were made in a recycled segment and "
        f"{hits} served from the parent's kept mapping")


def test_a_held_result_never_changes_while_many_more_come(executor):
    held = [(value, r) for value, _, r in results(executor, range(1000, 1008))]
    inodes = {procmaps.inode(r) for _, r in held}
    assert len(inodes) == len(held), "two live results share a segment"
    recycled = 0
    for value, rec, r in results(executor, range(2000, 2060)):
        check(r, value)
        assert procmaps.inode(r) not in inodes, f"result {value} is in a held result's segment"
        recycled += rec
        del r
    assert recycled >= 30, f"only {recycled} of 60 recycled: the held ones were not put to test"
    for value, r in held:
        check(r, value)


def test_nothing_of_them_stays_in_the_parent_once_dropped(executor):
    inodes, held = set(), []
    for value, _, r in results(executor, range(3000, 3040)):
        check(r, value)
        inodes.add(procmaps.inode(r))
        if value % 4 == 0:
            held.append(r)
        del r
    now = memfds_here()
    assert {procmaps.inode(r) for r in held} <= now["maps"], "held results are not mapped here?"
    del held
    left = settled(lambda: left_of(inodes), lambda got: not got["maps"] and not got["fds"])
    assert not left["maps"] and not left["fds"], (
        f"of {len(inodes)} segments of results dropped, the parent still maps "
        f"{len(left['maps'])} and holds fds of {len(left['fds'])}")


class Feed:
    """The tasks' values for ``Pool.imap``, whose feeding thread runs ahead of the results
    consumed by ``ahead`` at most (:meth:`consumed` after each): back to back, as
    :func:`results`. :meth:`stop` lets a feeding thread that waits go."""

    def __init__(self, ahead):
        self._room = threading.Semaphore(ahead)
        self._stop = threading.Event()

    def values(self, n):
        for v in range(n):
            while not self._room.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            yield v

    def consumed(self):
        self._room.release()

    def stop(self):
        self._stop.set()


@pytest.mark.parametrize("method", METHODS)
def test_pool_imap_results_are_exact_recycled_and_held_ones_stay(method):
    stridemap.pools.install()
    hits = mapcache.stats()["hits"]
    feed = Feed(4)
    with busy_parent(), multiprocessing.get_context(method).Pool(
            2, initializer=stridemap.pools.install) as pool:
        try:
            held, recycled, value = consume(pool.imap(make, feed.values(200)), 25,
                                            feed.consumed)
        finally:
            feed.stop()
    hits = mapcache.stats()["hits"] - hits
    assert value == 200
    for v, r in held:
        check(r, v)
    # On an idle machine 190 of each.
    assert recycled >= 100 and hits >= 100, (
        f"of 200 results, {recycled} were made in a recycled segment and {hits} served from "
        f"the parent's kept mapping")


def consume(results, every, after=lambda: None):
    """``(held, recycled, count)`` of ``results`` (``(recycled, array)`` of ``make(0)``,
    ``make(1)``, ... in order): each checked, every ``every``-th held, the rest dropped at once;
    ``after()`` once each is done with."""
    held, recycled, value = [], 0, 0
    for rec, r in results:
        check(r, value)
        recycled += rec
        if value % every == 0:
            held.append((value, r))
        del r
        value += 1
        after()
    return held, recycled, value


def test_joblib_backend_results_are_exact_and_held_ones_stay():
    """joblib's results are mapped copy-on-write (private): a page not written yet shows the
    file as it is now, so a recycle under a held one would show at once."""
    try:
        with joblib.parallel_config(backend="stridemap", n_jobs=2):
            out = joblib.Parallel(return_as="generator", batch_size=1, pre_dispatch="n_jobs")(
                joblib.delayed(make)(v) for v in range(150))
            held, recycled, value = consume(out, 15)
    finally:
        stridemap.pools.shutdown_backend()
    assert value == 150
    for v, r in held:
        check(r, v)
    # Not bounded: joblib runs ahead of a slow consumer, and what it holds is not recycled.
    print(f"joblib: {recycled} of 150 results made in a recycled segment")


# fds the pool may add after it started: the second worker's (started on demand: its pipes and
# pidfd) and a channel connection and mailbox to each worker, made with its first result.
SPARE = 16
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

AT_1024 = fdlimit.prelude("memfd:stridemap") + textwrap.dedent(f"""
    import collections, concurrent.futures, gc, multiprocessing
    import stridemap, stridemap.pools
    from stridemap.segments import recycle
    from stridemap.transport import mapcache
    from producer_util import settled

    def make(i):
        taken = recycle.stats()["taken"]
        a = stridemap.empty(1024, "<f8")  # 8 KiB
        a[:] = i
        return recycle.stats()["taken"] - taken, a

    def results(pool, n, ahead=4):
        pending = collections.deque()
        for i in range(n):
            pending.append(pool.submit(make, i))
            if len(pending) >= ahead:
                yield pending.popleft().result(timeout=120)
        while pending:
            yield pending.popleft().result(timeout=120)

    def exact(a, i):
        try:
            return bool(a[0] == i and a[-1] == i and (a == i).all())
        except Exception as e:  # a stand-in: its receive failed
            print("error:", repr(e).replace(" ", "_"))
            return False

    if __name__ == "__main__":
        stridemap.pools.install()
        for method in ("forkserver", "fork"):
            with concurrent.futures.ProcessPoolExecutor(
                    2, mp_context=multiprocessing.get_context(method),
                    initializer=stridemap.pools.install) as pool:
                pool.submit(os.getpid).result()
                base = fds()
                held, wrong, most, peak, i = [], 0, 0, 0, 0
                # 0-999 dropped at once; 1000-1699 held; 1700-2999 dropped at once again
                recycled = dict(first=0, last=0)
                hits = dict(first=mapcache.stats()["hits"])
                for rec, a in results(pool, 3000):
                    wrong += not exact(a, i)
                    if i < 1000:
                        recycled["first"] += rec
                    elif i >= 1700:
                        recycled["last"] += rec
                    if i == 999:
                        hits["first"] = mapcache.stats()["hits"] - hits["first"]
                    if 1000 <= i < 1700:
                        held.append((i, a))
                    del a
                    most = max(most, len(held))
                    if i % 50 == 0:
                        peak = max(peak, fds())
                    i += 1
                wrong += sum(not exact(a, j) for j, a in held)
                peak = max(peak, fds())
                del held
                # The kept mappings go by themselves (STRIDEMAP_RECYCLE_SECONDS=1: 1 s grace,
                # then, made hollow, STRIDEMAP_RECYCLE_HOLLOW_SECONDS=2 more).
                left = settled(lambda: (gc.collect(), maps(), fds())[1:],
                               lambda got: got[0] == 0 and got[1] <= base + {SPARE})
                print(f"{{method}}_n={{i}} {{method}}_wrong={{wrong}} {{method}}_most={{most}} "
                      f"{{method}}_recycled_first={{recycled['first']}} "
                      f"{{method}}_recycled_last={{recycled['last']}} "
                      f"{{method}}_hits_first={{hits['first']}} {{method}}_base={{base}} "
                      f"{{method}}_peak={{peak}} {{method}}_maps={{left[0]}} "
                      f"{{method}}_fds={{left[1]}}")
""")


def test_three_thousand_results_with_seven_hundred_held_at_1024_fds():
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"recycle_pools_{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(AT_1024)
    try:
        env = dict(os.environ, STRIDEMAP_RECYCLE_SECONDS="1",
                   STRIDEMAP_RECYCLE_HOLLOW_SECONDS="2",
                   PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))
        p = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300,
                           env=env)
    finally:
        os.unlink(path)
    out = p.stdout
    print(out)
    assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{p.stderr[-4000:]}"
    for word in ("EMFILE", "Too many open files", "out of file descriptors"):
        assert word not in out + p.stderr, f"{out}\n{p.stderr[-4000:]}"
    assert "error:" not in out, out
    got = dict(w.split("=", 1) for w in out.split() if "=" in w)
    for method in ("forkserver", "fork"):
        g = {k: int(got[f"{method}_{k}"]) for k in
             ("n", "wrong", "most", "recycled_first", "recycled_last", "hits_first", "base",
              "peak", "maps", "fds")}
        assert g["n"] == 3000 and g["wrong"] == 0 and g["most"] == 700, (method, out)
        # Of the first 1,000 results and the last 1,300 (dropped back to back, the last ones
        # while 700 are held), all but the workers' first few are recycled on an idle machine.
        # The last ones are not served from kept mappings: received fds beyond an eighth of
        # the limit are not kept (segments.backing.kept_fds_cap), nor are those mappings.
        assert g["recycled_first"] >= 500 and g["hits_first"] >= 500, (method, out)
        assert g["recycled_last"] >= 650, (method, out)
        # The fds kept for handing views on (an eighth of the limit) and the pool's own.
        assert g["peak"] < fdlimit.LIMIT // 8 + 64, (method, out)
        # Once all are dropped: no mapping of them, and no fd beyond the pool's own.
        assert g["maps"] == 0 and g["fds"] <= g["base"] + SPARE, (method, out)
