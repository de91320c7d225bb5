"""share(), empty(), freeze(), describe() and export() of shared views, in one process.

Every layout of the issue's list is shared into both kinds of segment, compared byte for byte
with numpy, shown to be backed by a ``memfd:`` or ``stridemap-`` mapping (no copy), and opened
again through its export.
"""

import fcntl
import logging
import os
import tempfile
import stat

import numpy as np
import pytest

import stridemap
from stridemap.segments import header as segment
from stridemap.segments import fill, lifetime, make
from producer_util import cases, is_stridemap_mapping, mapping_name, same_bytes

CASES = cases()
KINDS = ["memfd", "file"]


def open_export(e):
    """Open what export() made, as another process would (its own fd, the folder allowed)."""
    roots = [e.segment.folder] if e.segment.folder else []
    try:
        return stridemap.open(e.record, fd=e.fd, allowed_roots=roots)
    finally:
        e.close()


def span(a):
    lo = sum(min(0, (n - 1) * st) for n, st in zip(a.shape, a.strides))
    hi = sum(max(0, (n - 1) * st) for n, st in zip(a.shape, a.strides))
    return hi - lo + a.itemsize


def has_gaps(a):
    """Whether the bytes ``a`` spans are more than its distinct elements."""
    distinct = a.itemsize * int(np.prod([n for n, st in zip(a.shape, a.strides) if st]))
    return span(a) > distinct


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_share_equals_numpy_and_is_zero_copy(name, kind):
    a = CASES[name]
    s = stridemap.share(a, kind=kind, reuse=False)
    assert isinstance(s, stridemap.SharedArray)
    assert same_bytes(s, a), name
    assert not s.flags.writeable
    seg = stridemap.segment_of(s)
    assert seg is not None and seg.kind == kind and seg.frozen
    if a.size:
        assert is_stridemap_mapping(s), mapping_name(s)
    # Layouts without gaps keep their strides (axes of length > 1); those with gaps are packed.
    if a.size:
        if not has_gaps(a):
            for n, got, want in zip(a.shape, s.strides, a.strides):
                if n > 1:
                    assert got == want, (name, s.strides, a.strides)
        distinct = a.itemsize * int(np.prod([n for n, st in zip(a.shape, a.strides) if st]))
        assert s.segment.capacity <= max(distinct, span(a))
    # The record of the shared array and of a view of it round-trip.
    got = open_export(stridemap.export(s))
    assert same_bytes(got, a)
    if a.ndim and a.size:
        v = s[::-1]
        got = open_export(stridemap.export(v))
        assert same_bytes(got, a[::-1])
        if a.size:
            assert is_stridemap_mapping(got)


def test_a_broadcast_row_costs_one_row():
    row = np.arange(16, dtype="<f8")
    b = np.broadcast_to(row, (10**6, 16))
    s = stridemap.share(b)
    assert s.segment.capacity == row.nbytes
    assert s.strides == (0, 8)
    assert np.array_equal(s[123456], row)


def test_a_view_with_gaps_is_packed_in_its_stride_order():
    a = np.arange(4000, dtype="<f8").reshape(40, 100)
    v = a.T[::-2, 1::3]
    s = stridemap.share(v)
    assert s.segment.capacity == v.nbytes
    assert same_bytes(s, v)
    assert s.strides[0] < 0 and abs(s.strides[0]) < abs(s.strides[1])


def test_sharing_the_same_live_object_reuses_its_segment():
    a = np.arange(1000.0)
    s1 = stridemap.share(a)
    assert stridemap.share(a) is s1
    assert stridemap.share(a, kind="file") is not s1
    b = a.copy()  # same contents, another object: another segment
    assert stridemap.segment_of(stridemap.share(b)) is not stridemap.segment_of(s1)
    assert stridemap.share(s1) is s1  # already shared and frozen
    assert stridemap.share(a, reuse=False) is not s1
    elsewhere = stridemap.share(a, kind="file", temp_folder=tempfile.mkdtemp())
    assert elsewhere is not stridemap.share(a, kind="file")  # the folder asked for is kept
    key = (id(a), "memfd", None)
    assert key in lifetime._state.reused
    del a
    assert key not in lifetime._state.reused  # liveness: gone with the object


def test_share_accepts_array_likes_and_copies_them():
    s = stridemap.share([[1, 2], [3, 4]])
    assert s.tolist() == [[1, 2], [3, 4]]


