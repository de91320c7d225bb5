"""Issue #21, the results path: ``stridemap.empty()`` recycles a segment whose arrays are all
gone (segments.recycle), never one another process still maps, never a frozen one, never one
whose use was live at a fork; a descriptor of an earlier use is refused (O10); what waits is
bounded in count, bytes and time."""

import gc
import os

import numpy as np
import pytest

import stridemap
from stridemap.segments import recycle

from producer_util import forked, read_elsewhere


@pytest.fixture(autouse=True)
def nothing_waiting():
    recycle.clear()
    yield
    recycle.clear()


def fds():
    return len(os.listdir("/proc/self/fd"))


def test_a_segment_comes_back_with_the_next_generation():
    a = stridemap.empty(1000, "<f8")
    seg, gen = a.segment, a.segment.generation
    a[:] = 7.0
    view = a[::3]
    del a
    assert recycle.stats()["waiting"] == 0, "a view still lives: the segment is in use"
    del view
    assert recycle.stats()["waiting"] == 1
    b = stridemap.empty((10, 100), "<f8")
    assert b.segment is seg and seg.generation == gen + 1
    assert recycle.stats()["waiting"] == 0
    assert b.flags.writeable and b.shape == (10, 100)
    b[:] = 1.0  # its own map stays writable
    assert float(b.sum()) == 1000.0


def test_each_use_has_the_header_a_new_segment_of_its_generation_would():
    """The next generation's header is the last one patched (segments.header.with_generation):
    byte for byte what encode_header makes, use after use."""
    from stridemap.segments.header import HEADER_SIZE, encode_header

    a = stridemap.empty(1000, "<f8")
    seg = a.segment
    for _ in range(4):
        del a
        a = stridemap.empty(1000, "<f8")
        assert a.segment is seg
        want = encode_header(seg.segment_id, seg.generation, capacity=seg.capacity,
                             owner_pid=os.getpid(), data_offset=seg.data_offset)
        assert os.pread(seg.fd, HEADER_SIZE, 0) == want, seg.generation
    assert seg.generation == 5


def test_a_frozen_segment_never_comes_back():
    a = stridemap.empty(1000, "<f8").freeze()
    seg = a.segment
    del a
    assert recycle.stats()["waiting"] == 0
    assert stridemap.empty(1000, "<f8").segment is not seg


def test_a_segment_another_reader_maps_is_not_recycled_and_its_view_stays():
    seg, reader = read_elsewhere(1000)
    assert recycle.stats()["waiting"] == 1
    b = stridemap.empty(1000, "<f8")
    assert b.segment is not seg, "recycled under a reader's shared lock"
    b[:] = -1.0
    assert reader.tolist() == list(np.arange(1000.0))
    del b
    del reader
    gc.collect()
    c = stridemap.empty(1000, "<f8")
    assert c.segment is seg or c.segment.generation > 1  # a free one came back


def test_a_descriptor_of_an_earlier_use_is_refused():
    a = stridemap.empty(100, "<f8")
    ex = stridemap.export(a)
    old_record = ex.record
    ex.close()
    seg = a.segment
    del a
    b = stridemap.empty(100, "<f8")
    assert b.segment is seg
    ex = stridemap.export(b)
    try:
        with pytest.raises(stridemap.StaleSegment, match="O10"):
            stridemap.open(old_record, fd=ex.fd)
        assert stridemap.open(ex.record, fd=ex.fd).shape == (100,)
    finally:
        ex.close()


def test_sizes_that_fit_and_sizes_that_do_not():
    a = stridemap.empty(1 << 20, "u1")
    seg = a.segment
    del a
    larger = stridemap.empty(3 << 20, "u1")
    assert larger.segment is not seg  # too small for it
    assert recycle.stats()["waiting"] == 1
    small = stridemap.empty(100, "u1")  # up to 2 n + 1 MiB serves n: 1 MiB serves anything
    assert small.segment is seg
    del small
    big = stridemap.empty(3 << 20, "u1")  # 8 MiB would not serve 3 MiB
    seg8 = stridemap.empty(8 << 20, "u1").segment
    assert recycle.stats()["waiting"] == 2
    assert stridemap.empty(3 << 20, "u1").segment is not seg8
    assert big.segment is not seg8


def test_count_bytes_and_time_are_bounded(monkeypatch):
    monkeypatch.setattr(recycle, "MAX_COUNT", 2)
    arrays = [stridemap.empty(1000 + i, "u1") for i in range(4)]
    del arrays
    assert recycle.stats()["waiting"] == 2
    recycle.clear()
    monkeypatch.setattr(recycle, "MAX_BYTES", 64 << 10)
    big = stridemap.empty(1 << 20, "u1")
    assert not recycle.recyclable(big.segment)
    del big
    assert recycle.stats()["waiting"] == 0
    monkeypatch.setattr(recycle, "MAX_BYTES", 1 << 30)
    before = fds()
    a = stridemap.empty(1000, "u1")
    del a
    assert recycle.stats()["waiting"] == 1
    now = __import__("time").monotonic()
    recycle.sweep(now=now + recycle.KEEP_SECONDS + 1)
    assert recycle.stats()["waiting"] == 0 and recycle.stats()["hollow"] == 1
    recycle.sweep(now=now + recycle.KEEP_SECONDS + recycle.HOLLOW_SECONDS + 1)
    assert recycle.stats()["hollow"] == 0
    gc.collect()
    assert fds() <= before, "a segment let go of kept its fd"


def test_named_huge_and_empty_segments_are_not_recycled(tmp_path):
    a = stridemap.empty(1000, "u1", kind="file", temp_folder=tmp_path)
    assert not recycle.recyclable(a.segment)
    z = stridemap.empty(0, "u1")
    del a, z
    assert recycle.stats()["waiting"] == 0


def test_a_use_live_at_a_fork_never_comes_back():
    a = stridemap.empty(1000, "<f8")
    a[:] = 5.0
    seg = a.segment
    child = forked(lambda: bool((a == 5.0).all()))  # the child keeps the array it inherited
    try:
        del a
        assert recycle.stats()["waiting"] == 0, "a use live at a fork came back"
        b = stridemap.empty(1000, "<f8")
        assert b.segment is not seg
        b[:] = -1.0
        assert child.verdict(), "the child's inherited array changed"
    finally:
        child.close()

def test_a_process_exits_with_arrays_alive_and_segments_waiting():
    """Arrays let go of at interpreter exit return their segments from finalizers: nothing may
    start a thread then (it hung the exit)."""
    import subprocess
    import sys

    code = ("import stridemap, time\n"
            "keep = []\n"
            "for i in range(200):\n"
            "    s = stridemap.empty(1000 + 512 * i, '<f8')\n"
            "    keep.append(s.segment.describe(s, 'r+'))\n"
            "time.sleep(3.5)\n")  # past the sweeper's first round: it may have ended
    env = dict(os.environ, STRIDEMAP_RECYCLE_SECONDS="1",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True)


def test_an_export_keeps_its_descriptor_good_after_the_array_goes():
    """The receiver's fd of an export carries its shared lock: the array may go before the
    receiver opens the export, and the segment is not recycled under the descriptor."""
    exports = []
    for i in range(4):
        a = stridemap.empty(100_000, "<f8")
        a[:] = float(i)
        exports.append(stridemap.export(a))
        del a  # the producer lets go at once, as a sending loop does
    try:
        for i, e in enumerate(exports):
            got = stridemap.open(e.record, fd=e.fd)  # not StaleSegment: never recycled
            assert bool((got == float(i)).all()), i
            del got
    finally:
        for e in exports:
            e.close()
