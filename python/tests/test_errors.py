"""Producer errors: a clear exception and nothing left behind, for a full tmpfs, the fd limit,
hostile, stale and wrong-kind descriptors."""

import dataclasses
import errno
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import stridemap
from stridemap.segments import fill
from stridemap.segments import roots as temp
from producer_util import open_fds, quiet


def flip_last(record):
    """The record with its last byte flipped: a broken CRC whatever the CRC was (replacing it
    with a zero byte would miss a CRC that ends in zero)."""
    return record[:-1] + bytes([record[-1] ^ 0xFF])


def entries(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


def test_a_full_tmpfs_is_a_clear_error_and_leaves_nothing(tiny_tmpfs, monkeypatch):
    quiet()
    fds = open_fds()
    big = np.zeros(3 << 20, dtype=np.uint8)
    if tiny_tmpfs is None:  # simulated: the space check passes, the reservation fails
        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "posix_fallocate", no_space)  # empty() reserves with it
        monkeypatch.setattr(fill, "_pwrite_all", no_space)  # share() reserves by writing
        root = tempfile.mkdtemp()
    else:
        root = tiny_tmpfs
    with pytest.raises(stridemap.NoSpace) as e:
        stridemap.share(big, kind="file", temp_folder=root)
    msg = str(e.value)
    assert root in msg and str(big.nbytes + 4096) in msg and "STRIDEMAP_TEMP_FOLDER" in msg
    if tiny_tmpfs is not None:  # a folder on a disk is not remounted (test_error_messages.py)
        assert "bigger" in msg
    assert e.value.needed == big.nbytes + 4096 and e.value.available < e.value.needed
    assert isinstance(e.value, stridemap.StridemapError) and e.value.errno == errno.ENOSPC
    assert [p for p in entries(root) if "seg-" in p] == []
    assert open_fds() == fds
    if tiny_tmpfs is None:
        return
    # The space check passes but the reservation does not (someone else took the room): the
    # error comes from the pwrite that writes (and so reserves) the data, and the half-made
    # file is gone.
    monkeypatch.setattr(temp, "space", lambda folder: (1 << 40, 1 << 40))
    with pytest.raises(stridemap.NoSpace) as e:
        stridemap.share(big, kind="file", temp_folder=root)
    assert root in str(e.value)
    assert [p for p in entries(root) if "seg-" in p] == []
    # The same through $STRIDEMAP_TEMP_FOLDER.
    monkeypatch.undo()
    monkeypatch.setenv("STRIDEMAP_TEMP_FOLDER", root)
    with pytest.raises(stridemap.NoSpace, match="STRIDEMAP_TEMP_FOLDER"):
        stridemap.empty(big.shape, big.dtype, kind="file")
    small = stridemap.share(np.arange(1000.0), kind="file")  # what fits still works
    assert small.segment.path.startswith(os.path.realpath(root))
    # A small /dev/shm is not an error: segments go to the temp dir.
    monkeypatch.delenv("STRIDEMAP_TEMP_FOLDER")
    assert temp.choose_root(None, 3 << 20, shm=root) == temp.temp_dir()
    assert temp.choose_root(None, 1 << 10, shm=root) == temp.temp_dir()  # the margin
    del small


def test_a_memfd_without_memory_is_a_clear_error(monkeypatch):
    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    monkeypatch.setattr(os, "posix_fallocate", no_memory)  # empty() reserves with it
    monkeypatch.setattr(fill, "_pwrite_all", no_memory)  # share() reserves by writing
    quiet()
    fds = open_fds()
    with pytest.raises(stridemap.NoSpace, match="memfd") as e:
        stridemap.share(np.arange(1000.0))
    assert e.value.folder == "memfd" and "kind='file'" in str(e.value)
    with pytest.raises(stridemap.NoSpace, match="memfd"):
        stridemap.empty((1000,), np.float64)
    assert open_fds() == fds


FD_LIMIT = textwrap.dedent("""
    import os, resource, sys
    import numpy as np
    import stridemap

    def fds_in_use():  # without opening anything (listing /proc/self/fd needs an fd)
        import fcntl
        out = []
        for fd in range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]):
            try:
                fcntl.fcntl(fd, fcntl.F_GETFD)
                out.append(fd)
            except OSError:
                pass
        return out

    root = sys.argv[1]
    kind = sys.argv[2]
    made = [stridemap.share(np.arange(10.0), kind=kind, temp_folder=root)]  # folder, imports
    fds = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (fds + 40, fds + 40))
    try:
        while True:
            before = fds_in_use()
            made.append(stridemap.share(np.arange(float(len(made))), kind=kind,
                                        temp_folder=root))
    except stridemap.ProducerError as e:
        after = fds_in_use()
        assert e.errno == 24, e.errno
        assert "too many open files" in str(e) and "ulimit" in str(e), str(e)
        assert after == before, (before, after)
        folder = made[0].segment.folder
        n = len(made)
        del made[1:]  # fds to look with, and a clean exit
        if kind == "file":
            segs = os.listdir(folder)
            assert len(segs) == 1, segs
        print("ok", n, str(e))
""")