def test_shared_arrays_results_are_plain_arrays():
    s = stridemap.share(np.arange(10.0))
    assert type(s + 1) is np.ndarray and stridemap.segment_of(s + 1) is None
    assert type(s[[1, 2]]) is np.ndarray and stridemap.segment_of(s[[1, 2]]) is None
    assert type(s[2:5]) is stridemap.SharedArray
    assert stridemap.segment_of(np.asarray(s)[2:5]) is s.segment
    assert isinstance(s.sum(), np.floating)
    assert stridemap.segment_of(np.arange(3)) is None


def test_pickling_a_shared_array_without_a_pool_copies_it():
    import pickle

    s = stridemap.share(np.arange(6.0).reshape(2, 3)[::-1])
    back = pickle.loads(pickle.dumps(s))
    assert type(back) is np.ndarray and np.array_equal(back, s)


@pytest.mark.parametrize("kind", KINDS)
def test_segment_header_seals_and_modes(kind):
    s = stridemap.share(np.arange(100, dtype="<i4"), kind=kind)
    seg = s.segment
    h = segment.read_header(seg.fd)
    assert h.segment_id == seg.segment_id and h.generation == 1 and h.capacity == 400
    assert h.data_offset == segment.DATA_OFFSET and h.owner_pid == os.getpid()
    st = os.fstat(seg.fd)
    assert st.st_size == segment.DATA_OFFSET + 400
    assert st.st_blocks * 512 >= st.st_size  # reserved up front
    d = stridemap.decode(stridemap.describe(s))
    assert (d.generation, d.segment_id, d.buffer_offset, d.buffer_len) == (
        1, seg.segment_id, 4096, 400)
    if kind == "memfd":
        seals = fcntl.fcntl(seg.fd, make.F_GET_SEALS)
        want = make.F_SEAL_SHRINK | make.F_SEAL_GROW | make.F_SEAL_WRITE | make.F_SEAL_SEAL
        assert seals & want == want and seg.write_sealed  # no writer at all (SPEC §9)
        assert d.source == "fd" and seg.path is None
        assert "memfd:stridemap-" in os.readlink(f"/proc/self/fd/{seg.fd}")
    else:
        assert d.source == "path" and d.path == seg.path
        assert stat.S_IMODE(st.st_mode) == 0o400  # frozen
        folder = os.stat(seg.folder)
        assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
        assert os.path.basename(seg.folder).startswith(f"stridemap-{os.getpid()}-")
        assert temp_parse(os.path.basename(seg.folder)) is not None
        assert seg.folder in stridemap.producer_folders()


def temp_parse(name):
    from stridemap.segments.roots import parse_folder_name

    return parse_folder_name(name)


