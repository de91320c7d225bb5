"""``python -m stridemap.bench.soak``: faults survived, as a figure.

N tasks through three pools, one after the other, after ``stridemap.pools.install(numpy=True)``:
``multiprocessing.Pool``, ``concurrent.futures.ProcessPoolExecutor`` (both with 2 workers,
forkserver by default) and joblib's ``"stridemap"`` backend (``n_jobs=2``, loky workers). Each
task gets one array, picked by a seeded RNG from a fixed set of inputs of mixed sizes (1 KiB to
3 MiB) and kinds: a memfd (``stridemap.share``), a named segment (``share(kind="file")``),
``np.memmap`` files in /dev/shm and on disk, and plain ndarrays (below and above ``max_nbytes``:
pickled, or shared by the policy), each whole, reversed (``a[::-1]``) or transposed and
reversed (``a.T[::-1]``). The worker checksums what it received (CRC-32 of its bytes in C
order); some tasks also return an array (a view of the input, a new memfd or named segment, a
plain ndarray), which the parent compares with what it should be.

A fraction of the tasks (``--kill``, 1%), chosen by the same RNG, kill their own worker with
``SIGKILL`` mid-task: after touching their input, and half of them after making half of a named
result segment (so that a dead worker leaves a folder with a file in it). Killing from inside the
task, rather than from a killer process that picks a worker, makes every kill land mid-task, on
a worker that holds a received array (mapped, locked, its fd fetched), at a point chosen by the
seed: a run is reproducible, and the parent knows exactly which tasks were killed, so "every
lost task is reported" is a comparison, not an estimate. (A killer from outside would mostly
hit idle workers or workers between tasks, and never know which task it killed.)

What each pool does with a dead worker, and what is counted as lost:

- ``multiprocessing.Pool`` replaces the worker; the killed task's ``AsyncResult`` never
  completes: a task not done ``--deadline`` seconds after it was submitted is lost. (A pool
  with such a task never finishes ``join()``: it is ``terminate()``d at the end.)
- ``ProcessPoolExecutor`` breaks: every pending future raises ``BrokenProcessPool``; they are
  lost, and a new executor takes the next tasks (at most ``--window`` tasks are in flight).
- joblib raises ``TerminatedWorkerError`` for the ``Parallel`` call; calls run ``--chunk``
  tasks each, results as they complete, and the unfinished tasks of a failed call are lost.

Every wait is bounded (``--deadline``); a wait that runs out is reported as a hang. After each
pool has shut down, the parent waits (up to ``--settle`` seconds) for the fds it offered to be
fetched or dropped, then compares its fds and mappings of memfds and of the soak's files with
the baseline taken before the pool started; then ``stridemap.sweep`` of the soak's temp root
(``STRIDEMAP_TEMP_FOLDER``, a fresh folder, so that other users' folders are never touched)
removes the folders of dead workers, and only the parent's own folder may remain. At the end the
inputs are dropped: the parent's fds and mappings must be back at the baseline taken before
they were made, and the parent's folder empty.

What fails: a wrong result; a task that raised; a killed task not reported lost; a task of
``multiprocessing.Pool`` lost that was not killed (nothing else dies there), or a breakdown of
the other two with no killed task among its lost; a wait past its deadline (or the Pool's result
handler thread gone, after which it never delivers a result); fds or mappings above the
baseline, or fds offered to receivers and never fetched; files left after the sweep. Lost tasks
that were not killed (the others in flight when ``ProcessPoolExecutor`` or a joblib call breaks)
are counted as "collateral": that is how those pools recover, not a failure. So is a result
that comes back unreceivable (using it raises ``OpenFailed``: its worker was killed by a later
task before this process fetched its fd): lost with its worker, and noted.

Options: ``--tasks`` (100000 in all, split between the pools), ``--kill`` (0.01), ``--seed``,
``--pools`` (a subset of mp,cf,joblib), ``--kinds`` (a subset of the input kinds),
``--temp-base`` (where the temp root is made: /dev/shm, else another folder), ``--quick`` (the
CI form: 5,000 tasks, 10 s deadlines, 5 s to settle). The report ends with a table, one row per
pool, the failures, and a verdict; the exit status is 1 when anything failed.
"""

