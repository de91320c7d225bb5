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
