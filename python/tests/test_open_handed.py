"""What a pool's receiver checks (stridemap.reader.open_handed): the sender says whether the fd
is a memfd or a named file, and each is held to what SPEC §6 says for it.

A memfd (a passed fd) to O9: sealed against shrinking, or refused. A named file, which the
sender opened by its path, to what an opened path is held to (no O9): a regular file on disk
cannot be sealed, and an fd of a tmpfs file (/dev/shm) answers F_GET_SEALS with F_SEAL_SEAL
alone, like a memfd would; that answer decided "memfd" before, and /dev/shm files were refused.
An fd that can still be sealed is a memfd whatever the sender says.
"""

import dataclasses
import fcntl
import os
import tempfile

import numpy as np
import pytest

import stridemap
from stridemap.reader import open_handed

N = 512


def _fd_record(path_record):
    """A record of a named file as a pool sends it: source "fd", no path."""
    desc = stridemap.decode(path_record)
    return stridemap.encode(dataclasses.replace(desc, source="fd", path=""))


@pytest.fixture(params=["/dev/shm", "disk"])
def named_file(request, tmp_path):
    """An np.memmap's file in /dev/shm (tmpfs) or on disk: its fd-source record and an fd."""
    folder = tempfile.mkdtemp(dir="/dev/shm") if request.param == "/dev/shm" else str(tmp_path)
    path = os.path.join(folder, "m.bin")
    m = np.memmap(path, dtype="<f8", mode="w+", shape=(N,))
    m[:] = np.arange(N)
    m.flush()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield _fd_record(stridemap.describe(m[::-1])), fd, request.param
    finally:
        os.close(fd)
        del m
        os.unlink(path)
        if request.param == "/dev/shm":
            os.rmdir(folder)


def test_a_named_file_is_checked_as_an_opened_path(named_file):
    record, fd, where = named_file
    got = open_handed(record, fd, mode="r", named=True)
    assert got.tolist() == list(range(N - 1, -1, -1))
    assert stridemap.segment_of(got).kind == "file"  # handed on as a named file again


def test_a_named_file_handed_as_a_memfd_is_refused_as_o9(named_file):
    record, fd, where = named_file
    with pytest.raises(stridemap.NotSealed) as e:
        open_handed(record, fd, mode="r", named=False)
    assert e.value.rule == "O9"


def _memfd(seals):
    fd = os.memfd_create("test-open-handed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, np.arange(N, dtype="<f8").tobytes())
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    st = os.fstat(fd)
    desc = stridemap.Descriptor(dtype="<f8", shape=(N,), strides=(8,), buffer_len=8 * N,
                                file_len=8 * N, source="fd", device=st.st_dev,
                                inode=st.st_ino)
    return stridemap.encode(desc), fd


@pytest.mark.parametrize("named", [False, True])
def test_a_memfd_that_can_shrink_is_refused_whatever_the_sender_says(named):
    record, fd = _memfd(0)
    try:
        with pytest.raises(stridemap.NotSealed, match="O9"):
            open_handed(record, fd, mode="r", named=named)
    finally:
        os.close(fd)


@pytest.mark.parametrize("named", [False, True])
def test_a_memfd_sealed_against_shrinking_is_received(named):
    record, fd = _memfd(fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    try:
        got = open_handed(record, fd, mode="r", named=named)
    finally:
        os.close(fd)
    assert got[-1] == N - 1


def test_a_record_naming_a_path_is_refused(named_file):
    record, fd, where = named_file
    desc = dataclasses.replace(stridemap.decode(record), source="path", path="/dev/shm/x")
    with pytest.raises(stridemap.SourceMismatch, match="opens no paths"):
        open_handed(stridemap.encode(desc), fd, mode="r", named=True)