import argparse
import collections
import concurrent.futures
import gc
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

import stridemap
import stridemap.pools
from stridemap.transport import channel as _channel
from stridemap.transport import handoff as _handoff

KIB = 1 << 10
SIZES = (1 * KIB, 8 * KIB, 64 * KIB, 512 * KIB, 1536 * KIB, 3072 * KIB)
# How often a size is picked: the small ones most (a soak of many tasks, not a bandwidth test).
SIZE_WEIGHTS = (8, 6, 4, 2, 1, 1)
KINDS = ("memfd", "file", "shm_memmap", "disk_memmap", "plain")
DTYPES = ("<f8", "<i4", "|u1", "<f4", "<i8")
VIEWS = ("whole", "reversed", "transposed")
RESULTS = ("none", "echo", "memfd", "file", "plain")
RESULT_WEIGHTS = (4, 1, 1, 1, 1)
RESULT_SIZES = (128, 4096, 65536, 196608)  # int64 elements: 1 KiB to 1.5 MiB
POOLS = ("mp", "cf", "joblib")
POOL_NAMES = {"mp": "multiprocessing.Pool", "cf": "ProcessPoolExecutor",
              "joblib": "joblib \"stridemap\""}


# --- in the workers -------------------------------------------------------------------------

def _expected_result(i, n):
    return np.arange(n, dtype="<i8") * 3 + i


def _crc(a):
    return zlib.crc32(np.ascontiguousarray(a)) if a.size else 0


def task(i, a, result, n, kill):
    """Checksum ``a``; kill this worker (``kill`` 1: then; 2: after half a named result);
    return ``(i, crc, shape, dtype, result array or None)``. (``kill`` -1: return a wrong
    checksum, for the tests of the soak itself.)"""
    crc = _crc(a)
    if kill == -1:
        crc ^= 1
        kill = 0
    if kill == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    out = None
    if result == "echo":
        out = a[::-2]
    elif result in ("memfd", "file"):
        out = stridemap.empty((n,), "<i8", kind=result)
        half = n // 2
        out[:half] = _expected_result(i, n)[:half]
        if kill == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        out[half:] = _expected_result(i, n)[half:]
        out.freeze()
    elif result == "plain":
        out = _expected_result(i, n)
    if kill:  # a kill of stage 2 for a task whose result is not a named segment
        os.kill(os.getpid(), signal.SIGKILL)
    return i, crc, a.shape, a.dtype.str, out


# --- in the parent: the inputs --------------------------------------------------------------

class Inputs:
    """The arrays the tasks get: every kind x size, each as three views, made once. Plain
    views are kept as objects, so that the policy's ``share`` reuses their segments."""

    def __init__(self, shm_dir, disk_dir, max_nbytes):
        self.views = {}  # (kind, size, view) -> array
        self.crc = {}  # same key -> (crc, shape, dtype)
        self.memmaps = []
        for k, kind in enumerate(KINDS):
            for s, size in enumerate(SIZES):
                dtype = np.dtype(DTYPES[(k + s) % len(DTYPES)])
                cols = 16
                rows = size // dtype.itemsize // cols
                base = (np.arange(rows * cols) * 2654435761 % 1000003).astype(dtype)
                base = base.reshape(rows, cols)
                if kind in ("memfd", "file"):
                    arr = stridemap.share(base, kind=kind)
                elif kind == "plain":
                    arr = base
                else:
                    folder = shm_dir if kind == "shm_memmap" else disk_dir
                    path = os.path.join(folder, f"{kind}-{size}.bin")
                    arr = np.memmap(path, dtype=dtype, mode="w+", shape=base.shape)
                    arr[:] = base
                    arr.flush()
                    self.memmaps.append(path)
                for view in VIEWS:
                    v = {"whole": arr, "reversed": arr[::-1], "transposed": arr.T[::-1]}[view]
                    self.views[kind, size, view] = v
                    self.crc[kind, size, view] = (_crc(v), v.shape, v.dtype.str)
                    if kind == "plain" and v.nbytes >= max_nbytes:
                        # What the policy does at the first handoff (and reuses while the
                        # view lives): done here, so that it is part of every baseline.
                        stridemap.share(v)

    def close(self):
        self.views.clear()
        gc.collect()
        for path in self.memmaps:
            os.unlink(path)


