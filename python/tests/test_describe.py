"""describe(): views of np.memmap files round-trip through decode and open (SPEC §9)."""

import fcntl
import os

import numpy as np
import pytest

import stridemap
from stridemap import decode, describe


def roundtrip(view, root, **kw):
    rec = describe(view)
    assert len(rec) == 1024
    got = stridemap.open(decode(rec), allowed_roots=[root], **kw)
    assert got.dtype == view.dtype and got.shape == view.shape
    assert np.array_equal(got, view)
    return got, decode(rec)


@pytest.fixture
def m1000(tmp_path):
    m = np.memmap(tmp_path / "m.bin", dtype="<f8", mode="w+", shape=(1000,))
    m[:] = np.arange(1000)
    m.flush()
    return m


# joblib's memmapping reducer gets each of these wrong (SPEC §1.1).

def test_reversed(m1000, tmp_path):
    _, d = roundtrip(m1000[::-1], tmp_path)
    assert (d.offset, d.strides, d.buffer_len) == (7992, (-8,), 8000)


def test_reversed_with_a_step(m1000, tmp_path):
    _, d = roundtrip(m1000[::-3], tmp_path)
    assert (d.offset, d.strides, d.shape) == (7992, (-24,), (334,))


def test_reversed_window(m1000, tmp_path):
    got, d = roundtrip(m1000[500:490:-1], tmp_path)
    assert (d.offset, d.span) == (4000, (3928, 4008))
    assert got.tolist() == list(range(500, 490, -1))


def test_transpose_of_a_c_ordered_2d_memmap(tmp_path):
    m = np.memmap(tmp_path / "t.bin", dtype="<f8", mode="w+", shape=(10, 20))
    m[:] = np.arange(200).reshape(10, 20)
    _, d = roundtrip(m.T, tmp_path)
    assert (d.shape, d.strides, d.order, d.f_contiguous) == ((20, 10), (8, 160), "F", True)


def test_identity_and_path_are_recorded(m1000, tmp_path):
    d = decode(describe(m1000[10:20]))
    st = os.stat(tmp_path / "m.bin")
    assert (d.file_len, d.device, d.inode) == (8000, st.st_dev, st.st_ino)
    assert d.path == os.path.realpath(tmp_path / "m.bin") and d.source == "path"
    assert (d.buffer_offset, d.offset, d.mode) == (0, 80, "r")


def test_memmap_at_an_offset_and_nested_views(tmp_path):
    """The buffer is numpy's mapping (page-aligned start); views of views of plain arrays."""
    path = tmp_path / "o.bin"
    path.write_bytes(bytes(10_000))
    m = np.memmap(path, dtype=">i4", mode="r+", offset=5003, shape=(6, 7, 8))
    m[:] = np.arange(6 * 7 * 8).reshape(6, 7, 8)
    view = np.asarray(m[::-2].transpose(2, 0, 1)[1:, :, ::-3])
    got, d = roundtrip(view, tmp_path)
    assert d.buffer_offset == 4096 and d.buffer_len == 5003 - 4096 + 6 * 7 * 8 * 4


def test_random_views_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    m = np.memmap(tmp_path / "r.bin", dtype="<u2", mode="w+", shape=(9, 8, 7))
    m[:] = rng.integers(0, 2**16, size=m.shape)
    for _ in range(200):
        view = m
        for _ in range(int(rng.integers(1, 4))):
            axes = rng.permutation(view.ndim)
            view = view.transpose(axes)
            index = tuple(
                slice(int(rng.integers(-n - 1, n + 1)), None, int(rng.choice([-3, -2, -1, 1, 2])))
                for n in view.shape
            )
            view = view[index]
        if view.ndim and view.shape[0] and rng.integers(2):
            view = view[(0,) + (slice(None),) * (view.ndim - 1)]  # drop an axis
        roundtrip(view, tmp_path)


def test_length_one_axis_strides_beyond_the_buffer_become_zero(tmp_path):
    m = np.memmap(tmp_path / "s.bin", dtype="|u1", mode="w+", shape=(16,))
    view = np.lib.stride_tricks.as_strided(m, shape=(1, 4), strides=(1000, 1))
    _, d = roundtrip(view, tmp_path)
    assert d.strides == (0, 1)


def test_r_plus_and_c_descriptors(m1000, tmp_path):
    _, d = roundtrip(m1000[::-1], tmp_path)
    assert d.mode == "r"  # the default grants nothing more than reading...
    with pytest.raises(stridemap.ModeNotAllowed):
        stridemap.open(describe(m1000[::-1]), allowed_roots=[tmp_path], mode="r+")
    rec = describe(m1000[::-1], mode="r+")  # ...unless asked
    a = stridemap.open(rec, allowed_roots=[tmp_path], mode="r+")
    a[0] = -1.0
    assert m1000[-1] == -1.0  # the same bytes, shared


def test_a_memfd_backed_memmap_described_by_fd():
    fd = os.memfd_create("describe", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 4096 + 800)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        with open(fd, "r+b", closefd=False) as f:
            m = np.memmap(f, dtype="<f8", mode="r+", offset=4096, shape=(10, 10))
        m[:] = np.arange(100).reshape(10, 10)
        rec = describe(m[::-1, 2:5], fd=fd)
        d = decode(rec)
        assert (d.source, d.path, d.buffer_offset, d.offset) == ("fd", "", 4096, 720 + 16)
        assert np.array_equal(stridemap.open(rec, fd=fd), m[::-1, 2:5])
    finally:
        os.close(fd)


def test_what_cannot_be_described(tmp_path, m1000):
    with pytest.raises(ValueError, match="memory-mapped"):
        describe(np.arange(4))
    with pytest.raises(ValueError, match="memory-mapped"):
        describe(m1000[::2].copy())
    c = np.memmap(tmp_path / "m.bin", dtype="<f8", mode="c", shape=(1000,))
    with pytest.raises(ValueError, match="private"):
        describe(c)
    r = np.memmap(tmp_path / "m.bin", dtype="<f8", mode="r", shape=(1000,))
    with pytest.raises(ValueError, match="r\\+"):
        describe(r, mode="r+")
    with pytest.raises(ValueError, match="typestr"):
        describe(m1000.view([("a", "<f4"), ("b", "<f4")]))
