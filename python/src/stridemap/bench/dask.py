"""Benchmark: default Dask against Dask with :mod:`stridemap.dask`, on one machine.

``python -m stridemap.bench.dask`` runs two workloads on a fresh ``LocalCluster`` of worker
processes per run, alternating the modes run by run, and prints a table of medians and ratios:

- **broadcast**: one chunk (256 MiB) made on one worker feeds tasks on every worker (each task
  reads the whole chunk). A third mode has the task allocate the chunk in a segment
  (``stridemap.empty``): then even the sender's one copy is gone;
- **transpose**: ``(x + x.T).sum(axis=0)`` of a random square array (2 GiB), chunked so that
  most chunks meet a partner held by another worker.

Measured per run: the wall time of the workload (for broadcast, the fan-out after the chunk
exists; for transpose, the whole computation, random numbers included) and the peak of the
total PSS of the worker processes (sampled every 20 ms from ``/proc/PID/smaps_rollup``), and
of the host memory they cost: their PSS without shared-memory mappings plus the bytes of their
segment files, counted once (PSS misses tmpfs pages that no process has mapped and touched,
e.g. a segment while it is being written); both also net of the idle cluster's. Results of
the modes are checked equal. ``--smoke`` runs tiny sizes once (what the test suite does); the
sizes and the number of workers are options.
"""

import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np

MIB = 1 << 20


def _make_chunk(nbytes, seed):
    return np.random.default_rng(seed).random(nbytes // 8)


def _make_chunk_in_segment(nbytes, seed):
    import stridemap

    out = stridemap.empty(nbytes // 8, np.float64, kind="file")
    np.random.default_rng(seed).random(out=out)
    return out.freeze()


def _part_sum(a, i, k):
    return float(a[i::k].sum())


def _rollup(pid):
    """``(Pss, Pss_Shmem)`` bytes of a process (``/proc/PID/smaps_rollup``)."""
    pss = shmem = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith(b"Pss_Shmem:"):
                shmem = int(line.split()[1]) * 1024
    return pss, shmem


def _segment_bytes(root, pids):
    """Bytes allocated by the files in these processes' pool folders below ``root``."""
    total = 0
    prefixes = tuple(f"stridemap-{p}-" for p in pids)
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefixes)]
    except OSError:
        return 0
    for name in names:
        try:
            for e in os.scandir(os.path.join(root, name)):
                try:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    pass
        except OSError:
            pass
    return total


class _Sampler:
    """Peaks of the worker processes' memory, sampled in a thread: ``pss`` (the sum of their
    PSS) and ``host`` (their PSS without shared-memory mappings, plus the bytes of their
    segment files counted once: tmpfs pages count whether or not anyone has mapped them)."""

    def __init__(self, pids, root, period=0.02):
        self.pids = pids
        self.root = root
        self.period = period
        self.pss = self.host = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        pss = host = 0
        for p in self.pids:
            try:
                a, b = _rollup(p)
            except (OSError, ValueError):  # a process that just exited
                continue
            pss += a
            host += a - b
        return pss, host + _segment_bytes(self.root, self.pids)

    def _run(self):
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.period)

    def _take(self):
        pss, host = self.sample()
        self.pss, self.host = max(self.pss, pss), max(self.host, host)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._take()


def _cluster(n_workers, mode, min_bytes):
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=50)
    client = Client(cluster)
    if mode.startswith("stridemap"):
        import stridemap.dask as sd

        sd.install(client, min_bytes=min_bytes)
    return cluster, client


def _idle(client, pids, root):
    import gc

    client.run(gc.collect)
    time.sleep(0.3)
    return _Sampler(pids, root).sample()


def _root(client):
    import stridemap.dask as sd

    return list(client.run(sd.default_root).values())[0]


def _measured(wall, m, idle, result, client, mode, **extra):
    return {"wall": wall, "pss": m.pss, "host": m.host, "pss_net": m.pss - idle[0],
            "host_net": m.host - idle[1], "result": result,
            "stats": _stridemap_stats(client, mode), **extra}


def run_broadcast(n_workers, nbytes, mode, tasks_per_worker=4, min_bytes=1 << 20):
    """One chunk of ``nbytes`` on worker 0 feeds ``tasks_per_worker`` tasks on every worker."""
    cluster, client = _cluster(n_workers, mode, min_bytes)
    try:
        ws = sorted(client.scheduler_info()["workers"])
        pids = list(client.run(os.getpid).values())
        root = _root(client)
        idle = _idle(client, pids, root)
        with _Sampler(pids, root) as m:
            make = _make_chunk_in_segment if mode == "stridemap-alloc" else _make_chunk
            big = client.submit(make, nbytes, 1, workers=[ws[0]])
            big.result()
            t0 = time.perf_counter()
            parts = [client.submit(_part_sum, big, i, tasks_per_worker, workers=[w],
                                   pure=False)
                     for w in ws for i in range(tasks_per_worker)]
            result = client.gather(parts)
            wall = time.perf_counter() - t0
        return _measured(wall, m, idle, result, client, mode)
    finally:
        client.close()
        cluster.close()


