"""open(): random layouts over real files, every open-time check (SPEC §6), modes and fds."""

import dataclasses
import fcntl
import mmap
import os

import numpy as np
import pytest
from layouts import random_layout, reference_view, same_array, write_random_file

import stridemap
from stridemap import Descriptor, encode, encode_compact, errors

N_LAYOUTS = 1000


@pytest.mark.parametrize("form", ["fixed", "compact"])
def test_random_layouts_equal_as_strided(tmp_path, form):
    rng = np.random.default_rng(20240 + (form == "compact"))
    enc = encode if form == "fixed" else encode_compact
    count = N_LAYOUTS if form == "fixed" else N_LAYOUTS // 4
    for i in range(count):
        path = str(tmp_path / f"a{i}.bin")
        desc = random_layout(rng, path)
        write_random_file(rng, path, desc.file_len)
        got = stridemap.open(enc(desc), allowed_roots=[tmp_path])
        want = reference_view(path, desc)
        assert same_array(got, want), desc
        assert got.strides == desc.strides or got.size == 0
        assert not got.flags.writeable
        if desc.buffer_len:
            assert isinstance(got.base, mmap.mmap)  # a view of the mapping, not a copy


def make_file(folder, data=b"", name="a.bin"):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.fixture
def arr_file(tmp_path):
    """A 3x4 <f8 file (0..11) and a descriptor of it with its identity, mode r+."""
    path = make_file(tmp_path, np.arange(12, dtype="<f8").tobytes())
    st = os.stat(path)
    desc = Descriptor(dtype="<f8", shape=(3, 4), strides=(32, 8), buffer_len=96, file_len=96,
                      path=path, device=st.st_dev, inode=st.st_ino, mode="r+")
    return tmp_path, path, desc


def test_read_only_by_default(arr_file):
    root, _, desc = arr_file
    a = stridemap.open(encode(desc), allowed_roots=[root])
    assert a.tolist() == np.arange(12.0).reshape(3, 4).tolist()
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1


def test_r_plus_writes_reach_the_file(arr_file):
    root, path, desc = arr_file
    a = stridemap.open(encode(desc), allowed_roots=[root], mode="r+")
    a[2, 3] = -1.0
    a.base.flush()
    assert np.fromfile(path, "<f8")[11] == -1.0


def test_c_writes_stay_private(arr_file):
    root, path, desc = arr_file
    ro = dataclasses.replace(desc, mode="r")
    a = stridemap.open(encode(ro), allowed_roots=[root], mode="c")
    a[:] = 7.0
    assert np.fromfile(path, "<f8").tolist() == list(range(12))


def test_buffer_inside_the_file_at_an_unaligned_offset(tmp_path):
    data = bytes(range(256)) * 40
    path = make_file(tmp_path, data)
    desc = Descriptor(dtype="|u1", shape=(5,), strides=(-3,), offset=20, buffer_offset=5000,
                      buffer_len=100, file_len=len(data), path=path)
    a = stridemap.open(encode(desc), allowed_roots=[tmp_path])
    assert a.tolist() == [data[5020 - 3 * i] for i in range(5)]
    assert len(a.base) == 5000 % mmap.ALLOCATIONGRANULARITY + 100  # exactly the buffer


def test_an_empty_buffer_is_not_mapped(tmp_path):
    path = make_file(tmp_path, b"xyz")
    desc = Descriptor(dtype="<f8", shape=(0, 3), strides=(0, 0), buffer_len=0, file_len=3,
                      buffer_offset=3, path=path)
    a = stridemap.open(encode(desc), allowed_roots=[tmp_path])
    assert a.shape == (0, 3) and not a.flags.writeable


def test_a_descriptor_object_is_accepted(arr_file):
    root, _, desc = arr_file
    assert stridemap.open(desc, allowed_roots=[str(root)]).shape == (3, 4)


# --- every open-time check fails with its own exception -------------------------------------

def open_error(desc, **kw):
    with pytest.raises(errors.OpenError) as e:
        stridemap.open(encode(desc), **kw)
    return e.value


def test_o1_relative_path(arr_file):
    root, _, desc = arr_file
    e = open_error(dataclasses.replace(desc, path="a.bin"), allowed_roots=[root])
    assert isinstance(e, errors.BadPath) and e.rule == "O1"


@pytest.mark.parametrize("tail", ["/../a.bin", "/./a.bin", "//a.bin", "/a.bin/"])
def test_o1_dot_dotdot_and_empty_components(arr_file, tail):
    root, _, desc = arr_file
    e = open_error(dataclasses.replace(desc, path=str(root) + tail), allowed_roots=[root])
    assert isinstance(e, errors.BadPath)


def test_o2_outside_the_roots(arr_file, tmp_path_factory):
    _, _, desc = arr_file
    other = tmp_path_factory.mktemp("other")
    e = open_error(desc, allowed_roots=[other])
    assert isinstance(e, errors.PathNotAllowed) and e.rule == "O2"


def test_o2_only_default_roots_by_default_and_prefix_is_not_below(arr_file):
    root, _, desc = arr_file
    # The default roots (SPEC §6) are stridemap-* folders in the temp bases: not this file's.
    assert isinstance(open_error(desc), errors.PathNotAllowed)
    assert isinstance(open_error(desc, allowed_roots=[str(root)[:-1]]), errors.PathNotAllowed)
    assert isinstance(open_error(desc, allowed_roots=[desc.path]), errors.PathNotAllowed)


