"""What a new user meets when a call goes wrong: the error's class, and a message that says
what was wrong and what to do."""

import errno
import os

import numpy as np
import pytest

import stridemap


@pytest.mark.parametrize("wrong", [None, 123, "a descriptor", {}, [1, 2]],
                         ids=["None", "int", "str", "dict", "list"])
def test_open_of_something_not_a_descriptor_is_a_type_error_naming_what_it_takes(wrong):
    with pytest.raises(TypeError) as e:
        stridemap.open(wrong)
    message = str(e.value)
    assert "Descriptor" in message and "bytes" in message, message
    assert type(wrong).__name__ in message, message


def test_decode_of_none_is_a_type_error_naming_what_it_takes():
    with pytest.raises(TypeError, match="bytes"):
        stridemap.decode(None)


def test_open_accepts_the_bytes_of_a_descriptor_in_any_buffer():
    a = stridemap.share(np.arange(6.0))
    ex = stridemap.export(a)
    try:
        for buf in (ex.record, bytearray(ex.record), memoryview(ex.record)):
            np.testing.assert_array_equal(stridemap.open(buf, fd=ex.fd), a)
    finally:
        ex.close()


def test_a_closed_fd_says_it_is_not_open():
    a = stridemap.share(np.arange(6.0))
    ex = stridemap.export(a)
    fd = ex.fd
    ex.close()  # closes the fd
    with pytest.raises(stridemap.OpenError) as e:
        stridemap.open(ex.record, fd=fd)
    # SPEC §6 O6: fstat on the received fd must succeed; its class, with a message about the fd.
    assert isinstance(e.value, stridemap.NotRegularFile) and e.value.rule == "O6"
    assert e.value.errno == errno.EBADF
    message = str(e.value)
    assert f"fd {fd}" in message and "not an open file descriptor" in message, message


@pytest.mark.parametrize("fd", ["3", 3.0, b"3"], ids=["str", "float", "bytes"])
def test_an_fd_of_the_wrong_type_is_a_type_error(fd):
    a = stridemap.share(np.arange(6.0))
    ex = stridemap.export(a)
    try:
        with pytest.raises(TypeError, match="fd"):
            stridemap.open(ex.record, fd=fd)
    finally:
        ex.close()


def _mount_type(path):
    """The filesystem type of the mount holding ``path`` (/proc/self/mountinfo)."""
    path, best = os.path.realpath(path), ("", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split(" ")[4]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                    len(point) >= len(best[0]):
                best = (point, right.split(" ")[0])
    return best[1]


def test_no_space_on_a_tmpfs_says_how_to_make_it_bigger(tiny_tmpfs):
    if tiny_tmpfs is None:
        pytest.skip("cannot mount a tmpfs here")
    folder = os.path.join(tiny_tmpfs, "app")  # the hint names the mount, not this folder
    os.mkdir(folder)
    with pytest.raises(stridemap.NoSpace) as e:
        stridemap.share(np.ones(1 << 19), kind="file", temp_folder=folder)  # 4 MiB > 2 MiB
    message = str(e.value)
    assert "mount -o remount,size=" in message and f" {tiny_tmpfs}`" in message, message


def test_no_space_on_a_disk_does_not_say_remount(tmp_path, monkeypatch):
    # A full disk, simulated: the writes that reserve the segment's space fail with ENOSPC.
    # (RLIMIT_FSIZE is no stand-in: its refusal names the file size limit instead.)
    if _mount_type(tmp_path) in ("tmpfs", "ramfs", ""):
        pytest.skip(f"{tmp_path} is not on a disk filesystem here")
    from stridemap.segments import fill

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fill, "_pwrite_all", full)
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(stridemap.NoSpace) as e:
        stridemap.share(np.ones(1 << 18), kind="file", temp_folder=str(tmp_path))
    message = str(e.value)
    assert "STRIDEMAP_TEMP_FOLDER" in message, message
    assert "remount" not in message and "tmpfs" not in message, message
