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
    """Everything below the temp root (pool folders and their files)."""
    out = []
    for folder in sorted(os.listdir(root)):
        path = os.path.join(root, folder)
        out.append(folder)
        if os.path.isdir(path):
            out += [f"{folder}/{f}" for f in sorted(os.listdir(path))]
    return out


def cluster(n, **kw):
    kw.setdefault("threads_per_worker", 1)
    return LocalCluster(n_workers=n, processes=True, dashboard_address=None,
                        silence_logs=40, **kw)


def total(stats, field):
    return sum(s[field] for s in stats.values())


def fallbacks(stats):
    out = {}
    for s in stats.values():
        for k, v in s["fallbacks"].items():
            out[k] = out.get(k, 0) + v
    return out


def workers(client):
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
                 "segment-gone", "stale-segment", "segment-replaced", "segment-busy",
                 "open-failed", "share-failed", "no-space", "error")


def assert_no_sharing_failures(stats):
    bad = {k: v for k, v in fallbacks(stats).items() if k in PEER_FAILURES}
    assert bad == {}, bad


def test_plugin_is_active_with_one_token(client):
    stats = client.run(sd.stats)
    assert all(s["active"] for s in stats.values())
    tokens = {s["token"] for s in stats.values()}
    assert len(tokens) == 1 and None not in tokens
    assert tokens == {sd.token(os.environ["STRIDEMAP_TEMP_FOLDER"])}


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
    ws = workers(client)
    n = 1 << 20  # 8 MiB
    big = client.submit(t.make, 3, n, workers=[ws[0]])
    parts = [client.submit(t.part_sum, big, i, 8, workers=[w], pure=False)
             for w in ws for i in range(8)]
    got = client.gather(parts)
    want = t.make(3, n)
    assert got == [int(want[i::8].sum()) for _ in ws for i in range(8)]
    stats = counters()
    src = stats[ws[0]]
    # One segment for every recipient: copied once, mapped by each other worker once.
    assert src["copied"] == 1 and src["copied_bytes"] == n * 8, src
    assert src["sent"] == len(ws) - 1, src
    assert src["swapped"] == 1, src  # the holder keeps the bytes once: the segment
    assert [stats[w]["received"] for w in ws[1:]] == [1] * (len(ws) - 1), stats
    assert total(stats, "bytes_not_copied") == (len(ws) - 1) * 2 * n * 8 - n * 8
    # The receivers map it: sizeof counts it once per host, in the holder.
    sizes = client.run(t.sizes_of_held)
    held = {w: [v for k, v in s.items() if big.key in k] for w, s in sizes.items()}
    assert held[ws[0]] == [(n * 8, n * 8)], held
    for w in ws[1:]:
        assert held[w] in ([], [(0, n * 8)]), held
    assert_no_sharing_failures(stats)


def test_allocated_in_a_segment_and_views_travel_without_a_copy(client, counters):
    ws = workers(client)
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


def test_small_and_unshareable_arrays_take_the_normal_path(client, counters):
    ws = workers(client)
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
    ws = workers(client)
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
    # The sender notices its segment is not intact any more and copies into a new one.
    third = [w for w in ws if w not in (src, dst)][0]
    got = client.submit(t.checksum, arr, workers=[third], pure=False).result(timeout=60)
    assert got[0] == int(t.make(6, n).sum())
    assert client.run(sd.stats)[third]["received"] == 1