def test_o3_symlink_file(arr_file):
    root, path, desc = arr_file
    os.symlink(path, root / "link.bin")
    e = open_error(dataclasses.replace(desc, path=str(root / "link.bin")), allowed_roots=[root])
    assert isinstance(e, errors.SymlinkInPath) and e.rule == "O3"


def test_o3_symlinked_folder(arr_file):
    root, _, desc = arr_file
    (root / "real").mkdir()
    make_file(root / "real", np.arange(12, dtype="<f8").tobytes())
    os.symlink(root / "real", root / "dir")
    moved = dataclasses.replace(desc, path=str(root / "dir" / "a.bin"), inode=0)
    assert isinstance(open_error(moved, allowed_roots=[root]), errors.SymlinkInPath)
    # the root's own components are trusted: a symlinked root is fine
    assert stridemap.open(encode(moved), allowed_roots=[root / "dir"]).shape == (3, 4)


def test_o4_missing_file_is_not_created(arr_file):
    root, _, desc = arr_file
    missing = dataclasses.replace(desc, path=str(root / "nope.bin"))
    e = open_error(missing, allowed_roots=[root])
    assert isinstance(e, errors.OpenFailed) and e.rule == "O4" and e.errno == 2
    assert not (root / "nope.bin").exists()


def test_o5_write_on_a_read_only_descriptor(arr_file):
    root, _, desc = arr_file
    ro = dataclasses.replace(desc, mode="r")
    e = open_error(ro, allowed_roots=[root], mode="r+")
    assert isinstance(e, errors.ModeNotAllowed) and e.rule == "O5"
    assert isinstance(open_error(desc, allowed_roots=[root], mode="w+"), errors.ModeNotAllowed)


def test_o6_fifo_and_folder_do_not_hang(arr_file):
    root, _, desc = arr_file
    os.mkfifo(root / "fifo")
    (root / "sub").mkdir()
    for name in ("fifo", "sub"):
        e = open_error(dataclasses.replace(desc, path=str(root / name), inode=0),
                       allowed_roots=[root])
        assert isinstance(e, errors.NotRegularFile) and e.rule == "O6"


def test_o7_file_shorter_than_described(arr_file):
    root, path, desc = arr_file
    os.truncate(path, 95)
    e = open_error(desc, allowed_roots=[root])
    assert isinstance(e, errors.LengthMismatch) and e.rule == "O7"
    assert os.path.getsize(path) == 95  # never grown back


def test_o8_replaced_file(arr_file):
    root, path, desc = arr_file
    new = make_file(root, np.ones(12, "<f8").tobytes(), name="new.bin")
    os.replace(new, path)
    e = open_error(desc, allowed_roots=[root])
    assert isinstance(e, errors.IdentityMismatch) and e.rule == "O8"


def memfd(data, seals=0):
    fd = os.memfd_create("stridemap-test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def fd_desc(fd, **kw):
    st = os.fstat(fd)
    return Descriptor(dtype="<f8", shape=(12,), strides=(8,), buffer_len=96, file_len=96,
                      source="fd", device=st.st_dev, inode=st.st_ino, **kw)


def test_o9_memfd_without_seals():
    fd = memfd(np.arange(12, dtype="<f8").tobytes())
    try:
        e = open_error(fd_desc(fd), fd=fd)
        assert isinstance(e, errors.NotSealed) and e.rule == "O9"
    finally:
        os.close(fd)


def test_o9_sealed_memfd_opens_and_the_fd_can_be_closed():
    fd = memfd(np.arange(12, dtype="<f8").tobytes(), fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    a = stridemap.open(encode(fd_desc(fd, mode="r+")), fd=fd, mode="r+")
    os.close(fd)
    assert a[::-1][0] == 11.0
    a[0] = 5.0
    assert a[0] == 5.0


def test_o9_unsealable_fd_refused_unless_allowed(arr_file):
    _, path, _ = arr_file
    fd = os.open(path, os.O_RDONLY)
    try:
        desc = fd_desc(fd)
        assert isinstance(open_error(desc, fd=fd), errors.NotSealed)
        assert stridemap.open(encode(desc), fd=fd, allow_unsealed=True)[11] == 11.0
    finally:
        os.close(fd)


def test_o10_a_plain_file_is_not_a_segment(arr_file):
    root, _, desc = arr_file
    e = open_error(dataclasses.replace(desc, generation=7), allowed_roots=[root])
    assert isinstance(e, errors.StaleSegment) and e.rule == "O10"
    assert "no valid segment header" in str(e)  # the rest of O10 is in test_segment.py


def test_o11_write_map_of_a_read_only_fd():
    fd = memfd(bytes(96), fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_WRITE)
    try:
        e = open_error(fd_desc(fd, mode="r+"), fd=fd, mode="r+")
        assert isinstance(e, errors.MapFailed) and e.rule == "O11"
    finally:
        os.close(fd)


def test_usage_errors_are_not_rules(arr_file):
    root, _, desc = arr_file
    with pytest.raises(TypeError):
        stridemap.open(encode(desc), fd=0, allowed_roots=[root])
    with pytest.raises(TypeError):
        stridemap.open(encode(fd_desc(0)))
    with pytest.raises(ValueError):
        stridemap.open(encode(desc), allowed_roots=["relative/root"])
    rec = encode(desc)  # the last byte flipped (a zero byte would match a CRC ending in 0)
    with pytest.raises(errors.BadChecksum):
        stridemap.open(rec[:-1] + bytes([rec[-1] ^ 0xFF]), allowed_roots=[root])
