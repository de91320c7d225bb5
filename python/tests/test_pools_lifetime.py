"""stridemap.pools under load and when processes die.

- 10,000 tasks, each handed a view of a shared array (a memfd and a named segment alternately)
  and returning a view of it: no growth in fds, mappings or files, in the parent or the
  workers.
- kill -9 of a worker in the middle of a task, then of the parent: no files are left once the
  sweep has run (and while a worker of the dead parent still maps a segment, the sweep leaves
  that segment alone: SPEC §7).

The producers run in child Python processes with ``STRIDEMAP_TEMP_FOLDER`` set to a test
folder, so that their named segments land there.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import numpy as np

import poolwork
from producer_util import settled
import stridemap
import stridemap.pools

HERE = os.path.dirname(os.path.abspath(__file__))


def _counts(owned=None):
    """This process's open fds and mappings; with ``owned`` (a folder), only the fds a handoff
    makes: memfds, files below ``owned``, and sockets (the fd channel's)."""
    import gc

    gc.collect()
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    fds = _fd_targets()
    if owned is not None:
        fds = [t for t in fds
               if t.startswith(("/memfd:", "socket:", str(owned)))]
    return len(fds), maps


def _fd_targets():
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:  # the fd of the listing itself, gone
            pass
    return sorted(out)


def worker_counts(_=None):
    """A worker's pid, fds and mappings (after the task before it let go of its arrays)."""
    return (os.getpid(), *_counts())


def echo_view(a):
    """A task: hand back a reversed, strided view of what came in (no copy either way)."""
    return a[::-3]


def _files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


def test_ten_thousand_tasks_leave_no_growth(tmp_path, monkeypatch):
    monkeypatch.setenv("STRIDEMAP_TEMP_FOLDER", str(tmp_path))
    stridemap.pools.install()
    arrays = [stridemap.share(np.arange(50_000.0), kind="memfd"),
              stridemap.share(np.arange(50_000.0) * 2, kind="file")]
    ctx = multiprocessing.get_context("spawn")
    tasks = 10_000
    with ctx.Pool(2, initializer=stridemap.pools.install) as pool:

        def run(n):
            views = (arrays[i % 2][::-1] for i in range(n))
            for i, got in enumerate(pool.imap(echo_view, views, chunksize=25)):
                if i % 997 == 0:  # spot checks: exact values, still zero-copy
                    assert np.array_equal(got, arrays[i % 2][::-1][::-3])
                    assert poolwork.zero_copy(poolwork.mapping_of(got))
                del got

        def workers():
            seen = {}
            while len(seen) < 2:
                for pid, fds, maps in pool.map(worker_counts, range(8), chunksize=1):
                    seen[pid] = (fds, maps)
            return seen

        def no_growth(workers_now):
            return all(fds <= before_workers[pid][0] and maps <= before_workers[pid][1] + 2
                       for pid, (fds, maps) in workers_now.items() if pid in before_workers)

        run(500)  # warm up: sharer threads, imports
        # ... until each worker has made what it makes once (its listener, its connection to
        # this process and the pidfd beside it): a worker that got no task of the first 500
        # makes them later, once, which is no growth.
        before_workers = workers()
        for _ in range(5):
            run(500)
            again = workers()
            if again == before_workers:
                break
            before_workers = again
        # The parent's fds that handoffs make (other tests' pools and executors in this process
        # may open and close fds of their own meanwhile), all of the workers'.
        before = _counts(tmp_path)
        before_files, before_fds = _files(tmp_path), _fd_targets()
        t0 = time.monotonic()
        run(tasks)
        elapsed = time.monotonic() - t0
        after = settled(lambda: _counts(tmp_path),
                        lambda c: c[0] <= before[0] and c[1] <= before[1] + 2)
        after_workers = settled(workers, no_growth)
        after_files = settled(lambda: _files(tmp_path), lambda f: f == before_files)
        after_fds = _fd_targets()
    print(f"{tasks} tasks (a view each way) in {elapsed:.1f} s; parent fds (memfds, sockets, "
          f"files of the test)/mappings {before} -> {after}; workers {before_workers} -> "
          f"{after_workers}")
    grew = sorted((Counter(after_fds) - Counter(before_fds)).items())[:20]
    assert after[0] <= before[0], f"parent fds grew: {before[0]} -> {after[0]}: {grew}"
    assert after[1] <= before[1] + 2, f"parent mappings grew: {before[1]} -> {after[1]}"
    assert no_growth(after_workers), (before_workers, after_workers)
    assert after_files == before_files


PRODUCER = textwrap.dedent("""
    import concurrent.futures, multiprocessing, os, sys, time
    import numpy as np
    sys.path.insert(0, {here!r})
    import stridemap, stridemap.pools, test_pools_lifetime as t
    if __name__ == "__main__":
        stridemap.pools.install()
        markers = sys.argv[1]
        arrays = [stridemap.share(np.arange(100_000.0) + k, kind="file") for k in range(2)]
        ctx = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx)
        futures = [pool.submit(t.hold, a[::-1], markers, 30) for a in arrays]
        while len(os.listdir(markers)) < 2:
            time.sleep(0.05)
        print("ready", flush=True)
        if sys.argv[2] == "kill a worker":
            victim = int(sorted(os.listdir(markers))[0])
            os.kill(victim, 9)
            try:
                futures[0].result(timeout=60)
            except concurrent.futures.process.BrokenProcessPool:
                print("broken", flush=True)
            pool.shutdown(wait=True, cancel_futures=True)
            del arrays, futures
            print("done", flush=True)
        else:
            time.sleep(60)  # killed here
""")


def hold(array, markers, seconds):
    """A task that says it has its array (a file named by its pid), then holds it."""
    open(os.path.join(markers, str(os.getpid())), "w").close()
    time.sleep(seconds)
    return float(array[0])


def _producer(tmp_path, how):
    markers = tmp_path / "markers"
    markers.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    env = dict(os.environ, STRIDEMAP_TEMP_FOLDER=str(root))
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER.format(here=HERE), str(markers), how],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc, root, [int(n) for n in os.listdir(markers)]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pids, seconds=60):
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
        time.sleep(0.1)


