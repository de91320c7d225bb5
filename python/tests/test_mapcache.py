"""Issue #21: a receiver keeps its mapping of a segment for the next descriptor of it
(transport.mapcache): hits are exact, a changed segment is never served from it, a truncated
named file is refused, and nothing stays once the arrays and the grace are gone."""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time

import numpy as np
import pytest

import stridemap
import stridemap.pools
from stridemap.codec.decode import decode
from stridemap.transport import mapcache

from producer_util import one_worker_pool


def worker_view(a):
    """In a worker: the array's values and which mapping (its start address) backs it."""
    from stridemap.segments.backing import backing

    mm, _ = backing(a)
    import numpy as np

    start = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    return a.tolist(), start, mapcache.stats()


def worker_stats(_=None):
    return mapcache.stats()


def worker_first(a):
    return float(a[0])


pool = pytest.fixture(scope="module", name="pool")(one_worker_pool)


def settle(pool):
    """Waits until the worker keeps no mapping (the grace is over)."""
    deadline = time.monotonic() + mapcache.GRACE + 10
    while True:
        st = pool.submit(worker_stats).result()
        if st["entries"] == 0 and st["held"] == 0:
            return st
        assert time.monotonic() < deadline, f"the worker still keeps mappings: {st}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["memfd", "file"])
def test_the_same_segment_is_mapped_once_and_read_exactly(pool, kind, tmp_path):
    settle(pool)
    a = stridemap.share(np.arange(4096.0).reshape(64, 64), kind=kind,
                        temp_folder=tmp_path if kind == "file" else None)
    first = pool.submit(worker_view, a).result()
    views = [a, a[::-1], a.T, a[3:9, ::-2], a]
    got = [pool.submit(worker_view, v).result() for v in views]
    for v, (values, start, st) in zip(views, got):
        assert values == v.tolist()
        assert start == first[1], "a second mapping of the same segment was made"
    assert got[-1][2]["hits"] - first[2]["hits"] == len(views)
    del a, views
    assert settle(pool)["entries"] == 0


def test_a_new_segment_of_the_same_values_is_a_miss(pool):
    settle(pool)
    base = np.arange(1000.0)
    a = stridemap.share(base)
    b = stridemap.share(base.copy())
    _, start_a, st0 = pool.submit(worker_view, a).result()
    _, start_b, st1 = pool.submit(worker_view, b).result()
    assert st1["misses"] == st0["misses"] + 1 and st1["hits"] == st0["hits"]


def test_key_includes_generation_and_a_changed_record_is_a_miss():
    """In one process: remember a mapping, then look up records that differ from it in
    generation (a recycled segment) or in file identity or length (a replaced one)."""
    a = stridemap.share(np.arange(100.0))
    ex = stridemap.export(a)
    try:
        v = stridemap.open(ex.record, fd=ex.fd)
    finally:
        ex.close()
    desc = decode(ex.record)
    key = mapcache.key_of("me", desc, "r", False)
    mapcache.remember(key, v)
    try:
        hit = mapcache.lookup(key, desc)
        assert hit is not None and hit.tolist() == a.tolist()
        recycled = dataclasses.replace(desc, generation=desc.generation + 1)
        assert mapcache.key_of("me", recycled, "r", False) != key
        assert mapcache.lookup(mapcache.key_of("me", recycled, "r", False), recycled) is None
        for change in (dict(inode=desc.inode + 1), dict(device=desc.device + 1),
                       dict(file_len=desc.file_len + 4096)):
            assert mapcache.lookup(key, dataclasses.replace(desc, **change)) is None, change
        assert mapcache.key_of("other sender", desc, "r", False) != key
        assert mapcache.key_of("me", desc, "r+", False) != key
    finally:
        mapcache.clear()
    del v, hit
    import gc

    gc.collect()
    assert mapcache.lookup(key, desc) is None  # the mapping went with its arrays


def test_a_truncated_named_file_is_refused_not_served(pool, tmp_path):
    settle(pool)
    a = stridemap.share(np.arange(100_000.0), kind="file", temp_folder=tmp_path)
    assert pool.submit(worker_first, a).result() == 0.0  # mapped and kept
    path = stridemap.segment_of(a).path
    os.truncate(path, 4096)  # its owner cuts it short under the kept mapping
    with pytest.raises(stridemap.StridemapError, match="O7|shorter|length|size"):
        pool.submit(worker_first, a).result()
    assert pool.submit(worker_stats).result() is not None  # the worker lives


def test_copy_on_write_receives_are_never_shared():
    desc = decode(stridemap.export(stridemap.share(np.arange(10.0))).record)
    # handoff never asks the cache for mode "c"; the key would not say "r" either
    assert mapcache.key_of("me", desc, "c", False) != mapcache.key_of("me", desc, "r", False)