def plan(rng, count, kill, kinds=KINDS):
    """Tasks: ``(i, key, result, n, kill)`` drawn from ``rng``."""
    sw = np.array(SIZE_WEIGHTS, float) / sum(SIZE_WEIGHTS)
    rw = np.array(RESULT_WEIGHTS, float) / sum(RESULT_WEIGHTS)
    out = []
    for i in range(count):
        key = (kinds[rng.integers(len(kinds))], SIZES[rng.choice(len(SIZES), p=sw)],
               VIEWS[rng.integers(len(VIEWS))])
        result = RESULTS[rng.choice(len(RESULTS), p=rw)]
        n = int(RESULT_SIZES[rng.integers(len(RESULT_SIZES))])
        k = 0
        if rng.random() < kill:
            k = 1 + int(rng.integers(2))
        out.append((i, key, result, n, k))
    return out


# --- in the parent: the checks --------------------------------------------------------------

class Tally:
    def __init__(self, name, tasks):
        self.name = name
        self.tasks = {t[0]: t for t in tasks}
        self.killed = {t[0] for t in tasks if t[4] > 0}
        self.exact = 0
        self.wrong = []  # (i, what)
        self.lost = set()
        self.errors = []  # (i, exception text): a task that raised something else
        self.hangs = []  # what waited past its deadline
        self.pool_errors = []  # what the pool itself raised (not a task)
        self.notes = collections.Counter()  # worth knowing, not failures
        self.not_run = set()  # tasks left when the pool was given up (too many failures)
        self.results_lost = set()  # tasks whose result came back unreceivable (OpenFailed)
        self.recoveries = 0
        self.unexplained = []  # pools that broke with no killed task among those lost
        self.results = 0  # of the exact ones, how many came with an array
        self.longest_wait = 0.0
        self.wall = 0.0
        self.leftovers = {}
        self.swept = []
        self.remaining = []

    def check(self, inputs, out):
        i, crc, shape, dtype, res = out
        _, key, result, n, kill = self.tasks[i]
        want = inputs.crc[key]
        if kill > 0:
            self.wrong.append((i, "a task that kills its worker came back"))
            return
        if (crc, tuple(shape), dtype) != want:
            self.wrong.append((i, f"input {key}: got crc/shape/dtype {(crc, shape, dtype)}, "
                                  f"want {want}"))
            return
        try:
            if result == "none":
                ok = res is None
            elif result == "echo":
                ok = res is not None and np.array_equal(res, inputs.views[key][::-2])
            else:
                ok = res is not None and res.dtype == np.dtype("<i8") and res.shape == (n,) \
                    and np.array_equal(res, _expected_result(i, n))
        except stridemap.OpenFailed as e:
            # A result whose fd its worker could not hand over (killed by a later task before
            # this process fetched it) may come as a stand-in that raises where it is used.
            self.lose([i])
            self.results_lost.add(i)
            self.notes[f"results lost with their worker ({str(e)[:120]}...)"] += 1
            return
        except Exception as e:
            self.errors.append((i, f"using the result: {e!r}"))
            return
        if ok:
            self.exact += 1
            self.results += res is not None
        else:
            self.wrong.append((i, f"result {result} of input {key} differs"))

    def lose(self, ids):
        self.lost.update(ids)

    def broke(self, ids):
        """A pool broke and these tasks were lost: one of them must have been killed."""
        ids = set(ids)
        self.lose(ids)
        self.recoveries += 1
        if ids and not ids & self.killed:
            i = min(ids)
            self.unexplained.append(f"task {i}, input {self.tasks[i][1]}, "
                                    f"{len(ids)} lost")

    @property
    def collateral(self):
        return self.lost - self.killed

    def unreported(self):
        """Killed tasks that were neither lost nor came back wrong: should be none."""
        wrong = {i for i, _ in self.wrong}
        return self.killed - self.lost - wrong

    def missing(self):
        """Tasks with no outcome at all (neither exact, wrong, lost nor erred)."""
        return (len(self.tasks) - self.exact - len(self.wrong) - len(self.lost)
                - len(self.errors) - len(self.not_run))

    def given_up(self, limit):
        """Whether this pool failed often enough (breakdowns without a kill, errors, hangs)
        that the rest of its tasks are not worth running."""
        return len(self.unexplained) + len(self.errors) + len(self.hangs) > limit

    def give_up(self, ids):
        """These tasks are not run: not lost, and their kills did not happen."""
        self.not_run.update(ids)
        self.killed -= self.not_run

    def failures(self):
        out = []
        if self.wrong:
            out.append(f"{len(self.wrong)} wrong results (first: {self.wrong[0]})")
        if self.errors:
            out.append(f"{len(self.errors)} tasks raised (first: {self.errors[0]})")
        unexplained = self.collateral - self.results_lost
        if self.name == "mp" and unexplained:
            i = min(unexplained)
            out.append(f"{len(unexplained)} tasks lost that were not killed (first: task {i}, "
                       f"input {self.tasks[i][1]})")
        if self.unexplained:
            out.append(f"{len(self.unexplained)} breakdowns with no killed task among the lost "
                       f"(first: {self.unexplained[0]})")
        if self.unreported():
            out.append(f"{len(self.unreported())} killed tasks not reported lost")
        if self.missing():
            out.append(f"{self.missing()} tasks with no outcome")
        if self.pool_errors:
            out.append(f"the pool raised: {self.pool_errors}")
        if self.not_run:
            out.append(f"{len(self.not_run)} tasks not run: the pool was given up (more than "
                       f"{self.limit} failures, or no results any more)")
        if self.hangs:
            out.append(f"{len(self.hangs)} waits past the deadline (first: {self.hangs[0]})")
        for what, (before, after) in self.leftovers.items():
            if after != before:
                out.append(f"leftover {what}: {before} -> {after}")
        if self.remaining:
            out.append(f"files left after the sweep: {self.remaining}")
        return out


