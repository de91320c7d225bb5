"""Every lock the package keeps is free in a forked child, even when another thread held it at
the fork (stridemap.forksafe), and what a child needs first on the pools' path is not made
under a lock that a fork leaves held (the CRC tables, tempfile's names).

The locks are found by walking the globals of every ``stridemap`` module (and the dicts and
objects they hold), so that a lock added later is checked without being named here.
"""

import os
import pickle
import select
import sys
import threading
import warnings
from multiprocessing import reduction

import numpy as np

import stridemap
import stridemap.pools

try:
    import stridemap.dask  # noqa: F401 - its locks are checked too, where Dask is installed
except ImportError:
    pass

LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _locks_of(value, depth, seen, found):
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if isinstance(value, LOCK_TYPES):
        found.append(value)
    elif isinstance(value, dict):
        for v in list(value.values()):
            _locks_of(v, depth - 1, seen, found)
    elif isinstance(value, (list, tuple, set)):
        for v in list(value):
            _locks_of(v, depth - 1, seen, found)
    elif type(value).__module__.startswith("stridemap") and not callable(value):
        # The package's own objects (a threading.Event's lock is threading's business).
        attrs = dict(getattr(value, "__dict__", {}))
        for name in getattr(type(value), "__slots__", ()):
            attrs[name] = getattr(value, name, None)
        for v in attrs.values():
            _locks_of(v, depth - 1, seen, found)


def package_locks():
    """``(where, lock)`` for every lock reachable from a stridemap module's globals."""
    out, seen = [], set()
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("stridemap") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            found = []
            _locks_of(value, 3, seen, found)
            out += [(f"{name}.{attr}", lock) for lock in found]
    return out


def _use_the_package(tmp_path):
    """Make what the pools' path makes lazily: a listener and a connection, folders, caches."""
    stridemap.pools.install()
    a = stridemap.share(np.arange(100.0))
    a.freeze()
    b = stridemap.share(np.arange(100.0), kind="file", temp_folder=str(tmp_path))
    for x in (a, b, a[::2], b[::3]):
        pickle.loads(bytes(reduction.ForkingPickler.dumps(x)))
    return a, b


def test_every_package_lock_is_free_in_a_child_forked_while_a_thread_holds_it(tmp_path):
    keep = _use_the_package(tmp_path)
    locks = package_locks()
    names = {where for where, _ in locks}
    # The walk finds the locks of the pools' path (it cannot pass by finding none).
    for expected in ("stridemap.transport.handoff._scope_lock",
                     "stridemap.transport.handoff._pending_lock",
                     "stridemap.transport.channel._lock",
                     "stridemap.transport.fetch._conns",
                     "stridemap.segments.lifetime._state",
                     "stridemap.integrations.joblib_backend._executors_lock"):
        assert expected in names, sorted(names)
    held, release = threading.Event(), threading.Event()

    def holder():
        for _, lock in locks:
            lock.acquire()
        held.set()
        release.wait()
        for _, lock in reversed(locks):
            lock.release()

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)
    r, w = os.pipe()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: which of the locks it has now (after the fork's hooks) are held?
            try:
                stuck = [where for where, lock in package_locks() if not lock.acquire(timeout=1)]
                os.write(w, repr(stuck).encode())
            finally:
                os._exit(0)
        os.close(w)
        ready, _, _ = select.select([r], [], [], 60)
        report = os.read(r, 1 << 16).decode() if ready else "no answer in 60 s"
        os.waitpid(pid, 0)
    finally:
        release.set()
        t.join()
        os.close(r)
    assert report == "[]", f"locks still held in the forked child: {report}"
    del keep


def test_what_a_child_needs_first_is_made_at_import():
    """Made on first use under a lock, these would be a forked child's lock to wait for
    forever: a fresh interpreter has them as soon as it imported stridemap.pools."""
    import subprocess

    probe = ("import tempfile, stridemap.pools; from stridemap.codec import crc; "
             "print(crc._tables is not None, hasattr(crc, '_lock'), tempfile.tempdir is not None, "
             "getattr(tempfile, '_name_sequence', 1) is not None)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["True", "False", "True", "True"], out
