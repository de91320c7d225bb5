"""``python -m stridemap.bench``: handing float64 arrays to a 2-worker process pool.

Four ways side by side, on the same machine in one run, repeats interleaved (each repeat runs
every way once, in a rotating order), medians reported, ratios computed from the medians:

- ``pickle``: ``concurrent.futures.ProcessPoolExecutor`` pickling the array (its default);
- ``joblib``: ``joblib.Parallel(n_jobs=2)``, joblib's default backend, which dumps arrays of at
  least 1 MB to a memory-mapped file per call;
- ``shared_memory``: ``multiprocessing.shared_memory`` by hand: the caller copies the array into
  a block, sends its name, the workers attach (the repeated pass reuses the block);
- ``stridemap``: ``stridemap.pools.install()`` and ``stridemap.share``, the same
  ``ProcessPoolExecutor`` (the repeated pass hands the same shared array again, held between
  calls as the block is).

Measured, per size:

- first pass: a fresh array (written once, not yet shared) handed to both workers; each task
  reads two elements and replies a float. The time includes each way's own copy (pickling,
  joblib's dump, the copy into the block, ``share``);
- repeated: the same array handed again (each repeat takes the median of 5 such calls below
  1 GiB, one at 1 GiB);
- results: one worker makes an array (filling it is outside the clock) and returns it; the
  clock runs from the worker's ``return`` to the parent holding the array (``perf_counter`` is
  the system's monotonic clock, shared by the processes); ``stridemap`` fills a
  ``stridemap.empty`` array and returns it (a descriptor goes back). Before the repeats of a
  size, each worker returns one array of it for ``shared_memory`` and ``stridemap``, untimed
  (two tasks at once, each waiting 0.2 s first, so that each worker takes one): the row is a
  pool's steady state, where a worker's result reuses the segment of its last one (a worker's
  first result of a size makes its segment, a new map in the parent: the ``unpickle (miss)``
  step of the breakdown; at 1 GiB, with 3 repeats, two of the three samples were such first
  results, one per worker). When a worker's segment waited longer than 5 s it was made hollow
  and is reserved again when the next ``empty()`` takes it: that is in the making, outside
  this row's clock, and in the row below;
- results, whole: what a caller of a task that makes an array waits for, calls back to back
  (the median of 5 within a repeat below 1 GiB, 3 at 1 GiB): the clock runs from the submit
  to the parent done with the array: one worker makes it, fills it and returns it, the parent
  sums it and lets it go (``pickle`` and ``joblib``: ``numpy.empty``, pickled back or joblib's
  way; ``shared_memory``: a new block per result, attached, then closed and unlinked by the
  parent; ``stridemap``: ``stridemap.empty``, whose segment its worker recycles once the
  parent let go of it, and which the parent keeps mapped). The ``results`` row leaves the
  making, the filling and the reading out; this one counts them, as the caller does;
- end to end, largest size: fill an array, hand it to both workers, each sums every other
  element, reply; joblib's default backend against the ``"stridemap"`` joblib backend.

And joblib's failing views (``m[::-1]``, ``m.T[::-1]`` of an ``np.memmap``): what each way
returns, checked against numpy.

Options: ``--sizes 1M,64M,1G``, ``--repeats N`` (default 5; 3 for sizes of 1 GiB and more),
``--quick`` (1 MiB, one repeat: the smoke run of the tests).
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import stridemap
import stridemap.pools

MIB = 1 << 20
WAYS = ("pickle", "joblib", "shared_memory", "stridemap")
REPEATED_SAMPLES = 5  # calls per repeat for the repeated pass, below 1 GiB
PASSES = ("first", "repeated", "results", "results, whole")


# --- in the workers -------------------------------------------------------------------------

def touch(a):
    """A task that reads two elements of its argument."""
    return float(a[0]) + float(a[-1])


def touch_block(name, n):
    """The same task on a ``shared_memory`` block sent by name."""
    shm = _attach(name)
    try:
        a = np.ndarray((n,), dtype="<f8", buffer=shm.buf)
        out = float(a[0]) + float(a[-1])
        del a
    finally:
        shm.close()
    return out


def _attach(name):
    """Attach a block. The pool's workers share the parent's resource tracker (every start
    method passes it on), so attaching registers a name the tracker already holds and the
    parent's ``unlink`` unregisters it; unregistering here as well would make the tracker
    report a KeyError at that unlink. (A process with a tracker of its own would unlink the
    block at exit, CPython gh-82300: ``track=False`` from 3.13.)"""
    from multiprocessing import shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    return shared_memory.SharedMemory(name)


def total_of(arrays):
    """A task that reads two elements of every array of a dict."""
    return float(sum(float(a[0]) + float(a[-1]) for a in arrays.values()))


def total_of_blocks(blocks):
    """The same task on ``shared_memory`` blocks sent by name, one per array."""
    out = 0.0
    for name, n in blocks:
        out += touch_block(name, n)
    return out


def total_of_one_block(name, layout):
    """The same task on one ``shared_memory`` block holding every array at its offset."""
    shm = _attach(name)
    try:
        out = 0.0
        for offset, n in layout:
            a = np.ndarray((n,), dtype="<f8", buffer=shm.buf, offset=offset)
            out += float(a[0]) + float(a[-1])
            del a
    finally:
        shm.close()
    return out


def make_plain(n):
    """A new array, returned as is (pickled back, or joblib's way)."""
    a = np.empty(n)
    a.fill(1.0)
    return a, time.perf_counter()


def make_block(n):
    """A new array in a ``shared_memory`` block; its name goes back."""
    from multiprocessing import resource_tracker, shared_memory

    shm = shared_memory.SharedMemory(create=True, size=n * 8)
    if sys.version_info < (3, 13):
        resource_tracker.unregister(shm._name, "shared_memory")  # the parent unlinks it
    a = np.ndarray((n,), dtype="<f8", buffer=shm.buf)
    a.fill(1.0)
    del a
    shm.close()
    return shm.name, time.perf_counter()


def make_shared(n):
    """A new array in a stridemap segment (``empty()``: recycled once the parent let go of an
    earlier one); its descriptor goes back."""
    a = stridemap.empty((n,), "<f8")
    a.fill(1.0)
    return a, time.perf_counter()


def make_plain_filled(n):
    """A new array, filled, returned as is (pickled back, or joblib's way)."""
    a = np.empty(n)
    a.fill(1.0)
    return a


def make_block_filled(n):
    """A new ``shared_memory`` block, filled; its name goes back."""
    return make_block(n)[0]


def make_shared_filled(n):
    """A ``stridemap.empty`` array, filled; its descriptor goes back."""
    return make_shared(n)[0]


def _after_a_while(fn, *args):
    """``fn(*args)`` after 0.2 s: two such tasks submitted at once go to two workers."""
    time.sleep(0.2)
    return fn(*args)


def strided_sum(a, start):
    """Every other element from ``start``: half the array."""
    return float(a[start::2].sum())


def checksum(a):
    """What a worker received, reduced to one number (NaN-free test data)."""
    return float(np.asarray(a, dtype="<f8").ravel().dot(np.arange(1, a.size + 1)))


# --- in the parent -------------------------------------------------------------------------


class Bench:
    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        stridemap.pools.install()
        self.pool = concurrent.futures.ProcessPoolExecutor(
            2, mp_context=ctx, initializer=stridemap.pools.install
        )
        self.blocks = {}
        self.shared = {}

    def close(self):
        self.shared.clear()
        self.pool.shutdown()
        for shm in self.blocks.values():
            shm.close()
            shm.unlink()
        stridemap.pools.shutdown_backend()

    def both(self, fn, *args):
        futures = [self.pool.submit(fn, *args) for _ in range(2)]
        return [f.result() for f in futures]

    # Handing an array to both workers: seconds.
    def hand(self, way, a, repeated):
        import joblib

        t0 = time.perf_counter()
        if way == "pickle":
            out = self.both(touch, a)
        elif way == "joblib":
            out = joblib.Parallel(n_jobs=2)(joblib.delayed(touch)(a) for _ in range(2))
        elif way == "shared_memory":
            shm = self.blocks.get(id(a)) if repeated else None
            if shm is None:
                from multiprocessing import shared_memory

                shm = shared_memory.SharedMemory(create=True, size=a.nbytes)
                np.ndarray(a.shape, a.dtype, buffer=shm.buf)[...] = a
                self.blocks[id(a)] = shm
            out = self.both(touch_block, shm.name, a.size)
        else:
            # Held between calls, as the block is: share() reuses a copy only while it lives.
            s = self.shared.get(id(a)) if repeated else None
            if s is None:
                s = self.shared[id(a)] = stridemap.share(a)
            out = self.both(touch, s)
        t = time.perf_counter() - t0
        if out != [touch(a)] * 2:
            raise AssertionError(f"{way}: the workers read {out}, not {touch(a)}")
        return t

    def forget(self, a):
        self.shared.pop(id(a), None)
        shm = self.blocks.pop(id(a), None)
        if shm is not None:
            shm.close()
            shm.unlink()

    # One worker returns an array of n float64: seconds from its return to the parent's hands.
    def result(self, way, n):
        import joblib

        if way == "pickle":
            a, t_ret = self.pool.submit(make_plain, n).result()
        elif way == "joblib":
            [(a, t_ret)] = joblib.Parallel(n_jobs=2)([joblib.delayed(make_plain)(n)])
        elif way == "shared_memory":
            from multiprocessing import shared_memory

            name, t_ret = self.pool.submit(make_block, n).result()
            shm = shared_memory.SharedMemory(name)  # tracked here: unlink() untracks it
            a = np.ndarray((n,), dtype="<f8", buffer=shm.buf)
        else:
            a, t_ret = self.pool.submit(make_shared, n).result()
        t = time.perf_counter() - t_ret
        if a.shape != (n,) or a[0] != 1.0 or a[-1] != 1.0:
            raise AssertionError(f"{way}: the result is wrong")
        del a
        if way == "shared_memory":
            shm.close()
            shm.unlink()
        return t


    # Before the repeats of a size (module docstring): one result per worker, untimed.
    def warm_results(self, way, n):
        if way == "shared_memory":
            from multiprocessing import shared_memory

            for name, _ in [f.result() for f in [self.pool.submit(_after_a_while, make_block, n)
                                                 for _ in range(2)]]:
                shm = shared_memory.SharedMemory(name)
                shm.close()
                shm.unlink()
        elif way == "stridemap":
            got = [f.result() for f in [self.pool.submit(_after_a_while, make_shared, n)
                                        for _ in range(2)]]
            del got

    # Results, whole (module docstring): seconds from the submit to the parent done with it.
    def result_whole(self, way, n):
        import joblib

        t0 = time.perf_counter()
        if way == "pickle":
            total = float(self.pool.submit(make_plain_filled, n).result().sum())
        elif way == "joblib":
            [a] = joblib.Parallel(n_jobs=2)([joblib.delayed(make_plain_filled)(n)])
            total = float(a.sum())
            del a
        elif way == "shared_memory":
            from multiprocessing import shared_memory

            shm = shared_memory.SharedMemory(self.pool.submit(make_block_filled, n).result())
            a = np.ndarray((n,), dtype="<f8", buffer=shm.buf)
            total = float(a.sum())
            del a
            shm.close()
            shm.unlink()
        else:
            total = float(self.pool.submit(make_shared_filled, n).result().sum())
        t = time.perf_counter() - t0
        if total != float(n):
            raise AssertionError(f"{way}: the result sums to {total}, not {n}")
        return t


MANY_WAYS = ("pickle", "shared_memory, a block per array", "shared_memory, one block",
             "stridemap.share_many")


def many(bench, count, n, way):
    """Hand a dict of ``count`` arrays of ``n`` float64 to one worker, which reads two elements
    of each: seconds, including each way's copy (pickling, the blocks, share_many)."""
    from multiprocessing import shared_memory

    arrays = {f"a{i}": np.full(n, float(i)) for i in range(count)}
    want = total_of(arrays)
    blocks = []
    t0 = time.perf_counter()
    try:
        if way == "pickle":
            got = bench.pool.submit(total_of, arrays).result()
        elif way == "shared_memory, a block per array":
            names = []
            for a in arrays.values():
                shm = shared_memory.SharedMemory(create=True, size=a.nbytes)
                blocks.append(shm)
                np.ndarray(a.shape, a.dtype, buffer=shm.buf)[...] = a
                names.append((shm.name, a.size))
            got = bench.pool.submit(total_of_blocks, names).result()
        elif way == "shared_memory, one block":
            layout, end = [], 0
            for a in arrays.values():
                layout.append((end, a.size))
                end += -(-a.nbytes // 64) * 64
            shm = shared_memory.SharedMemory(create=True, size=end)
            blocks.append(shm)
            for (offset, size), a in zip(layout, arrays.values()):
                np.ndarray((size,), "<f8", buffer=shm.buf, offset=offset)[...] = a
            got = bench.pool.submit(total_of_one_block, shm.name, layout).result()
        else:
            got = bench.pool.submit(total_of, stridemap.share_many(arrays)).result()
        t = time.perf_counter() - t0
    finally:
        for shm in blocks:
            shm.close()
            shm.unlink()
    if got != want:
        raise AssertionError(f"{way}: the worker read {got}, not {want}")
    return t


def end_to_end(n, way):
    """Fill n float64, hand to 2 workers, each sums every other element, reply: seconds."""
    import joblib

    t0 = time.perf_counter()
    if way == "joblib":
        a = np.empty(n)
        a.fill(1.0)
        config = dict(n_jobs=2)
    else:
        a = stridemap.empty((n,), "<f8")
        a.fill(1.0)
        a.freeze()
        config = dict(backend="stridemap", n_jobs=2)
    with joblib.parallel_config(**config):
        sums = joblib.Parallel()(joblib.delayed(strided_sum)(a, s) for s in (0, 1))
    t = time.perf_counter() - t0
    if sums != [n / 2, n / 2]:
        raise AssertionError(f"{way}: sums {sums}, not {n / 2} each")
    return t


def failing_views(n):
    """joblib's failing views of an n-float64 memmap through both backends: what came back."""
    import joblib

    folder = tempfile.mkdtemp(prefix="stridemap-bench-")
    path = os.path.join(folder, "m.bin")
    rows = 1024
    m = np.memmap(path, dtype="<f8", mode="w+", shape=(rows, max(n // rows, 1)))
    m[:] = np.arange(m.size).reshape(m.shape) % 1000
    m.flush()
    views = {"m[::-1]": lambda: m[::-1], "m.T[::-1]": lambda: m.T[::-1]}
    out = {}
    try:
        for name, view in views.items():
            want = checksum(view())
            for backend in ("loky", "stridemap"):
                try:
                    with joblib.parallel_config(backend=backend, n_jobs=2):
                        got = joblib.Parallel()(joblib.delayed(checksum)(view()) for _ in range(2))
                    verdict = "exact" if got == [want, want] else "WRONG VALUES"
                except Exception as e:  # what joblib raises when its worker dies
                    verdict = f"crashed ({type(e).__name__})"
                out[(name, backend)] = verdict
    finally:
        del m
        os.unlink(path)
        os.rmdir(folder)
    return out


def _size(text):
    units = {"K": 1 << 10, "M": MIB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _fmt_size(nbytes):
    return f"{nbytes >> 30} GiB" if nbytes >= 1 << 30 else f"{nbytes >> 20} MiB"


def _fmt_t(t):
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def print_table(out, title, columns, aligns, rows):
    """A markdown table under ``title``: ``aligns`` is "l" or "r" per column."""
    print("", file=out)
    print(title, file=out)
    print("", file=out)
    print("| " + " | ".join(columns) + " |", file=out)
    print("|" + "|".join("---" if a == "l" else "---:" for a in aligns) + "|", file=out)
    for row in rows:
        print("| " + " | ".join(row) + " |", file=out)


def _ratio(other, ours):
    return f"{other / ours:.1f}x" if ours > 0 else "-"


def run(sizes, repeats, out=sys.stdout, end_to_end_size=None, quick=False):
    """Run the benchmark; print markdown tables to ``out``; return the medians."""
    import joblib

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, joblib {joblib.__version__}, "
          f"{os.cpu_count()} cpus; medians of {repeats} interleaved repeats "
          "(1 GiB: fewer, see --repeats)", file=out)
    bench = Bench()
    medians = {}
    try:
        # Warm up: start the workers of both pools and loky's, and the connections each way
        # between the parent and the workers (a result comes back the other way).
        warm = np.arange(MIB // 8, dtype="<f8")
        for way in WAYS:
            bench.hand(way, warm, repeated=False)
            for _ in range(4):
                bench.result(way, MIB // 8)
        bench.forget(warm)
        for nbytes in sizes:
            n = nbytes // 8
            reps = repeats if nbytes < 1 << 30 else min(repeats, 3)
            times = {(p, w): [] for p in PASSES for w in WAYS}
            base = np.arange(n, dtype="<f8")
            for way in WAYS:
                bench.warm_results(way, n)
            for r in range(reps):
                order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
                for way in order:
                    a = base.copy()  # a fresh object: nothing shared yet
                    times["first", way].append(bench.hand(way, a, repeated=False))
                    # The repeated pass can be sampled within a repeat: its median of
                    # REPEATED_SAMPLES calls (one for 1 GiB, where pickling takes seconds).
                    k = REPEATED_SAMPLES if nbytes < 1 << 30 else 1
                    times["repeated", way].append(statistics.median(
                        bench.hand(way, a, repeated=True) for _ in range(k)))
                    bench.forget(a)
                    del a
                for way in order:
                    times["results", way].append(bench.result(way, n))
                for way in order:
                    k = REPEATED_SAMPLES if nbytes < 1 << 30 else 3
                    times["results, whole", way].append(statistics.median(
                        bench.result_whole(way, n) for _ in range(k)))
            del base
            for key, ts in times.items():
                medians[(nbytes, *key)] = statistics.median(ts)
        print("", file=out)
        print("| size | pass | pickle | joblib | shared_memory | stridemap | vs pickle | "
              "vs joblib | vs shared_memory |", file=out)
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|", file=out)
        for nbytes in sizes:
            for p in PASSES:
                m = {w: medians[(nbytes, p, w)] for w in WAYS}
                s = m["stridemap"]
                print(f"| {_fmt_size(nbytes)} | {p} | " + " | ".join(_fmt_t(m[w]) for w in WAYS)
                      + f" | {_ratio(m['pickle'], s)} | {_ratio(m['joblib'], s)} | "
                      f"{_ratio(m['shared_memory'], s)} |", file=out)
        e2e = end_to_end_size if end_to_end_size is not None else max(sizes)
        ts = {"joblib": [], "stridemap": []}
        for way in ts:  # start the backends' workers outside the clock
            end_to_end(MIB // 8, way)
        for r in range(min(repeats, 3)):
            for way in (("joblib", "stridemap") if r % 2 == 0 else ("stridemap", "joblib")):
                ts[way].append(end_to_end(e2e // 8, way))
        ej, es = statistics.median(ts["joblib"]), statistics.median(ts["stridemap"])
        medians[(e2e, "end to end", "joblib")] = ej
        medians[(e2e, "end to end", "stridemap")] = es
        print_table(out, f"End to end, {_fmt_size(e2e)} (fill, hand to 2 workers, each sums "
                    "every other element, reply):",
                    ("joblib default backend", 'joblib "stridemap" backend', "ratio"), "rrr",
                    [(_fmt_t(ej), _fmt_t(es), _ratio(ej, es))])
        count, n = (100, 8192) if quick else (1000, 8192)
        ts = {w: [] for w in MANY_WAYS}
        for r in range(min(repeats, 5) if not quick else 1):
            for way in MANY_WAYS[r % len(MANY_WAYS):] + MANY_WAYS[:r % len(MANY_WAYS)]:
                ts[way].append(many(bench, count, n, way))
        m = {w: statistics.median(v) for w, v in ts.items()}
        medians["many"] = m
        print_table(out, f"{count:,} arrays of {n * 8 >> 10} KiB in one task (a dict; the worker "
                    "reads two elements of each), each way's copy included:",
                    ("way", "time", "stridemap.share_many is"), "lrr",
                    [(w, _fmt_t(m[w]), _ratio(m[w], m["stridemap.share_many"]))
                     for w in MANY_WAYS])
        verdicts = failing_views(min(sizes[-1], 64 * MIB) // 8)
        print("", file=out)
        print("joblib's failing views of an np.memmap "
              f"({_fmt_size(min(sizes[-1], 64 * MIB))}), what the workers received:", file=out)
        print("", file=out)
        print("| view | joblib default backend | joblib \"stridemap\" backend |", file=out)
        print("|---|---|---|", file=out)
        for name in ("m[::-1]", "m.T[::-1]"):
            print(f"| `{name}` | {verdicts[(name, 'loky')]} | {verdicts[(name, 'stridemap')]} |",
                  file=out)
        medians["failing views"] = verdicts
        from . import breakdown

        medians["breakdown"] = breakdown.print_table(out)
    finally:
        bench.close()
    return medians


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m stridemap.bench",
                                description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1M,64M,1G", help="array sizes (default 1M,64M,1G)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    p.add_argument("--quick", action="store_true", help="1 MiB, one repeat (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        run([MIB], 1, quick=True)
    else:
        run([_size(s) for s in args.sizes.split(",")], max(args.repeats, 1))


if __name__ == "__main__":
    main()