# --- the parent's resources -----------------------------------------------------------------

def resources(dirs):
    """The parent's fds and mappings that the soak could leak: memfds, and files below the
    soak's folders (the temp root, the memmaps' folders); plus every fd, for context."""
    gc.collect()
    fds = collections.Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        fds["fds"] += 1
        if target.startswith("/memfd:"):
            fds["memfd fds"] += 1
        elif any(target.startswith(d) for d in dirs):
            fds["file fds"] += 1
        elif target.startswith("socket:"):
            fds["sockets"] += 1
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            path = parts[5].strip() if len(parts) == 6 else ""
            if path.startswith("/memfd:"):
                fds["memfd maps"] += 1
            elif any(path.startswith(d) for d in dirs):
                fds["file maps"] += 1
    for k in ("fds", "memfd fds", "file fds", "sockets", "memfd maps", "file maps"):
        fds.setdefault(k, 0)
    return dict(fds)


# Sockets too: the parent's fd channel connections (one per worker it received a result from).
CHECKED = ("memfd fds", "file fds", "sockets", "memfd maps", "file maps")


def settle(dirs, baseline, seconds):
    """Wait until the fds offered to receivers are fetched (or gone) and the checked counts are
    back at ``baseline``, for up to ``seconds``; the last counts and what is still offered."""
    deadline = time.monotonic() + seconds
    while True:
        now = resources(dirs)
        offered = _channel.pending() + len(_handoff._unfetched())
        if (offered == 0 and all(now[k] <= baseline[k] for k in CHECKED)) \
                or time.monotonic() > deadline:
            return now, offered
        stridemap.reap()
        time.sleep(0.05)


def folders(root):
    try:
        return sorted(n for n in os.listdir(root) if n.startswith("stridemap-"))
    except FileNotFoundError:
        return []


def files_below(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, n), root) for n in filenames]
    return sorted(out)


def sweep_dead(root, own, seconds):
    """Sweep ``root`` until only the parent's own folder is left (workers may take a moment to
    die, the kernel a moment to drop their locks); what was removed, and what is left."""
    removed = []
    deadline = time.monotonic() + seconds
    while True:
        report = stridemap.sweep(root)
        removed += [os.path.basename(p) for p in report.removed]
        left = [f for f in folders(root) if f not in own]
        if not left or time.monotonic() > deadline:
            return removed, left, report
        time.sleep(0.1)


