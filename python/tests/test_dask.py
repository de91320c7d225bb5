"""stridemap.dask against a real ``distributed.LocalCluster(processes=True)``: results equal
numpy's, the counters prove the transfers went through stridemap, the fallbacks take Dask's
normal path for real (another tmpfs, spilling, a segment gone or recycled), and nothing is left
in the temp root after shutdown, even after a kill -9 (then the sweep).

Every cluster here segments into a private folder below /dev/shm (``STRIDEMAP_TEMP_FOLDER``,
inherited by the worker processes), so that other tests running on the machine neither see nor
disturb these files.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pytest

dask = pytest.importorskip("dask", reason="dask is pinned in python/requirements-dev.txt")
distributed = pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import stridemap  # noqa: E402
import stridemap.dask as sd  # noqa: E402

import dask_tasks as t  # noqa: E402

MIN = 64 << 10  # the tests share arrays from 64 KiB on


@pytest.fixture(scope="module")
def root():
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="stridemap-test-dask-", dir=base)
    old = os.environ.get("STRIDEMAP_TEMP_FOLDER")
    os.environ["STRIDEMAP_TEMP_FOLDER"] = path
    yield path
    if old is None:
        del os.environ["STRIDEMAP_TEMP_FOLDER"]
    else:
        os.environ["STRIDEMAP_TEMP_FOLDER"] = old
    shutil.rmtree(path, ignore_errors=True)


def leftovers(root):
    """Everything below the temp root (pool folders and their files), except the user's key
    folder (``.stridemap-dask-<uid>``), which stays by design."""
    out = []
    for folder in sorted(os.listdir(root)):
        if folder == f".stridemap-dask-{os.geteuid()}":
            continue
        path = os.path.join(root, folder)
        out.append(folder)
        if os.path.isdir(path):
            out += [f"{folder}/{f}" for f in sorted(os.listdir(path))]
    return out


def cluster(n, **kw):
    """A LocalCluster of ``n`` worker processes. The active memory manager is off: it would
    drop replicas every few seconds, and the tests count who holds what."""
    kw.setdefault("threads_per_worker", 1)
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
        return LocalCluster(n_workers=n, processes=True, dashboard_address=":0",
                            silence_logs=40, **kw)


@pytest.fixture
def fresh_root(root):
    """A temp root of its own for a test that starts its own cluster (the module's cluster
    keeps its folders in ``root`` meanwhile)."""
    path = tempfile.mkdtemp(prefix="stridemap-test-dask-", dir=os.path.dirname(root))
    os.environ["STRIDEMAP_TEMP_FOLDER"] = path
    try:
        yield path
    finally:
        os.environ["STRIDEMAP_TEMP_FOLDER"] = root
        shutil.rmtree(path, ignore_errors=True)


def total(stats, field):
    return sum(s[field] for s in stats.values())


def fallbacks(stats):
    out = {}
    for s in stats.values():
        for k, v in s["fallbacks"].items():
            out[k] = out.get(k, 0) + v
    return out


def workers(client, n=None):
    """The cluster's workers; with ``n``, once all ``n`` are up (the module's cluster: a test
    before may have had one restarted, which its nanny brings back in its own time)."""
    if n is not None:
        client.wait_for_workers(n, timeout=120)
    return sorted(client.scheduler_info()["workers"])


@pytest.fixture(scope="module")
def client(root):
    with cluster(3) as c, Client(c) as cl:
        sd.install(cl, min_bytes=MIN)
        yield cl
    assert leftovers(root) == [], "segments left after the cluster shut down"


@pytest.fixture
def counters(client):
    client.run(sd.reset_stats)
    return lambda: client.run(sd.stats)


PEER_FAILURES = ("other-host", "other-temp-root", "other-user", "token-version", "no-token",
                 "unproven-token", "segment-gone", "stale-segment", "segment-replaced",
                 "segment-busy", "open-failed", "share-failed", "no-space", "error",
                 "refused-unsigned", "refused-folder", "refused-file", "refused-descriptor",
                 "refused-inactive")


def assert_no_sharing_failures(stats):
    bad = {k: v for k, v in fallbacks(stats).items() if k in PEER_FAILURES}
    assert bad == {}, bad


def test_plugin_is_active_with_one_token(client):
    stats = client.run(sd.stats)
    assert all(s["active"] for s in stats.values())
    tokens = {s["token"] for s in stats.values()}
    assert len(tokens) == 1 and None not in tokens
    assert tokens == {sd.token(os.environ["STRIDEMAP_TEMP_FOLDER"])}


KEY_RACE = """
import sys, stridemap.dask as sd
print(sd.trust.load_key(sys.argv[1]).hex())
"""


def test_processes_racing_to_make_the_key_all_get_one(tmp_path):
    """The first processes of a user make the key in the temp root: eight at once all end
    with the same key, and nothing else is left in its folder."""
    procs = [subprocess.Popen([sys.executable, "-c", KEY_RACE, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    out = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in out]
    keys = {o.strip() for o, _ in out}
    assert len(keys) == 1 and len(keys.pop()) == 64, out
    folder = tmp_path / f".stridemap-dask-{os.geteuid()}"
    assert os.listdir(folder) == ["key"]
    assert oct(os.stat(folder).st_mode & 0o7777) == "0o700"
    assert oct(os.stat(folder / "key").st_mode & 0o7777) == "0o600"


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a folder of uid 65534")
@pytest.mark.parametrize("squat", ["another user's folder", "a link", "a 0755 folder"])
def test_a_key_folder_that_is_not_the_users_own_means_no_sharing(tmp_path, squat):
    """A key folder someone else made first (or a link, or a folder others can read) is not
    trusted: the process has no token, and arrays take the normal path."""
    path = tmp_path / f".stridemap-dask-{os.geteuid()}"
    if squat == "a link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        os.symlink(tmp_path / "elsewhere", path)
    else:
        path.mkdir(mode=0o700)
        if squat == "a 0755 folder":
            os.chmod(path, 0o755)
        else:
            os.chown(path, 65534, 65534)
    with pytest.raises(OSError, match="nothing is shared"):
        sd.trust.load_key(str(tmp_path))
    state = sd._State(str(tmp_path), MIN, None)
    assert state.token is None and state.public is not None
    context = {"sender": {sd.ENDS_KEY: ["a:1", "b:2"]}, "recipient": {sd.TOKEN_KEY: "x"}}
    assert state.decline_reason(np.zeros(MIN), context) == "no-token"


def test_transpose_add_sum(client, counters):
    n, c = 1200, 300  # 16 chunks of 720 KB over 3 workers
    x = da.random.RandomState(1).randint(0, 1000, size=(n, n), chunks=c)
    xs = x.compute()
    got = (x + x.T[::-1]).sum(axis=0).compute()
    assert np.array_equal(got, (xs + xs.T[::-1]).sum(axis=0))
    stats = counters()
    assert total(stats, "received") >= 4, stats
    assert total(stats, "received") == total(stats, "sent")
    assert total(stats, "received_bytes") >= 4 * c * c * 8
    assert_no_sharing_failures(stats)


def test_rechunk(client, counters):
    x = da.random.RandomState(2).randint(0, 1000, size=(1000, 1000), chunks=(250, 1000))
    xs = x.compute()
    y = x.rechunk((1000, 250))
    got = client.compute(y.map_blocks(lambda b: b * 3)).result()
    assert np.array_equal(got, xs * 3)
    stats = counters()
    assert total(stats, "received") >= 2, stats
    assert_no_sharing_failures(stats)


def test_one_chunk_feeds_tasks_on_every_worker(client, counters):
    ws = workers(client, 3)
    n = 1 << 20  # 8 MiB
    big = client.submit(t.make, 3, n, workers=[ws[0]])
    parts = [client.submit(t.part_sum, big, i, 8, workers=[w], pure=False)
             for w in ws for i in range(8)]
    got = client.gather(parts)
    want = t.make(3, n)
    assert got == [int(want[i::8].sum()) for _ in ws for i in range(8)]
    stats = counters()
    src = stats[ws[0]]
    # One segment for every recipient: copied once, mapped by each other worker once (a worker
    # may get it from another receiver, which describes the same segment again).
    assert src["copied"] == 1 and src["copied_bytes"] == n * 8, src
    assert total(stats, "copied") == 1
    assert total(stats, "sent") == len(ws) - 1, stats
    assert total(stats, "redescribed") == len(ws) - 2, stats
    assert src["swapped"] == 1, src  # the holder keeps the bytes once: the segment
    assert [stats[w]["received"] for w in ws[1:]] == [1] * (len(ws) - 1), stats
    assert total(stats, "bytes_not_copied") == (len(ws) - 1) * 2 * n * 8 - n * 8
    # The receivers map it: sizeof counts it once per host, in the holder.
    sizes = client.run(t.sizes_of_held)
    held = {w: [v for k, v in s.items() if big.key in k] for w, s in sizes.items()}
    assert held[ws[0]] == [(n * 8, n * 8)], held
    for w in ws[1:]:
        assert held[w] == [(0, n * 8)], held
    # And the memory monitor (spill and pause thresholds) leaves the mapped pages out.
    mem = client.run(t.process_memory)
    assert abs(mem[ws[0]][0] - mem[ws[0]][1]) < 2 << 20, mem
    for w in ws[1:]:
        assert mem[w][0] - mem[w][1] >= n * 8 - (1 << 20), mem
    assert_no_sharing_failures(stats)


def test_allocated_in_a_segment_and_views_travel_without_a_copy(client, counters):
    ws = workers(client, 3)
    n = 512
    sq = client.submit(t.square_shared, 4, n, workers=[ws[0]])
    view = client.submit(t.transposed_reversed, sq, workers=[ws[0]])
    got = client.submit(t.checksum, view, workers=[ws[1]]).result()
    mapped = client.submit(t.is_mapped_from_peer, view, workers=[ws[1]]).result()
    want = t.make(4, n * n).reshape(n, n).T[::-1]
    assert got == (int(want.sum()), (n, n), "int64")
    assert mapped
    # And from the receiver on to a third worker: described again, still no copy.
    again = client.submit(t.transposed_reversed, view, workers=[ws[1]])
    got2 = client.submit(t.checksum, again, workers=[ws[2]]).result()
    assert got2 == (int(want.T[::-1].sum()), (n, n), "int64")
    stats = counters()
    assert total(stats, "copied") == 0, stats
    assert total(stats, "redescribed") == total(stats, "sent") >= 2, stats
    assert stats[ws[2]]["received"] == 1
    assert_no_sharing_failures(stats)


def test_awkward_layouts_in_a_tuple(client, counters):
    ws = workers(client, 3)
    n = 1024
    tup = client.submit(t.layouts, n, workers=[ws[0]], pure=False)
    assert client.submit(t.same_layouts, tup, n, workers=[ws[1]]).result() == [True] * 5
    stats = counters()
    assert stats[ws[1]]["received"] == 5, stats[ws[1]]
    assert_no_sharing_failures(stats)


def test_small_and_unshareable_arrays_take_the_normal_path(client, counters):
    ws = workers(client, 3)
    small = client.submit(t.make, 5, 100, workers=[ws[0]])
    strings = client.submit(lambda: np.array(["x" * 10] * 100_000), workers=[ws[0]])
    got = client.submit(lambda a, s: (int(a.sum()), len(s)), small, strings,
                        workers=[ws[1]]).result()
    assert got == (int(t.make(5, 100).sum()), 100_000)
    stats = counters()
    fb = fallbacks(stats)
    assert fb.get("small", 0) >= 1 and fb.get("dtype", 0) >= 1, fb
    assert total(stats, "sent") == 0


@pytest.mark.parametrize("how,reason", [("unlink", "segment-gone"),
                                        ("recycle", "stale-segment")])
def test_segment_gone_or_recycled_refetches_by_the_normal_path(client, counters, how, reason):
    ws = workers(client, 3)
    # A pair of workers per case: a failed open degrades the receiver's connections to its
    # sender for a while (they carry no token), which the other case must not inherit.
    src, dst = (ws[0], ws[1]) if how == "unlink" else (ws[2], ws[0])
    n = 1 << 18
    arr = client.submit(t.make, 6, n, workers=[src], pure=False)
    assert client.run(t.fault_next_open, how, workers=[dst])
    got = client.submit(t.checksum, arr, workers=[dst], pure=False).result(timeout=60)
    assert got == (int(t.make(6, n).sum()), (n,), "int64")
    stats = counters()
    assert stats[dst]["fallbacks"].get(reason) == 1, stats[dst]
    assert stats[dst]["received"] == 0
    # The retry went by the normal path: the sender saw a connection without a token.
    assert stats[src]["fallbacks"].get("peer-without-stridemap", 0) >= 1, stats[src]
    # The sender notices its segment is not intact any more: a view of it (held only by the
    # sender) is copied into a new segment, and a third worker maps that.
    third = [w for w in ws if w not in (src, dst)][0]
    view = client.submit(t.every_other, arr, workers=[src], pure=False)
    got = client.submit(t.checksum, view, workers=[third], pure=False).result(timeout=60)
    assert got == (int(t.make(6, n)[::2].sum()), (n // 2,), "int64")
    after = client.run(sd.stats)
    assert after[third]["received"] == 1, after[third]
    assert after[src]["copied"] == stats[src]["copied"] + 1, after[src]


def test_client_receives_and_scatters_through_stridemap(client, counters):
    """A client process that activates stridemap (``stridemap.dask.activate()``) and talks to
    the workers directly gets arrays as mappings and scatters through a segment."""
    import json

    ws = workers(client, 3)
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        [sys.executable, "-c", "import dask_tasks; dask_tasks.client_main()",
         client.scheduler.address, ws[0], ws[1], str(MIN)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    mine = seen.pop("stats")
    assert seen == {"gathered_equal": True, "gathered_mapped": True,
                    "gathered_writeable": False, "scattered_sum_ok": True,
                    "scattered_mapped": True}
    assert mine["received"] == 1 and mine["sent"] == 1 and mine["copied"] == 1, mine
    stats = counters()
    assert stats[ws[0]]["sent"] == 1 and stats[ws[1]]["received"] == 1, stats


# ---------------------------------------------------------------------------------------------
# A worker whose temp root is another tmpfs: installed with --preload, it shares with nobody


@pytest.fixture
def other_root():
    """A temp root on another filesystem: a small tmpfs mounted for the test (we run as root
    in CI), else a folder on the disk if that is another device than /dev/shm."""
    path = tempfile.mkdtemp(prefix="stridemap-test-dask-other-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", path],
                           capture_output=True, text=True)
        mounted, why = r.returncode == 0, r.stderr.strip() or f"exit status {r.returncode}"
    except OSError as e:
        mounted, why = False, str(e)
    if not mounted:
        shm = os.stat("/dev/shm").st_dev if os.path.isdir("/dev/shm") else None
        where = "another device" if os.stat(path).st_dev != shm else "THE SAME device"
        warnings.warn(f"cannot mount a tmpfs ({why}): the odd "
                      f"worker's temp root is {path}, a plain folder on {where} than "
                      "/dev/shm. The tokens still differ (another folder), so this tests the "
                      "same decision, not a second tmpfs.")
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def start_cli_worker(address, env, name):
    """`dask worker ADDRESS --preload stridemap.dask` in a process of its own (no nanny)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, **env,
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--no-nanny",
         "--nthreads", "1", "--no-dashboard", "--preload", "stridemap.dask", "--name", name],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def test_worker_on_another_tmpfs_takes_the_normal_path(fresh_root, other_root):
    with dask.config.set({"stridemap.dask.min-bytes": MIN}):
        with cluster(2, preload=["stridemap.dask"]) as c, Client(c) as cl:
            proc = start_cli_worker(c.scheduler_address,
                                    {"STRIDEMAP_TEMP_FOLDER": other_root,
                                     "DASK_STRIDEMAP__DASK__MIN_BYTES": str(MIN)}, "odd")
            try:
                cl.wait_for_workers(3, timeout=60)
                # The plugin on top of the preload: activating twice changes nothing.
                sd.install(cl, min_bytes=MIN)
                info = cl.scheduler_info()["workers"]
                odd = [a for a, w in info.items() if w["name"] == "odd"][0]
                a, b = [w for w in sorted(info) if w != odd]
                cl.run(sd.reset_stats)
                n = 1 << 17
                pairs = [(odd, a), (a, odd), (b, odd), (a, b)]
                futs = []
                for k, (src, dst) in enumerate(pairs):
                    f = cl.submit(t.make, 10 + k, n, workers=[src], pure=False)
                    futs.append(cl.submit(t.checksum, f, workers=[dst], pure=False))
                got = cl.gather(futs)
                assert got == [(int(t.make(10 + k, n).sum()), (n,), "int64")
                               for k in range(len(pairs))]
                stats = cl.run(sd.stats)
                assert all(s["active"] for s in stats.values())  # the preload, everywhere
                assert stats[odd]["root"] == os.path.realpath(other_root)
                assert stats[odd]["token"] != stats[a]["token"] == stats[b]["token"]
                # Every transfer with the odd worker took the normal path, both ways ...
                assert stats[odd]["sent"] == stats[odd]["received"] == 0, stats[odd]
                assert stats[odd]["fallbacks"].get("other-temp-root") == 1, stats[odd]
                assert (stats[a]["fallbacks"].get("other-temp-root", 0)
                        + stats[b]["fallbacks"].get("other-temp-root", 0)) == 2, stats
                # ... and the two others still share.
                assert stats[a]["sent"] == 1 and stats[b]["received"] == 1, stats
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    _, err = proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
            assert leftovers(other_root) == [], err[-2000:]
    assert leftovers(fresh_root) == []


