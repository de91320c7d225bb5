"""What the tests of pools off the happy path run (an importable module, so that spawn,
forkserver and loky workers find it): arrays from each source in its default place, the tasks,
and a pool runner whose every wait has a deadline, so that a hang fails its test instead of
hanging the suite.
"""

import concurrent.futures
import multiprocessing
import os
import threading
import uuid
import warnings

import numpy as np

import poolwork
import stridemap
import stridemap.pools  # noqa: F401 - registers the joblib backend "stridemap"

METHODS = ("fork", "spawn", "forkserver")
POOLS = ("Pool", "ProcessPoolExecutor", "joblib stridemap")
# Where an array comes from: stridemap.share into the default temp root (/dev/shm) or a memfd,
# or an np.memmap of a file in /dev/shm or on disk.
SOURCES = ("share file", "share memfd", "memmap in /dev/shm", "memmap on disk")
DEADLINE = 30  # seconds for one task: a pool that lost a task fails here


def install_numpy():
    """A pool initializer: the default temp root (a forkserver started earlier may have passed
    STRIDEMAP_TEMP_FOLDER on), and share plain arrays and np.memmap views too."""
    os.environ.pop("STRIDEMAP_TEMP_FOLDER", None)
    stridemap.pools.install(numpy=True, max_nbytes=0)


def values(n=4096, k=0):
    return np.arange(n, dtype="<f8") * 3 + k


def make(source, array, folder=None):
    """``array``'s values as an array from ``source``; ``folder`` holds a memmap's file."""
    if source == "share file":
        return stridemap.share(array, kind="file")
    if source == "share memfd":
        return stridemap.share(array, kind="memfd")
    m = np.memmap(os.path.join(folder, f"pooledges-{uuid.uuid4().hex}.bin"), dtype=array.dtype,
                  mode="w+", shape=array.shape)
    m[...] = array
    m.flush()
    return m


def where(source, array, folder=None):
    """What the name of the mapping that holds a received array must contain."""
    if source == "share file":
        return "/dev/shm/stridemap-"
    if source == "share memfd":
        return "memfd:"
    return os.path.realpath(array.filename)


def seen(array):
    """A task: what the worker got (values, and the mapping that holds them)."""
    return array.sum(), array[::-1][:3].tolist(), poolwork.mapping_of(array)


def handed_back(array):
    """A task: return a view of what came in (the worker hands on what it received)."""
    return array[::-2]


def made(source, n, k, folder):
    """A task: an array the worker makes from ``source`` and returns."""
    return make(source, values(n, k), folder)


def grown_file(array):
    """``array`` in a named segment whose file then grows by a page: its descriptor (the
    segment's length when shared) no longer matches the file, so a receive fails (SPEC §6 O7)."""
    a = stridemap.share(array, kind="file")
    path = a.segment.path
    os.truncate(path, os.path.getsize(path) + 4096)
    return a


def make_grown(n):
    """A task: return an array whose receive fails (see :func:`grown_file`)."""
    return grown_file(values(n))


def pid(_=None):
    return os.getpid()


def folder_made():
    """A task: share an array into a named segment; the worker's pool folder (it stays until
    the worker exits)."""
    return stridemap.share(values(16), kind="file").segment.folder


class Runner:
    """One pool of two workers of ``kind`` with start ``method``; :meth:`run` runs a task and
    returns its result or raises its exception, within :data:`DEADLINE` seconds."""

    def __init__(self, kind, method, initializer=install_numpy):
        self.kind, self.method = kind, method
        ctx = multiprocessing.get_context(method)
        self.pool = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            if kind == "Pool":
                self.pool = ctx.Pool(2, initializer=initializer)
            elif kind == "ProcessPoolExecutor":
                self.pool = concurrent.futures.ProcessPoolExecutor(
                    2, mp_context=ctx, initializer=initializer)
            else:
                self.config = dict(backend="stridemap", n_jobs=2, start_method=method,
                                   initializer=initializer, max_nbytes=0)

    def run(self, fn, *args):
        with warnings.catch_warnings():
            # Fork with threads (3.12+; executors start their workers on demand), and loky's
            # advice against fork.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "`fork` start method should not be used")
            return self._run(fn, *args)

    def _run(self, fn, *args):
        if self.kind == "Pool":
            return self.pool.apply_async(fn, args).get(DEADLINE)
        if self.kind == "ProcessPoolExecutor":
            return self.pool.submit(fn, *args).result(DEADLINE)
        import joblib

        with joblib.parallel_config(**self.config):
            return joblib.Parallel(timeout=DEADLINE)([joblib.delayed(fn)(*args)])[0]

    def close(self):
        """Let the workers exit on their own (they remove their folders in /dev/shm); a Pool
        that lost a task never would: it is terminated after :data:`DEADLINE` seconds."""
        if self.kind == "Pool":
            self.pool.close()
            joining = threading.Thread(target=self.pool.join, daemon=True)
            joining.start()
            joining.join(DEADLINE)
            if joining.is_alive():
                self.pool.terminate()
                joining.join()
        elif self.kind == "ProcessPoolExecutor":
            self.pool.shutdown(wait=True, cancel_futures=True)
        else:
            stridemap.pools.shutdown_backend()