@pytest.mark.parametrize("kind", ["memfd", "file"])
def test_the_fd_limit_is_a_clear_error_and_leaves_nothing(kind, tmp_path):
    r = subprocess.run([sys.executable, "-c", FD_LIMIT, str(tmp_path), kind],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok"), r.stdout
    print(r.stdout.strip())
    assert entries(tmp_path) == []  # and the exit removed the folder


def test_hostile_stale_and_wrong_kind_descriptors_leave_nothing(tmp_path):
    """Every refusal leaves no fd, mapping or lock behind: afterwards the producer can still
    delete its segment at once."""
    f = stridemap.share(np.arange(100.0), kind="file", reuse=False)
    m = stridemap.share(np.arange(100.0), reuse=False)
    folder = f.segment.folder
    fd_ = stridemap.decode(stridemap.describe(f))
    md = stridemap.decode(stridemap.describe(m))
    other = stridemap.share(np.arange(100.0), reuse=False)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(bytes(4096 + 800))
    plain_fd = os.open(plain, os.O_RDONLY)
    em = stridemap.export(m)
    eo = stridemap.export(other)

    def maps():  # the mappings of files (malloc's anonymous ones come and go)
        with open("/proc/self/maps") as fh:
            return sorted(line for line in fh if "/" in line or "memfd:" in line)

    quiet()
    fds, nmaps = open_fds(), maps()
    bad = [
        (dataclasses.replace(fd_, generation=2), {"allowed_roots": [folder]},
         stridemap.StaleSegment),
        (dataclasses.replace(fd_, segment_id=bytes(16)), {"allowed_roots": [folder]},
         stridemap.StaleSegment),
        (dataclasses.replace(fd_, buffer_offset=0), {"allowed_roots": [folder]},
         stridemap.StaleSegment),
        (dataclasses.replace(fd_, path=str(tmp_path / "plain.bin")), {"allowed_roots": [folder]},
         stridemap.PathNotAllowed),
        (dataclasses.replace(fd_, path=fd_.path + "x"), {"allowed_roots": [folder]},
         stridemap.OpenFailed),
        (dataclasses.replace(fd_, file_len=fd_.file_len + 8), {"allowed_roots": [folder]},
         stridemap.LengthMismatch),
        (fd_, {"allowed_roots": [folder], "mode": "r+"}, stridemap.ModeNotAllowed),
        (md, {"fd": eo.fd}, stridemap.IdentityMismatch),  # another segment's fd
        (dataclasses.replace(md, generation=3), {"fd": em.fd}, stridemap.StaleSegment),
        (dataclasses.replace(md, inode=0, device=0, file_len=4096 + 800), {"fd": plain_fd},
         stridemap.NotSealed),  # a plain file's fd where a memfd was promised
        (md, {}, TypeError),  # an fd record without its fd
        (fd_, {"fd": em.fd, "allowed_roots": [folder]}, TypeError),  # a path record with one
        (flip_last(stridemap.describe(f)), {"allowed_roots": [folder]},
         stridemap.BadChecksum),
    ]
    for desc, kw, exc in bad:
        with pytest.raises(exc):
            stridemap.open(desc, **kw)
    assert open_fds() == fds
    assert maps() == nmaps
    for e in (em, eo):
        e.close()
    os.close(plain_fd)
    path = f.segment.path
    del f
    assert not os.path.exists(path)  # no lock left: deleted at once


def test_export_of_an_array_without_a_segment():
    with pytest.raises(stridemap.NotShareable, match="share"):
        stridemap.export(np.arange(10.0))
    with pytest.raises(stridemap.NotShareable):
        stridemap.describe(np.arange(10.0) + stridemap.share(np.arange(10.0)))


def test_a_received_memfd_opened_at_the_fd_limit_still_maps_but_cannot_be_handed_on(
        monkeypatch):
    s = stridemap.share(np.arange(10.0), reuse=False)
    e = stridemap.export(s)

    def no_fd(fd):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(os, "dup", no_fd)
    v = stridemap.open(e.record, fd=e.fd)
    monkeypatch.undo()
    e.close()
    assert v.tolist() == list(map(float, range(10)))
    with pytest.raises(stridemap.ProducerError, match="ulimit"):
        stridemap.export(v[::2])
    assert stridemap.decode(stridemap.describe(v[::2])).shape == (5,)  # the record alone
