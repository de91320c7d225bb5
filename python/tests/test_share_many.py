"""stridemap.share_many: many arrays in one segment, handed through a pool as one descriptor
and a manifest (issue #21)."""

import concurrent.futures
import multiprocessing
import os
import pickle

import numpy as np
import pytest

import stridemap
import stridemap.pools
from stridemap.segments.backing import backing


def sources():
    base = np.arange(60.0).reshape(6, 10)
    return {
        "c": base,
        "reversed": base[::-1],
        "fortran": np.asfortranarray(base),
        "transposed": base.T,
        "gappy": base[::2, 1::3],
        "broadcast": np.broadcast_to(np.arange(5, dtype="<i2"), (4, 5)),
        "big-endian": np.arange(7, dtype=">u4"),
        "empty": np.zeros((0, 3)),
        "scalar": np.array(3.5),
        "complex": np.arange(4) * (1 + 2j),
    }


def check(got, want):
    assert list(got) == list(want)
    for k in want:
        w, g = np.asarray(want[k]), got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, k
        assert np.array_equal(g, w), k
        assert not g.flags.writeable, k


def test_every_layout_is_copied_exactly_into_one_write_sealed_segment():
    want = sources()
    got = stridemap.share_many(want)
    assert type(got) is stridemap.PackedDict
    check(got, want)
    segs = {id(stridemap.segment_of(v)) for v in got.values() if v.size}
    assert len(segs) == 1
    seg = stridemap.segment_of(got["c"])
    assert seg.frozen and seg.write_sealed
    assert got["reversed"].strides == want["reversed"].strides  # layouts kept where they can be
    lst = stridemap.share_many(list(want.values()))
    assert type(lst) is stridemap.PackedList
    check(dict(zip(want, lst)), want)


def test_more_arrays_than_one_pwritev_takes_are_all_written_with_no_hole():
    """Thousands of small arrays of odd sizes (padding between them): written with pwritev in
    IOV_MAX-buffer calls, exact, and the data area holds no page left unwritten (a hole would
    be a page a full tmpfs could refuse under a reader's map)."""
    from stridemap.segments import pack

    count = 2 * pack._IOV_MAX + 300
    want = [np.arange(k % 37 + 1, dtype="<f4" if k % 3 else ">i2") * (k + 1)
            for k in range(count)]
    got = stridemap.share_many(want)
    assert len(got) == count
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and np.array_equal(g, w), k
    seg = stridemap.segment_of(got[0])
    end = seg.data_offset + got.base.nbytes
    assert os.lseek(seg.fd, seg.data_offset, os.SEEK_HOLE) >= end


def test_short_writes_resume_inside_a_buffer(monkeypatch):
    """pwritev may write less than asked: the rest follows, from inside the buffer it ended in."""
    real = os.pwritev

    def short(fd, buffers, offset):  # at most 1000 bytes a call, cut anywhere
        out, left = [], 1000
        for b in buffers:
            b = memoryview(b)[:left]
            out.append(b)
            left -= len(b)
            if not left:
                break
        return real(fd, out, offset)

    want = {f"a{k}": np.arange(k * 50 + 7, dtype="<f8") for k in range(30)}
    monkeypatch.setattr(os, "pwritev", short)
    got = stridemap.share_many(want, huge_pages="never")
    monkeypatch.undo()
    check(got, want)


def test_a_write_that_finds_no_room_is_no_space_and_leaves_nothing(monkeypatch):
    import errno

    def full(fd, buffers, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "pwritev", full)
    with pytest.raises(stridemap.NoSpace):
        stridemap.share_many({"a": np.ones(1000), "b": np.zeros(10)}, huge_pages="never")
    monkeypatch.undo()
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_refusals_leave_nothing_behind():
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(stridemap.NotShareable, match="'objects'"):
        stridemap.share_many({"ok": np.ones(3), "objects": np.array([object()])})
    with pytest.raises(TypeError):
        stridemap.share_many(np.ones(3).tobytes())
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_outside_a_pool_it_pickles_as_a_plain_container():
    stridemap.pools.uninstall()
    got = pickle.loads(pickle.dumps(stridemap.share_many({"a": np.arange(3.0)})))
    assert type(got) is dict and got["a"].tolist() == [0.0, 1.0, 2.0]


def received(packed):
    """In a worker: what came, its type, and how many mappings back its arrays."""
    maps = {id(backing(v)[0]) for v in (packed.values() if isinstance(packed, dict) else packed)
            if v.size}
    items = packed.items() if isinstance(packed, dict) else enumerate(packed)
    return type(packed).__name__, {k: (v.dtype.str, v.tolist()) for k, v in items}, len(maps)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_through_a_pool_it_is_one_mapping_and_exact(method):
    stridemap.pools.install()
    want = sources()
    packed = stridemap.share_many(want)
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx,
                                                initializer=stridemap.pools.install) as pool:
        kind, got, maps = pool.submit(received, packed).result()
        kind_l, got_l, maps_l = pool.submit(received, stridemap.share_many(
            list(want.values()))).result()
    assert kind == "PackedDict" and kind_l == "PackedList"
    assert maps == 1 and maps_l == 1, "the worker mapped the segment more than once"
    for i, (k, w) in enumerate(want.items()):
        w = np.asarray(w)
        assert got[k] == (w.dtype.str, w.tolist()), k
        assert got_l[i] == (w.dtype.str, w.tolist()), k


def test_its_pickle_is_one_handoff_plus_a_manifest():
    stridemap.pools.install()
    arrays = {f"a{i}": np.full(100, float(i)) for i in range(500)}
    from multiprocessing import reduction

    data = reduction.ForkingPickler.dumps(stridemap.share_many(arrays))
    assert bytes(data).count(b"\x89SMD\r\n\x1a\n") == 1  # one record, not one per array
    back = pickle.loads(data)
    assert all(back[k].tolist() == v.tolist() for k, v in arrays.items())


def test_an_entry_replaced_by_another_array_pickles_one_by_one():
    stridemap.pools.install()
    packed = stridemap.share_many({"a": np.arange(3.0), "b": np.arange(4.0)})
    packed["b"] = np.ones(2)  # no longer in the segment
    back = pickle.loads(pickle.dumps(packed))
    assert type(back) is dict and back["a"].tolist() == [0.0, 1.0, 2.0]
    assert back["b"].tolist() == [1.0, 1.0]