# --- the pools ------------------------------------------------------------------------------

def run_mp(tally, inputs, tasks, args, ctx):
    results = queue.Queue()
    pool = ctx.Pool(2, initializer=stridemap.pools.install)
    inflight = {}  # i -> submission time
    last_expiry = time.monotonic()
    try:
        it = iter(tasks)
        exhausted = False
        while not exhausted or inflight:
            if not pool._result_handler.is_alive():
                # Its thread ends on an OSError unpickling a result (a stridemap error is
                # one): no result is ever delivered again. Count the rest lost; stop.
                tally.hangs.append("multiprocessing.Pool's result handler thread died: no "
                                   "result is delivered any more")
                tally.lose(inflight)
                inflight.clear()
                tally.give_up(t[0] for t in it)
                break
            while not exhausted and len(inflight) < args.window_mp:
                t = next(it, None)
                if t is None:
                    exhausted = True
                    break
                i, key, result, n, kill = t
                inflight[i] = time.monotonic()
                pool.apply_async(task, (i, inputs.views[key], result, n, kill),
                                 callback=results.put,
                                 error_callback=lambda e, i=i: results.put((i, e)))
            outs = []
            try:
                outs.append(results.get(timeout=0.2))
                while True:
                    outs.append(results.get_nowait())
            except queue.Empty:
                pass
            for out in outs:
                i = out[0]
                if inflight.pop(i, None) is None:
                    tally.wrong.append((i, "came back after it was counted lost"))
                elif isinstance(out[1], BaseException):
                    tally.errors.append((i, repr(out[1])))
                else:
                    tally.check(inputs, out)
            now = time.monotonic()
            if now - last_expiry > 0.5:
                last_expiry = now
                expired = [i for i, t0 in inflight.items() if now - t0 > args.deadline]
                for i in expired:
                    del inflight[i]
                tally.lose(expired)
    finally:
        pool.close()
        if tally.lost or inflight:
            # A lost task stays in the pool's cache: join() would wait for it forever.
            try:
                pool.terminate()
            except Exception as e:  # it unpickles the tasks still queued, in this process
                tally.pool_errors.append(f"multiprocessing.Pool.terminate raised {e!r}")
                for p in list(pool._pool):  # the workers a failed terminate left running
                    p.kill()
        if not _bounded(pool.join, args.deadline):
            tally.hangs.append("multiprocessing.Pool.join")