def run_transpose(n_workers, nbytes, mode, min_bytes=1 << 20):
    """``(x + x.T).sum(axis=0)`` of a random square float64 array of about ``nbytes``."""
    import dask.array as da

    n = int((nbytes // 8) ** 0.5)
    chunk = max(n // 4, 1)
    cluster, client = _cluster(n_workers, mode, min_bytes)
    try:
        pids = list(client.run(os.getpid).values())
        root = _root(client)
        idle = _idle(client, pids, root)
        x = da.random.RandomState(7).random_sample((n, n), chunks=chunk)
        with _Sampler(pids, root) as m:
            t0 = time.perf_counter()
            result = (x + x.T).sum(axis=0).compute()
            wall = time.perf_counter() - t0
        return _measured(wall, m, idle, result, client, mode, shape=(n, n), chunk=chunk)
    finally:
        client.close()
        cluster.close()


def _stridemap_stats(client, mode):
    if not mode.startswith("stridemap"):
        return None
    import stridemap.dask as sd

    per = client.run(sd.stats)
    out = {k: sum(s[k] for s in per.values()) for k in ("sent", "received", "copied")}
    fb = {}
    for s in per.values():
        for k, v in s["fallbacks"].items():
            fb[k] = fb.get(k, 0) + v
    out["fallbacks"] = fb
    return out


def _same(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=0)


def bench(workload, args, out=sys.stdout):
    order = ["default", "stridemap"] + (["stridemap-alloc"] if workload == "broadcast" else [])
    runs = {mode: [] for mode in order}
    for r in range(args.repeat):
        for mode in (order if r % 2 == 0 else order[::-1]):
            if workload == "broadcast":
                res = run_broadcast(args.workers, args.broadcast_mib * MIB, mode,
                                    min_bytes=args.min_bytes)
            else:
                res = run_transpose(args.workers, args.transpose_mib * MIB, mode,
                                    min_bytes=args.min_bytes)
            runs[mode].append(res)
            print(f"  {workload:9} {mode:15} run {r + 1}: wall {res['wall']:.3f} s, peak PSS "
                  f"{res['pss'] / MIB:.0f} MiB (net {res['pss_net'] / MIB:.0f}), host "
                  f"{res['host'] / MIB:.0f} MiB (net {res['host_net'] / MIB:.0f})"
                  + (f", stridemap {res['stats']}" if res["stats"] else ""),
                  file=out, flush=True)
    ref = runs["default"][0]["result"]
    for mode in runs:
        for res in runs[mode]:
            if not _same(res["result"], ref):
                raise AssertionError(f"{workload}: {mode} computed another result")
    keys = ("wall", "pss", "pss_net", "host", "host_net")
    return {mode: {k: statistics.median(r[k] for r in rs) for k in keys}
            for mode, rs in runs.items()}


def _ratio(a, b):
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m stridemap.bench.dask", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--broadcast-mib", type=int, default=256)
    p.add_argument("--transpose-mib", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--min-bytes", type=int, default=1 << 20)
    p.add_argument("--only", choices=("broadcast", "transpose"))
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, 2 workers, one run each (for the test suite)")
    args = p.parse_args(argv)
    if args.smoke:
        args.workers, args.broadcast_mib, args.transpose_mib, args.repeat = 2, 8, 32, 1
        args.min_bytes = 1 << 16
    print(f"stridemap.dask benchmark: {args.workers} workers, {os.cpu_count()} CPUs, "
          f"{args.repeat} run(s) per mode, alternating", flush=True)
    table = []
    for workload in ("broadcast", "transpose"):
        if args.only and workload != args.only:
            continue
        size = args.broadcast_mib if workload == "broadcast" else args.transpose_mib
        table.append((f"{workload} ({size} MiB)", bench(workload, args)))
    print()
    print("| workload | mode | wall (s) | peak worker PSS (MiB) | net of idle | "
          "peak host memory (MiB) | net of idle |")
    print("|---|---|---:|---:|---:|---:|---:|")
    labels = {"default": "default Dask", "stridemap": "stridemap.dask",
              "stridemap-alloc": "stridemap.dask, chunk made in a segment"}
    for name, med in table:
        d = med["default"]
        for mode, r in med.items():
            print(f"| {name} | {labels[mode]} | {r['wall']:.2f} | {r['pss'] / MIB:.0f} | "
                  f"{r['pss_net'] / MIB:.0f} | {r['host'] / MIB:.0f} | "
                  f"{r['host_net'] / MIB:.0f} |")
        for mode, s in med.items():
            if mode == "default":
                continue
            print(f"| {name} | **default / {labels[mode]}** | "
                  f"**{d['wall'] / s['wall']:.2f}x** | **{d['pss'] / s['pss']:.2f}x** | "
                  f"**{_ratio(d['pss_net'], s['pss_net'])}** | **{d['host'] / s['host']:.2f}x** "
                  f"| **{_ratio(d['host_net'], s['host_net'])}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
