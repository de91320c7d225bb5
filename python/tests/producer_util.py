"""Helpers of the producer tests: the layouts every test shares, and the zero-copy proof."""

import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def cases():
    """name -> a fresh array of that layout (the issue's list, plus a few harder ones)."""
    m = np.arange(1000, dtype="<f8")
    mat = (10 * np.arange(6)[:, None] + np.arange(4)).astype("<i4")
    rng = np.random.default_rng(7)
    return {
        "C": np.arange(60, dtype="<f8").reshape(3, 4, 5),
        "F": np.asfortranarray(np.arange(60, dtype="<i8").reshape(3, 4, 5)),
        "reversed": m[::-1],
        "reversed_step": m[8::-2],
        "reversed_slice": m[500:490:-1],
        "reversed_2d": mat[::-1, ::-1],
        "transposed": mat.T,
        "transposed_reversed": mat.T[::-1],
        "broadcast": np.broadcast_to(np.arange(7, dtype="<i2"), (50, 7)),
        "broadcast_column": np.broadcast_to(np.arange(5.0)[:, None], (5, 9)),
        "zero_d": np.array(3.25, dtype="<f8"),
        "empty": np.empty((0, 4), dtype="<f4"),
        "empty_strided": np.arange(20.0).reshape(4, 5)[:, 2:2],
        "big_endian": np.arange(24, dtype=">f8").reshape(4, 6)[:, ::-2],
        "complex": (np.arange(12) + 1j * np.arange(12)).astype("<c16").reshape(3, 4).T,
        "bool": (np.arange(30) % 3 == 0).reshape(5, 6)[::-1],
        "void": np.frombuffer(rng.bytes(12 * 5), dtype="|V12")[::-2],
        "unaligned": np.frombuffer(rng.bytes(8 * 9 + 1), dtype="<f8", offset=1),
        "gaps": np.arange(200, dtype="<u4").reshape(10, 20)[::3, 1::4],
        "windows": sliding_window_view(np.arange(100, dtype="<i8"), 10),
        "nan_payload": np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f" * 3, dtype="<f8"),
        "float16": np.arange(10, dtype="<f2")[::-1],
        "longdouble": np.arange(6, dtype=np.longdouble),
    }


def same_bytes(a, b):
    """Same dtype, shape and element bytes, in logical order (NaN-proof)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def maps():
    """This process's mappings: [(start, end, name)]."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[5].strip() if len(parts) > 5 else ""))
    return out


def mapping_name(a):
    """The name of the mapping ``a``'s first byte lies in (zero-copy proof), or None."""
    addr = a.__array_interface__["data"][0]
    for lo, hi, name in maps():
        if lo <= addr < hi:
            return name
    return None


def is_stridemap_mapping(a):
    name = mapping_name(a)
    return name is not None and ("memfd:" in name or "stridemap-" in name)


def open_fds():
    return sorted(int(x) for x in os.listdir("/proc/self/fd"))


def quiet():
    """Lets earlier tests' garbage go and waits for pending named segments, so that a snapshot
    of fds and mappings is not changed by a finalizer or the reaper thread meanwhile."""
    import gc
    import time

    import stridemap

    gc.collect()
    deadline = time.monotonic() + 5
    while stridemap.reap() and time.monotonic() < deadline:
        time.sleep(0.01)
    gc.collect()


def settled(measure, ok, seconds=30):
    """``measure()`` once ``ok`` of it, or the last one after ``seconds``. For counts that work
    in flight changes: the thread that hands an fd to another process closes its copy just
    after the receiver has it, and the receiver may be done (its result already back) before
    that thread has run again; other tests' pools wind down in their own threads."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        got = measure()
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def read_elsewhere(n):
    """``(segment, reader)``: an ``empty()`` array of ``n`` float64 (0 to n - 1) opened by a
    reader of its own (its own open file description, so its own shared lock), the array
    itself let go of: its segment waits for reuse while another reader maps it."""
    import stridemap

    a = stridemap.empty(n, "<f8")
    a[:] = np.arange(float(n))
    ex = stridemap.export(a)
    try:
        reader = stridemap.open(ex.record, fd=ex.fd)
    finally:
        ex.close()
    return a.segment, reader


def forked(check):
    """A child forked now that runs ``check()`` when :meth:`Forked.verdict` is asked for (the
    parent changes things first) and reports whether it returned True."""
    return Forked(check)


class Forked:
    """See :func:`forked`."""

    def __init__(self, check):
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(go_w)
            os.read(go_r, 1)
            try:
                ok = bool(check())
            except BaseException:  # noqa: BLE001 - a failure is the verdict
                ok = False
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
        os.close(w)
        os.close(go_r)
        self.pid, self.r, self.go = pid, r, go_w

    def verdict(self):
        """The child's check, run now; True when it held."""
        os.write(self.go, b"x")
        return os.read(self.r, 1) == b"1"

    def close(self):
        """Let the child end (its read returns if the verdict was never asked) and reap it."""
        if self.go is not None:
            os.close(self.go)
            self.go = None
            os.waitpid(self.pid, 0)
            os.close(self.r)


def one_worker_pool():
    """A ``ProcessPoolExecutor`` of one forkserver worker with the pools' reducers installed
    (here and there), its worker started: a generator for a module's fixture."""
    import concurrent.futures
    import multiprocessing

    import stridemap.pools

    stridemap.pools.install()
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx,
                                                initializer=stridemap.pools.install) as p:
        p.submit(os.getpid).result()
        yield p