def _bounded(fn, seconds):
    """Run ``fn`` in a thread for up to ``seconds``: whether it finished."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def run_cf(tally, inputs, tasks, args, ctx):
    from concurrent.futures.process import BrokenProcessPool

    def new():
        return concurrent.futures.ProcessPoolExecutor(
            2, mp_context=ctx, initializer=stridemap.pools.install)

    def collect(done):
        """Check the futures ``done``; the tasks of those a broken pool failed."""
        lost = []
        for f in done:
            i = pending.pop(f)
            try:
                tally.check(inputs, f.result())
            except BrokenProcessPool:
                lost.append(i)
            except Exception as e:
                tally.errors.append((i, repr(e)))
        return lost

    ex = new()
    pending = {}  # future -> i
    todo = collections.deque(tasks)
    try:
        while todo or pending:
            if todo and tally.given_up(args.max_failures):
                tally.give_up(t[0] for t in todo)
                todo.clear()
            refused = False
            while todo and len(pending) < args.window:
                i, key, result, n, kill = todo[0]
                try:
                    pending[ex.submit(task, i, inputs.views[key], result, n, kill)] = i
                except BrokenProcessPool:  # it broke since the last wait: submit it again
                    refused = True
                    break
                todo.popleft()
            t0 = time.monotonic()
            done, _ = concurrent.futures.wait(pending, timeout=args.deadline,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            tally.longest_wait = max(tally.longest_wait, time.monotonic() - t0)
            if not done and pending:
                tally.hangs.append(f"ProcessPoolExecutor: nothing done in {args.deadline} s "
                                   f"with {len(pending)} pending")
                lost = list(pending.values())
                pending.clear()
            else:
                lost = collect(done)
            if lost or refused:
                # Every pending future fails too, soon: collect them (bounded), then a new pool.
                done, not_done = concurrent.futures.wait(pending, timeout=args.deadline)
                lost += collect(done)
                if not_done:
                    tally.hangs.append(f"ProcessPoolExecutor: {len(not_done)} futures of a "
                                       "broken pool never finished")
                    lost += pending.values()
                    pending.clear()
                tally.broke(lost)
                if not _bounded(lambda: ex.shutdown(wait=True, cancel_futures=True),
                                args.deadline):
                    tally.hangs.append("ProcessPoolExecutor.shutdown of a broken pool")
                ex = new()
    finally:
        if not _bounded(lambda: ex.shutdown(wait=True, cancel_futures=True), args.deadline):
            tally.hangs.append("ProcessPoolExecutor.shutdown")


def run_joblib(tally, inputs, tasks, args):
    import joblib
    from joblib.externals.loky.process_executor import BrokenProcessPool, TerminatedWorkerError

    config = dict(backend="stridemap", n_jobs=2)
    if args.joblib_start_method:
        config["start_method"] = args.joblib_start_method
    try:
        with joblib.parallel_config(**config):
            for c in range(0, len(tasks), args.chunk):
                if tally.given_up(args.max_failures):
                    tally.give_up(t[0] for t in tasks[c:])
                    break
                chunk = tasks[c:c + args.chunk]
                seen = set()
                parallel = joblib.Parallel(return_as="generator_unordered",
                                           timeout=args.deadline)
                try:
                    for out in parallel(joblib.delayed(task)(i, inputs.views[key], result, n, k)
                                        for i, key, result, n, k in chunk):
                        seen.add(out[0])
                        tally.check(inputs, out)
                except TerminatedWorkerError:
                    tally.broke(t[0] for t in chunk if t[0] not in seen)
                except BrokenProcessPool as e:
                    # What a kill looks like when the dead worker's last result could not be
                    # received (its fd went with it): counted lost, and the message noted.
                    tally.broke(t[0] for t in chunk if t[0] not in seen)
                    tally.notes[f"joblib raised {e!r}"] += 1
                except TimeoutError:
                    tally.hangs.append(f"joblib: a task of chunk {c // args.chunk} ran past "
                                       f"{args.deadline} s")
                    tally.lose(t[0] for t in chunk if t[0] not in seen)
                except Exception as e:
                    tally.errors.extend((t[0], repr(e)) for t in chunk if t[0] not in seen)
    finally:
        if not _bounded(stridemap.pools.shutdown_backend, args.deadline):
            tally.hangs.append("joblib backend shutdown")


# --- the run --------------------------------------------------------------------------------

def _temp_dirs(base):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    root = tempfile.mkdtemp(prefix="soak-root-", dir=base or shm)
    shm_dir = tempfile.mkdtemp(prefix="soak-memmap-", dir=shm)
    disk = os.environ.get("STRIDEMAP_SOAK_DISK") or tempfile.gettempdir()
    disk_dir = tempfile.mkdtemp(prefix="soak-memmap-", dir=disk)
    return root, shm_dir, disk_dir


def _fstype(path):
    best, kind = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return kind


def run(args, root, shm_dir, disk_dir, out=sys.stdout):
    """Run the soak in these folders; print what each pool did; return ``{pool: Tally}`` and
    the final checks."""
    import joblib

    global task
    # The workers import the task from this module by name, also when it runs as __main__.
    task = __import__("stridemap.bench.soak", fromlist=["task"]).task

    def say(*a):
        print(*a, file=out, flush=True)

    os.environ["STRIDEMAP_TEMP_FOLDER"] = root  # before any worker starts: they inherit it
    dirs = [root, shm_dir, disk_dir]
    ctx = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        # Not this module: a worker imports the main module itself (as __mp_main__).
        ctx.set_forkserver_preload(["numpy", "stridemap", "stridemap.pools"])
    stridemap.pools.install(numpy=True)
    say(f"stridemap soak: python {sys.version.split()[0]}, numpy {np.__version__}, joblib "
        f"{joblib.__version__}, {os.cpu_count()} cpus; {args.tasks} tasks, kill {args.kill}, "
        f"seed {args.seed}; pools {','.join(args.pools)} ({args.start_method} for mp/cf, "
        f"{args.joblib_start_method or 'loky'} for joblib)")
    say(f"temp root {root}; memmaps in {shm_dir} ({_fstype(shm_dir)}) and {disk_dir} "
        f"({_fstype(disk_dir)})")
    t_all = time.monotonic()
    # What lives as long as this process, made before the baselines: the forkserver and its
    # socket, the resource tracker, this process's fd channel listener and pool folder.
    if args.start_method == "forkserver":
        from multiprocessing import forkserver
        forkserver.ensure_running()
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    _channel._listening()
    stridemap.producer_root()
    start = resources(dirs)
    inputs = Inputs(shm_dir, disk_dir, stridemap.pools.installed().max_nbytes)
    own = folders(root)
    tallies = {}
    final = {}
    try:
        per_pool = args.tasks // len(args.pools)
        for p, name in enumerate(args.pools):
            rng = np.random.default_rng([args.seed, p])
            tasks = plan(rng, per_pool, args.kill, args.kinds)
            if 0 <= args.inject_wrong < len(tasks):
                tasks[args.inject_wrong] = (*tasks[args.inject_wrong][:4], -1)
            tally = Tally(name, tasks)
            tally.limit = args.max_failures
            tallies[name] = tally
            # Offers and reaps of the previous pool have settled; start from here.
            baseline, _ = settle(dirs, resources(dirs), 0)
            t0 = time.monotonic()
            if name == "mp":
                run_mp(tally, inputs, tasks, args, ctx)
            elif name == "cf":
                run_cf(tally, inputs, tasks, args, ctx)
            else:
                run_joblib(tally, inputs, tasks, args)
            tally.wall = time.monotonic() - t0
            after, offered = settle(dirs, baseline, args.settle)
            tally.leftovers = {k: (baseline[k], after[k]) for k in CHECKED}
            tally.leftovers["offered fds never fetched"] = (0, offered)
            tally.context = {k: (baseline[k], after[k]) for k in ("fds",)}
            tally.swept, left, report = sweep_dead(root, own, args.settle)
            tally.remaining = [(f, files_below(os.path.join(root, f))) for f in left]
            if report.failed or report.kept:
                tally.remaining.append(("sweep", report.failed + report.kept))
            say(f"{POOL_NAMES[name]}: {len(tasks)} tasks in {tally.wall:.1f} s, "
                f"{len(tally.killed)} killed, {len(tally.lost)} lost "
                f"({len(tally.lost & tally.killed)} killed + {len(tally.collateral)} "
                f"collateral), {tally.exact} exact ({tally.results} with an array), "
                f"{len(tally.wrong)} wrong, {len(tally.errors)} errors, "
                f"{tally.recoveries} recoveries, {len(tally.hangs)} hangs; sweep removed "
                f"{len(tally.swept)} dead workers' folders")
        # The end: drop the inputs; everything back to where it was before they were made.
        inputs.close()
        inputs = None
        end, offered = settle(dirs, start, args.settle)
        final["leftovers"] = {k: (start[k], end[k]) for k in CHECKED}
        final["leftovers"]["offered fds never fetched"] = (0, offered)
        final["context"] = {k: (start[k], end[k]) for k in ("fds",)}
        final["own files"] = [x for f in own for x in files_below(os.path.join(root, f))]
        final["wall"] = time.monotonic() - t_all
    finally:
        if inputs is not None:
            inputs.close()
    return tallies, final


def report(tallies, final, out=sys.stdout):
    """The table, the failures, and the verdict: whether everything passed."""
    def say(*a):
        print(*a, file=out, flush=True)

    say("")
    say("| pool | tasks | not run | killed | lost | of which killed | collateral | exact | "
        "wrong | errors | hangs | leftovers | swept folders | wall |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    failed = False
    for name, t in tallies.items():
        left = [f"{k} {b}->{a}" for k, (b, a) in t.leftovers.items() if a != b]
        say(f"| {POOL_NAMES[name]} | {len(t.tasks)} | {len(t.not_run)} | {len(t.killed)} | "
            f"{len(t.lost)} | "
            f"{len(t.lost & t.killed)} | {len(t.collateral)} | {t.exact} | {len(t.wrong)} | "
            f"{len(t.errors)} | {len(t.hangs)} | {', '.join(left) or 'none'} | "
            f"{len(t.swept)} | {t.wall:.1f} s |")
    say("")
    for name, t in tallies.items():
        ctx = ", ".join(f"{k} {b}->{a}" for k, (b, a) in t.context.items())
        say(f"{POOL_NAMES[name]}: parent {ctx} (context, not checked)")
        for note, count in t.notes.items():
            say(f"note {POOL_NAMES[name]}: {count}x {note}")
        for f in t.failures():
            failed = True
            say(f"FAIL {POOL_NAMES[name]}: {f}")
    if final:
        left = [f"{k} {b}->{a}" for k, (b, a) in final["leftovers"].items() if a != b]
        ctx = ", ".join(f"{k} {b}->{a}" for k, (b, a) in final["context"].items())
        say(f"inputs dropped: parent leftovers {', '.join(left) or 'none'}; files in the "
            f"parent's folder: {final['own files'] or 'none'}; {ctx} (context)")
        if left or final["own files"]:
            failed = True
            say("FAIL parent: leftovers after the inputs were dropped")
        total = sum(len(t.tasks) for t in tallies.values())
        say(f"total: {total} tasks, {sum(len(t.killed) for t in tallies.values())} killed, "
            f"{sum(len(t.lost) for t in tallies.values())} lost, "
            f"{sum(t.exact for t in tallies.values())} exact, "
            f"{sum(len(t.wrong) for t in tallies.values())} wrong in {final['wall']:.1f} s")
    else:
        failed = True
    say("verdict: " + ("FAIL" if failed else "PASS"))
    return not failed


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m stridemap.bench.soak",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=100_000, help="tasks in all (default 100000)")
    p.add_argument("--kill", type=float, default=0.01, help="fraction killed (default 0.01)")
    p.add_argument("--seed", type=int, default=19, help="the RNG's seed (default 19)")
    p.add_argument("--pools", default=",".join(POOLS), help="a subset of mp,cf,joblib")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"input kinds, a subset of {','.join(KINDS)} (default: all)")
    p.add_argument("--temp-base", default=None,
                   help="where the temp root (STRIDEMAP_TEMP_FOLDER) is made (default /dev/shm)")
    p.add_argument("--max-failures", type=int, default=20,
                   help="give a pool up after more breakdowns without a kill, errors and "
                   "hangs than this (20): the rest of its tasks are reported not run")
    p.add_argument("--inject-wrong", type=int, default=-1, metavar="I",
                   help="for the soak's own tests: task I of each pool returns a wrong checksum")
    p.add_argument("--quick", action="store_true", help="the CI form: 5,000 tasks")
    p.add_argument("--deadline", type=float, default=20.0,
                   help="seconds a task or a wait may take before it counts lost/hung (20)")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds to wait for handoffs and workers to settle (10)")
    p.add_argument("--window", type=int, default=8,
                   help="tasks in flight in ProcessPoolExecutor (8)")
    p.add_argument("--window-mp", type=int, default=256,
                   help="tasks in flight in multiprocessing.Pool (256)")
    p.add_argument("--chunk", type=int, default=20, help="tasks per joblib call (20)")
    p.add_argument("--start-method", default="forkserver",
                   help="multiprocessing start method of mp and cf (forkserver)")
    p.add_argument("--joblib-start-method", default=None,
                   help="the joblib backend's start_method (default: loky's)")
    args = p.parse_args(argv)
    if args.quick:  # the CI form; a lost task is known sooner on an idle 2-worker pool
        args.tasks = 5_000
        args.deadline = min(args.deadline, 10.0)
        args.settle = min(args.settle, 5.0)
    args.kinds = [x for x in args.kinds.split(",") if x]
    if not args.kinds or set(args.kinds) - set(KINDS):
        p.error(f"--kinds: choose from {','.join(KINDS)}")
    args.pools = [x for x in args.pools.split(",") if x]
    bad = [x for x in args.pools if x not in POOLS]
    if bad or not args.pools:
        p.error(f"--pools: choose from {','.join(POOLS)}, not {bad}")
    dirs = _temp_dirs(args.temp_base)
    try:
        tallies, final = run(args, *dirs)
        ok = report(tallies, final)
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