def test_kill_9_of_a_worker_mid_task_leaves_no_files(tmp_path):
    proc, root, workers = _producer(tmp_path, "kill a worker")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "broken" in out and "done" in out, (out, err)
    _wait_dead(workers)
    report = _sweep_until_empty(root)
    assert _files(root) == [], (report, _files(root), _holders(root))


def test_kill_9_of_the_parent_leaves_no_files_after_the_sweep(tmp_path):
    proc, root, workers = _producer(tmp_path, "kill the parent")
    assert _files(root), "the producer made no named segments"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The parent is dead; its workers still map the segments (shared locks): the sweep leaves
    # them alone.
    early = stridemap.sweep(root)
    assert any(os.path.isfile(p) for p in _files(root)), (early, _files(root))
    for pid in workers:  # the workers of a killed pool do not outlive their task by design
        os.kill(pid, signal.SIGKILL)
    _wait_dead(workers)
    report = _sweep_until_empty(root)
    assert _files(root) == [], (report, _files(root), _holders(root))


def _sweep_until_empty(root, seconds=10):
    """Sweep ``root`` until nothing is left, for a while: the kernel drops a dead process's
    locks when it releases its files, which may finish a moment after the process is gone
    (a deferred fput). Returns the last sweep's report."""
    deadline = time.monotonic() + seconds
    while True:
        report = stridemap.sweep(root)
        if not _files(root) or time.monotonic() > deadline:
            return report
        time.sleep(0.05)


def _holders(root):
    """Which processes have a file below ``root`` open or mapped (for a failure's message)."""
    root = str(root)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(root):
                    found.append((int(pid), "fd", target))
            with open(f"/proc/{pid}/maps") as f:
                found += [(int(pid), "map", line.split()[-1]) for line in f if root in line]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")[:80]
            found = [h + (cmd,) if h[0] == int(pid) and len(h) == 3 else h for h in found]
        except OSError:
            continue
    return found
