"""Functions the Dask tests run in worker processes (importable there: the workers inherit the
test process's sys.path)."""

import os

import numpy as np


def make(seed, n):
    """A deterministic int64 array of ``n`` elements."""
    return np.random.default_rng(seed).integers(0, 1_000_000, n)


def make_shared(seed, n):
    """The same array, allocated in a stridemap segment by the task itself."""
    import stridemap

    out = stridemap.empty(n, np.int64, kind="file")
    out[:] = make(seed, n)
    return out.freeze()


def square_shared(seed, n):
    """A 2-d array allocated in a segment (rows = columns = n)."""
    import stridemap

    out = stridemap.empty((n, n), np.int64, kind="file")
    out[:] = make(seed, n * n).reshape(n, n)
    return out.freeze()


def transposed_reversed(a):
    """A view (not a copy) of ``a``."""
    return a.T[::-1]


def part_sum(a, i, k):
    """The sum of every k-th element from i: a task that reads the whole chunk."""
    return int(a[i::k].sum())


def checksum(a):
    return int(a.sum()), a.shape, str(a.dtype)


def is_mapped_from_peer(a):
    """Whether ``a`` maps a segment another process made (what the receiver got)."""
    import stridemap

    seg = stridemap.segment_of(a)
    return seg is not None and type(seg).__name__ == "_Opened"


def sizes_of_held(dask_worker):
    """``{key: (dask sizeof, nbytes)}`` of the arrays this worker holds in memory."""
    from dask.sizeof import sizeof

    data = dask_worker.data
    fast = getattr(data, "fast", data)
    return {str(k): (sizeof(v), v.nbytes) for k, v in dict(fast).items()
            if isinstance(v, np.ndarray)}


def spilled(dask_worker):
    """``(keys on disk, bytes on disk)`` of this worker's spill buffer."""
    data = dask_worker.data
    total = data.spilled_total
    return len(data.slow), total.disk


def evict_all(dask_worker):
    """Spill everything this worker holds in memory to disk; the number of keys spilled."""
    data = dask_worker.data
    n = 0
    while len(data.fast) and data.evict() >= 0:
        n += 1
    return n


def fault_next_open(how):
    """Make this worker's next received stridemap descriptor find its segment gone
    (``how="unlink"``) or recycled (``how="recycle"``: the header's generation bumped, O10),
    as if the producer had let go of it meanwhile. Runs in the receiving worker."""
    import stridemap
    import stridemap.dask as sd
    from stridemap.segments.header import read_header, encode_header

    real = sd._open
    state = {"done": False}

    def faulty(record, folder):
        if not state["done"]:
            state["done"] = True
            desc = stridemap.decode(record)
            if how == "unlink":
                os.unlink(desc.path)
            else:
                fd = os.open(desc.path, os.O_RDWR)
                try:
                    h = read_header(fd)
                    os.pwrite(fd, encode_header(h.segment_id, h.generation + 1, h.capacity,
                                                h.owner_pid, h.data_offset), 0)
                finally:
                    os.close(fd)
        return real(record, folder)

    sd._open = faulty
    return True


def client_main():
    """A client process (``python -c 'import dask_tasks; dask_tasks.client_main()' ADDRESS W0
    W1 MIN``) that activates stridemap, gathers an array from W0 and scatters one to W1, both
    directly; prints its counters and what it saw as JSON."""
    import json
    import sys

    from distributed import Client

    import stridemap.dask as sd

    address, w0, w1, min_bytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    n = 1 << 18
    sd.activate(min_bytes=min_bytes)
    seen = {}
    with Client(address, direct_to_workers=True) as c:
        got = c.gather(c.submit(make, 7, n, workers=[w0], pure=False))
        seen["gathered_equal"] = bool(np.array_equal(got, make(7, n)))
        seen["gathered_mapped"] = is_mapped_from_peer(got)
        seen["gathered_writeable"] = bool(got.flags.writeable)
        del got
        arr = make(8, n)
        [s] = c.scatter([arr], workers=[w1], direct=True)
        seen["scattered_sum_ok"] = c.submit(checksum, s, workers=[w1]).result()[0] == int(arr.sum())
        seen["scattered_mapped"] = c.submit(is_mapped_from_peer, s, workers=[w1]).result()
        del s
    seen["stats"] = sd.stats()
    print(json.dumps(seen))


def segment_backed(dask_worker):
    """How many arrays this worker holds in memory are backed by a stridemap segment."""
    import stridemap

    data = dask_worker.data
    fast = getattr(data, "fast", data)
    return sum(1 for v in dict(fast).values()
               if isinstance(v, np.ndarray) and stridemap.segment_of(v) is not None)


def every_other(a):
    """A view (not a copy) of ``a``."""
    return a[::2]


def process_memory(dask_worker):
    """``(RSS, what the worker's memory monitor reports)``, read back to back."""
    import psutil

    rss = psutil.Process().memory_info().rss
    return rss, dask_worker.monitor.get_process_memory()


def layouts(n):
    """A tuple of arrays of awkward layouts, each of at least 64 KiB."""
    base = make(60, n * 64).reshape(n, 64)
    return (
        np.asfortranarray(base),
        base.astype(">f8")[::-1, ::2],
        (base + 1j * base).astype("<c16").T,
        base.astype("<f2")[n // 4:, ::-1],
        np.broadcast_to(base[0], (n * 4, 64)),
    )


def same_layouts(got, n):
    want = layouts(n)
    return [bool(np.array_equal(g, w)) and g.dtype == w.dtype and g.shape == w.shape
            for g, w in zip(got, want)]