def test_full_temp_root_takes_the_normal_path(fresh_root):
    """A temp root without room for the segment (a 2 MiB tmpfs, 4 MiB arrays): NoSpace, and the
    array goes by the normal path."""
    small = tempfile.mkdtemp(prefix="stridemap-test-dask-small-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", small],
                           capture_output=True, text=True)
    except OSError as e:
        r = None
        why = str(e)
    if r is None or r.returncode != 0:
        os.rmdir(small)
        why = why if r is None else (r.stderr.strip() or f"exit status {r.returncode}")
        pytest.skip(f"cannot mount a small tmpfs ({why}): the full-temp-root case is not "
                    "tested here")
    try:
        os.environ["STRIDEMAP_TEMP_FOLDER"] = small
        with cluster(2) as c, Client(c) as cl:
            sd.install(cl, min_bytes=MIN)
            ws = workers(cl)
            n = 1 << 19  # 4 MiB
            f = cl.submit(t.make, 50, n, workers=[ws[0]], pure=False)
            got = cl.submit(t.checksum, f, workers=[ws[1]], pure=False).result(timeout=60)
            assert got == (int(t.make(50, n).sum()), (n,), "int64")
            stats = cl.run(sd.stats)
            assert stats[ws[0]]["fallbacks"].get("no-space") == 1, stats[ws[0]]
            assert total(stats, "sent") == 0
        assert leftovers(small) == []
    finally:
        os.environ["STRIDEMAP_TEMP_FOLDER"] = fresh_root
        subprocess.run(["umount", "-l", small], capture_output=True)
        shutil.rmtree(small, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Spilling: no recipient, so segment-backed arrays are pickled by value


def test_spill_to_disk_pickles_by_value(fresh_root):
    memory = {"distributed.worker.memory.target": 0.2, "distributed.worker.memory.spill": False,
              "distributed.worker.memory.pause": False,
              "distributed.worker.memory.terminate": False}
    with dask.config.set(memory):
        with cluster(2, memory_limit="300MiB") as c, Client(c) as cl:
            sd.install(cl, min_bytes=MIN)
            ws = workers(cl)
            n, count = 1 << 20, 10  # 10 arrays of 8 MiB: 80 MiB over a 60 MiB target
            src = [cl.submit(t.make, 20 + i, n, workers=[ws[0]], pure=False)
                   for i in range(count)]
            # Every array goes to the other worker (and becomes a segment on the first).
            seen = cl.gather([cl.submit(t.checksum, f, workers=[ws[1]]) for f in src])
            want = [t.make(20 + i, n) for i in range(count)]
            assert [s[0] for s in seen] == [int(w.sum()) for w in want]
            backed = cl.run(t.segment_backed)
            assert backed[ws[0]] >= 1 and backed[ws[1]] == count, backed
            cl.run(sd.reset_stats)
            # The memory limit spilled some already; now everything, mapped views included.
            cl.run(t.evict_all)
            spilled = cl.run(t.spilled)
            for w in ws:
                keys, disk = spilled[w]
                assert keys >= count and disk >= count * n * 8, (w, spilled)
            stats = cl.run(sd.stats)
            for w in ws:
                assert stats[w]["fallbacks"].get("no-recipient", 0) >= 1, stats[w]
                assert stats[w]["sent"] == 0
            # Read back from disk: the values, not descriptors.
            back = cl.gather(src)
            for got, w in zip(back, want):
                assert np.array_equal(got, w)
    assert leftovers(fresh_root) == []


# ---------------------------------------------------------------------------------------------
# Stress and kill


def test_stress_hundreds_of_transfers_keys_released_at_once(fresh_root):
    import random

    with cluster(3) as c, Client(c) as cl:
        sd.install(cl, min_bytes=MIN)
        ws = workers(cl)
        rng = random.Random(0)
        n, count = 1 << 14, 300  # 128 KiB each
        results = []
        for i in range(count):
            src, dst = rng.sample(ws, 2)
            f = cl.submit(t.make, i, n, workers=[src], pure=False)
            results.append(cl.submit(t.checksum, f, workers=[dst], pure=False))
            del f  # released by the client at once: the scheduler drops it after use
        from distributed import as_completed

        order = {r.key: i for i, r in enumerate(results)}
        done = 0
        for fut in as_completed(results):
            i = order[fut.key]
            assert fut.result() == (int(t.make(i, n).sum()), (n,), "int64")
            fut.release()
            done += 1
        del results
        assert done == count
        stats = cl.run(sd.stats)
        assert total(stats, "received") == count, fallbacks(stats)
        assert_no_sharing_failures(stats)
    assert leftovers(fresh_root) == [], "segments leaked after client.close() and shutdown"


def test_kill9_of_a_worker_then_the_sweep_leaves_nothing(fresh_root):
    with cluster(2) as c, Client(c) as cl:
        sd.install(cl, min_bytes=MIN)
        ws = workers(cl)
        n = 1 << 16
        src = [cl.submit(t.make, 30 + i, n, workers=[ws[0]], pure=False) for i in range(4)]
        got = cl.gather([cl.submit(t.checksum, f, workers=[ws[1]]) for f in src])
        assert [g[0] for g in got] == [int(t.make(30 + i, n).sum()) for i in range(4)]
        pid = cl.run(os.getpid, workers=[ws[0]])[ws[0]]
        mine = [f for f in os.listdir(fresh_root) if f.startswith(f"stridemap-{pid}-")]
        assert len(mine) == 1 and os.listdir(os.path.join(fresh_root, mine[0])), leftovers(fresh_root)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert mine[0] in os.listdir(fresh_root)  # a killed worker cleans nothing up
        # The nanny starts a new worker; its activation sweeps the root (the dead worker's
        # segments the other worker still maps stay, SPEC §7). The cluster goes on.
        cl.wait_for_workers(2, timeout=60)
        again = cl.submit(t.make, 40, n, pure=False)
        assert cl.submit(t.checksum, again).result(timeout=60)[0] == int(t.make(40, n).sum())
    left = leftovers(fresh_root)
    report = stridemap.sweep(fresh_root)
    print(f"\nafter shutdown: {left}; the sweep removed {report.removed}")
    assert leftovers(fresh_root) == [], (report, leftovers(fresh_root))


def test_benchmark_smoke_run(fresh_root):
    """`python -m stridemap.bench.dask --smoke`: tiny sizes, both workloads, both modes; it
    checks that the two modes compute the same results, and shares in the stridemap runs."""
    import re

    r = subprocess.run([sys.executable, "-m", "stridemap.bench.dask", "--smoke"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for row in ("| broadcast (8 MiB) | stridemap.dask |", "| transpose (32 MiB) | default Dask |",
                "| transpose (32 MiB) | **default / stridemap.dask** |"):
        assert row in out, out
    received = [int(n) for n in re.findall(r"'received': (\d+)", out)]
    assert len(received) == 3 and min(received) >= 1, out
    assert leftovers(fresh_root) == []