def test_a_frozen_memfd_refuses_writable_maps_everywhere():
    import mmap

    s = stridemap.share(np.arange(512.0))
    e = stridemap.export(s, mode="r")
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(e.fd, 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(OSError):
            os.pwrite(s.segment.fd, b"x", 4096)
        with pytest.raises(ValueError):
            s[0] = 1.0
        with pytest.raises(ValueError):
            s.flags.writeable = True
    finally:
        e.close()


@pytest.mark.parametrize("kind", KINDS)
def test_empty_is_writable_and_freeze_seals_it(kind, new_segments_only):
    out = stridemap.empty((4, 5), "<f8", order="F", kind=kind)
    assert out.flags.writeable and out.flags.f_contiguous and out.shape == (4, 5)
    assert not out.any()
    out[:] = np.arange(20.0).reshape(4, 5)
    # A consumer writes into an r+ view of it.
    e = stridemap.export(out[1:, ::-1], mode="r+")
    roots = [out.segment.folder] if kind == "file" else []
    w = stridemap.open(e.record, fd=e.fd, mode="r+", allowed_roots=roots)
    e.close()
    assert w.flags.writeable
    w[0, 0] = -1.0
    assert out[1, 4] == -1.0
    # Views of the consumer's r+ mapping are described again, r+ included.
    e2 = stridemap.export(w.T[::-1], mode="r+")
    w2 = stridemap.open(e2.record, fd=e2.fd, mode="r+", allowed_roots=roots)
    e2.close()
    w2[-1, 0] = -2.0
    assert out[1, 4] == -2.0
    del w, w2
    assert out.freeze() is out
    assert not out.flags.writeable and out.segment.frozen
    with pytest.raises(stridemap.NotShareable):
        stridemap.export(out, mode="r+")
    got = open_export(stridemap.export(out))
    assert np.array_equal(got, out)
    if kind == "memfd":
        # Its own map is still writable: sealed against new writers only, and it says so.
        seals = fcntl.fcntl(out.segment.fd, make.F_GET_SEALS)
        assert seals & make.F_SEAL_FUTURE_WRITE and not seals & make.F_SEAL_WRITE
        assert not out.segment.write_sealed
    assert stridemap.share(out, kind=kind) is out  # frozen: shared as it is


def test_empty_shapes():
    assert stridemap.empty(5, "|b1").shape == (5,)
    assert stridemap.empty((), "<c8").shape == ()
    z = stridemap.empty((3, 0, 2), ">i8")
    assert z.size == 0 and z.dtype == np.dtype(">i8")
    assert open_export(stridemap.export(z)).shape == (3, 0, 2)
    with pytest.raises(ValueError):
        stridemap.empty((2,), "<f8", order="K")
    with pytest.raises(stridemap.NotShareable):
        stridemap.empty((2,), object)


def test_export_gives_each_receiver_its_own_open_file_description():
    s = stridemap.share(np.arange(64.0))
    e1, e2 = stridemap.export(s), stridemap.export(s[::2])
    try:
        for e in (e1, e2):
            assert fcntl.fcntl(e.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert os.fstat(e.fd).st_ino == os.fstat(s.segment.fd).st_ino
        # The producer holds LOCK_SH on its own description: a receiver's exclusive lock
        # attempt fails, which it would not on the producer's own description.
        with pytest.raises(BlockingIOError):
            fcntl.flock(e1.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(e1.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(e2.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        e1.close()
        e2.close()


def test_export_keeps_a_named_segment_alive():
    s = stridemap.share(np.arange(10.0), kind="file", reuse=False)
    path = s.segment.path
    e = stridemap.export(s[3:])
    assert e.fd is None
    del s
    assert os.path.exists(path)
    got = stridemap.open(e.record, allowed_roots=[e.segment.folder])
    assert got.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    del got
    del e  # the last user in this process, and no consumer maps it: unlinked at once
    assert not os.path.exists(path)


def test_a_named_segment_a_consumer_maps_is_deleted_once_it_unmaps():
    import time

    s = stridemap.share(np.arange(10.0), kind="file", reuse=False)
    path, folder = s.segment.path, s.segment.folder
    got = stridemap.open(stridemap.describe(s), allowed_roots=[folder])  # its own lock
    del s  # released by the producer, but the consumer's LOCK_SH stops the delete
    assert os.path.exists(path) and lifetime._state.pending
    assert got.tolist() == list(map(float, range(10)))
    del got
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(path)  # the reaper retried
    assert stridemap.reap() == 0


def test_describe_views_of_opened_arrays():
    s = stridemap.share(np.arange(24, dtype="<i8").reshape(4, 6))
    e = stridemap.export(s)
    got = stridemap.open(e.record, fd=e.fd)
    e.close()
    for view, want in [(got[1:, ::2], s[1:, ::2]), (got[::-1], s[::-1]), (got.T, s.T),
                       (got.T[::-1, 2], s.T[::-1, 2])]:
        e = stridemap.export(view)
        again = stridemap.open(e.record, fd=e.fd)
        e.close()
        assert same_bytes(again, want)
    c = stridemap.open(stridemap.describe(s), fd=s.segment.fd, mode="c")
    with pytest.raises(stridemap.NotShareable):
        stridemap.describe(c[1:])


def test_describe_still_describes_memmaps(tmp_path):
    m = np.memmap(tmp_path / "m.bin", dtype="<f8", mode="w+", shape=(10,))
    m[:] = np.arange(10)
    seg = stridemap.segment_of(m[::-1])
    assert seg.kind == "memmap" and seg.path == str(tmp_path / "m.bin")
    e = stridemap.export(m[::-1])
    assert e.fd is None
    assert stridemap.open(e.record, allowed_roots=[tmp_path]).tolist() == list(range(9, -1, -1))


@pytest.mark.parametrize("dtype", [object, [("a", "<i4"), ("b", "<f8")], "U3", "M8[s]", "S2",
                                   "V0"])
def test_not_shareable_dtypes_say_why_and_log_it(dtype, caplog):
    a = np.zeros(4, dtype=dtype)
    with caplog.at_level(logging.DEBUG, logger="stridemap"):
        with pytest.raises(stridemap.NotShareable, match="no stridemap typestr"):
            stridemap.share(a)
    assert any("not shared" in r.message for r in caplog.records)
    with pytest.raises(stridemap.NotShareable):
        stridemap.export(a)
    assert issubclass(stridemap.NotShareable, stridemap.StridemapError)


def test_too_many_axes():
    a = np.zeros((1,) * 33)
    with pytest.raises(stridemap.NotShareable, match="33 axes"):
        stridemap.share(a)


def test_bad_kind_and_mode():
    with pytest.raises(ValueError):
        stridemap.share(np.arange(3), kind="shm")
    s = stridemap.share(np.arange(3))
    with pytest.raises(ValueError):
        stridemap.export(s, mode="w+")


def test_the_readme_producer_example_runs():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    after = readme[readme.index("## Sharing an array (Python as a producer)"):]
    code = after[after.index("```python\n") + 10:]
    code = code[:code.index("```")]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    s, e, out = scope["s"], scope["e"], scope["out"]
    got = stridemap.open(e.record, fd=e.fd)
    e.close()
    assert np.array_equal(got, scope["a"].T[::-1][:, ::2])
    assert s.strides == (-8, 8000) and out.segment.frozen and not out.flags.writeable


@pytest.mark.parametrize("kind", KINDS)
def test_a_copy_on_write_receiver_writes_privately(kind):
    s = stridemap.share(np.arange(10.0), kind=kind, reuse=False)
    e = stridemap.export(s[::-1], mode="c")
    roots = [s.segment.folder] if s.segment.folder else []
    v = stridemap.open(e.record, fd=e.fd, mode="c", allowed_roots=roots)
    e.close()
    v[0] = 42.0
    assert v[0] == 42.0 and s[-1] == 9.0


@pytest.mark.parametrize("kind", KINDS)
def test_views_with_gaps_are_packed_slab_by_slab(kind, monkeypatch):
    monkeypatch.setattr(fill, "_STAGE", 64)  # many slabs, some of one row
    a = np.arange(3000, dtype="<i4").reshape(30, 100)
    for v in [a[::2], a[::-3, 1::7], a.T[::-2, ::4], a[5, ::-3], a[::2, 3], a[2:3, ::5]]:
        s = stridemap.share(v, kind=kind, reuse=False)
        assert same_bytes(s, v) and s.segment.capacity == v.nbytes
        assert same_bytes(open_export(stridemap.export(s)), v)


CONSUMER = """
import socket, sys
import numpy as np
import stridemap
sys.path.insert(0, sys.argv[2])
from producer_util import is_stridemap_mapping, mapping_name
sock = socket.socket(fileno=int(sys.argv[1]))
out = []
while True:
    try:
        record, fd = stridemap.recv(sock)
    except EOFError:
        break
    roots = [sys.argv[3]] if sys.argv[3] != "-" else []
    a = stridemap.open(record, fd=fd, allowed_roots=roots)
    if fd is not None:
        import os
        os.close(fd)
    assert is_stridemap_mapping(a), mapping_name(a)
    out.append(a.tobytes().hex())
print(" ".join(out))
"""


@pytest.mark.parametrize("kind", KINDS)
def test_another_process_maps_the_same_pages(kind):
    import socket
    import subprocess
    import sys

    views = [np.arange(1000.0)[::-3], np.arange(24, dtype=">i4").reshape(4, 6).T,
             np.broadcast_to(np.arange(5, dtype="<c8"), (3, 5))]
    shared = [stridemap.share(v, kind=kind, reuse=False) for v in views]
    root = shared[0].segment.folder or "-"
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    p = subprocess.Popen([sys.executable, "-c", CONSUMER, str(b.fileno()),
                          os.path.dirname(__file__), root],
                         pass_fds=[b.fileno()], stdout=subprocess.PIPE, text=True)
    b.close()
    for s in shared:
        with stridemap.export(s[::-1]) as e:
            stridemap.send(a, e.record, e.fd)
    a.close()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    assert out.split() == [v[::-1].tobytes().hex() for v in views]


@pytest.mark.parametrize("layout", ["contiguous", "reversed", "gaps", "broadcast"])
def test_every_shared_memfd_is_write_sealed(layout):
    """Whatever way share() fills it (pwrite, packed slabs, through a map), no writable map
    is left when it freezes: the kernel grants F_SEAL_WRITE, and no process can write it."""
    base = np.arange(4096.0).reshape(64, 64)
    src = {"contiguous": base, "reversed": base[::-1], "gaps": base[::2, ::3],
           "broadcast": np.broadcast_to(base[0], (64, 64))}[layout]
    s = stridemap.share(src, reuse=False)
    seals = fcntl.fcntl(s.segment.fd, make.F_GET_SEALS)
    assert seals & make.F_SEAL_WRITE and s.segment.write_sealed
    with pytest.raises(PermissionError):  # EPERM: even this process cannot write it now
        os.pwrite(s.segment.fd, b"x", s.segment.data_offset)
