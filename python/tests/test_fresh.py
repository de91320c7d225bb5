"""Filling a fresh segment two ways at once (stridemap.segments.fresh): pwrite from the front, a helper
thread through a populated map from the back. Every byte lands once, in the right place, for
any size and position; a helper that cannot populate leaves its chunks to pwrite; a full
tmpfs is NoSpace with nothing left behind."""

import mmap
import errno
import os
import threading
import time

import numpy as np
import pytest

import stridemap
from stridemap.segments import fresh as _fresh
from stridemap.segments import roots
from stridemap.segments import uffd as _uffd
from producer_util import open_fds, quiet



pytestmark = pytest.mark.usefixtures("new_segments_only")  # these tests are about new segments

@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of two pages and no size threshold, so small fills take the two-way path."""
    monkeypatch.setattr(_fresh, "_CHUNK", 2 * os.sysconf("SC_PAGE_SIZE"))
    monkeypatch.setattr(_fresh, "PARALLEL_MIN", 0)
    monkeypatch.setattr(_fresh, "_usable_cpus", lambda: 2)


def counting(monkeypatch, slow_front=0.0, back_after_front=False):
    """Count the chunks each side writes; ``slow_front`` seconds per front chunk give the
    helper time to take some. With ``back_after_front`` the helper's first chunk waits (5 s at
    most) until the front has claimed one: whichever thread the scheduler runs first, both
    sides then write (on a busy machine the helper could otherwise take every chunk before
    the caller's thread ran again)."""
    counts = {"front": 0, "back": 0, "threads": set()}
    front_started = threading.Event()
    if not back_after_front:
        front_started.set()
    pwrite_all, map_and_copy, copy_into = (_fresh.pwrite_all, _fresh._map_and_copy,
                                           _uffd.copy_into)

    def front(fd, raw, pos):
        counts["front"] += 1
        front_started.set()
        time.sleep(slow_front)
        return pwrite_all(fd, raw, pos)

    def back(fd, part, at, page, advise=False):
        front_started.wait(5)
        done = map_and_copy(fd, part, at, page, advise)
        counts["back"] += done is None
        counts["threads"].add(threading.current_thread().name)
        return done

    def placed(uffd, fd, part, at):
        front_started.wait(5)
        err = copy_into(uffd, fd, part, at)
        counts["back"] += err is None
        counts["threads"].add(threading.current_thread().name)
        return err

    monkeypatch.setattr(_fresh, "pwrite_all", front)
    monkeypatch.setattr(_fresh, "_map_and_copy", back)
    monkeypatch.setattr(_uffd, "copy_into", placed)
    return counts


def segment_files(root):
    return sorted(n for _, _, files in os.walk(root) for n in files if n.startswith("seg-"))


@pytest.mark.parametrize("size", [1, 4095, 4096, 8191, 8192, 3 * 8192 + 5, 40 * 4096 + 17])
@pytest.mark.parametrize("pos", [0, 4096, 4096 + 8, 3 * 4096 + 4000])
def test_every_byte_lands_once_in_place(small_chunks, size, pos):
    raw = np.frombuffer(np.random.default_rng(size + pos).bytes(size), dtype=np.uint8)
    fd = os.memfd_create("fresh-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, pos + size + 100)
        _fresh.fill_fresh(fd, raw, pos)
        got = os.pread(fd, pos + size + 100, 0)
        assert got[pos:pos + size] == raw.tobytes()
        assert got[:pos] == bytes(pos) and got[pos + size:] == bytes(100)
    finally:
        os.close(fd)


@pytest.mark.parametrize("extra", [0, 3])  # whole pages, and a last chunk of part of one
def test_both_sides_write_and_the_helper_is_a_thread_of_its_own(small_chunks, monkeypatch,
                                                                extra):
    counts = counting(monkeypatch, slow_front=0.002, back_after_front=True)
    a = np.arange(64 * 1024 + extra, dtype="<f8")[::-1]  # 512 KiB (+24 B): 65 chunks
    s = stridemap.share(a)
    assert np.array_equal(s, a) and s.strides == a.strides
    assert counts["front"] > 0 and counts["back"] > 1, counts
    assert counts["front"] + counts["back"] == 64 + 1  # the data starts a page into the file
    assert counts["threads"] == {"stridemap-fill"}


def test_a_helper_that_cannot_populate_leaves_its_chunks_to_pwrite(small_chunks, monkeypatch):
    monkeypatch.setattr(_fresh, "_madvise_fn", lambda addr, n, advice: -1)
    monkeypatch.setattr(_fresh.ctypes, "get_errno", lambda: 12)  # ENOMEM
    counts = counting(monkeypatch)
    a = np.arange(100_000, dtype="<i4").reshape(100, 1000).T  # transposed: a span fill
    s = stridemap.share(a, kind="file")
    assert np.array_equal(s, a)
    assert counts["back"] == 0 and counts["front"] > 1
    assert _fresh._populate_works  # -1 without EINVAL is a failure, not a missing feature


def test_small_fills_and_one_cpu_use_pwrite_alone(monkeypatch):
    monkeypatch.setattr(_fresh, "PARALLEL_MIN", 1 << 20)
    assert not _fresh.parallel_worthwhile((1 << 20) - 1)
    monkeypatch.setattr(_fresh, "_usable_cpus", lambda: 1)
    assert not _fresh.parallel_worthwhile(1 << 30)
    monkeypatch.setattr(_fresh, "_usable_cpus", lambda: 2)
    assert _fresh.parallel_worthwhile(1 << 30)


def test_a_full_tmpfs_filled_two_ways_is_no_space_and_leaves_nothing(small_chunks, tiny_tmpfs,
                                                                    monkeypatch):
    if tiny_tmpfs is None:
        pytest.skip("cannot mount a tmpfs here (not root): the two-way fill of a full tmpfs "
                    "is not tested")
    fits = stridemap.share(np.arange(1000.0), kind="file", temp_folder=tiny_tmpfs)
    quiet()
    fds = open_fds()  # this process's folder there is made and open
    segments = segment_files(tiny_tmpfs)
    assert len(segments) == 1
    big = np.arange((3 << 20) // 8, dtype="<f8")  # 3 MiB into 2 MiB
    # The space check passes: the fill itself finds the tmpfs full.
    monkeypatch.setattr(roots, "space", lambda folder: (1 << 40, 1 << 40))
    for _ in range(3):
        with pytest.raises(stridemap.NoSpace) as e:
            stridemap.share(big, kind="file", temp_folder=tiny_tmpfs)
        assert tiny_tmpfs in str(e.value)
        assert segment_files(tiny_tmpfs) == segments
        assert open_fds() == fds
    assert all(t.name != "stridemap-fill" for t in threading.enumerate())
    assert fits[999] == 999.0
    del fits


def rss_of_mapping(a):
    """Resident bytes of the mapping that holds ``a``'s data (/proc/self/smaps)."""
    addr = a.__array_interface__["data"][0]
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()
            if "-" in head[0] and not line.startswith(("Rss", "Pss")) and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("Rss:"):
                return int(head[1]) * 1024
    raise AssertionError("no mapping holds the array")


@pytest.mark.parametrize("kind", ["memfd", "file"])
def test_empty_faults_its_pages_in_from_both_ends(small_chunks, monkeypatch, kind):
    calls = {}
    real = _fresh._madvise()

    def madvise(addr, n, advice):
        name = threading.current_thread().name
        calls[name] = calls.get(name, 0) + 1
        time.sleep(0.001)  # the helper gets its share even on a busy machine
        return real(addr, n, advice)

    monkeypatch.setattr(_fresh, "_madvise_fn", madvise)
    e = stridemap.empty((64 * 1024,), "<f8", kind=kind)  # 512 KiB: 64 chunks of 8 KiB
    assert rss_of_mapping(e) >= e.nbytes  # every page is there before anything wrote
    assert calls.get("stridemap-populate", 0) > 0 and calls.get(
        threading.current_thread().name, 0) > 0, calls
    assert sum(calls.values()) == 64
    assert not e.any()  # zeroed
    e[:] = np.arange(e.size)
    e.freeze()
    ex = stridemap.export(e)
    try:
        v = stridemap.open(ex.record, fd=ex.fd,
                           allowed_roots=[e.segment.folder] if e.segment.folder else [])
    finally:
        ex.close()
    assert np.array_equal(v, np.arange(e.size))


def test_empty_without_populate_still_works(small_chunks, monkeypatch):
    monkeypatch.setattr(_fresh, "_madvise_fn", lambda addr, n, advice: -1)
    e = stridemap.empty((100, 1000), "<i4", order="F")
    assert not e.any()
    e[:] = 7
    assert (e == 7).all() and e.flags.f_contiguous


def test_empty_below_the_threshold_or_on_one_cpu_populates_nothing(monkeypatch):
    monkeypatch.setattr(_fresh, "_madvise_fn", lambda *a: pytest.fail("populated"))
    small = stridemap.empty((1000,), "<f8")
    monkeypatch.setattr(_fresh, "_usable_cpus", lambda: 1)
    big = stridemap.empty((_fresh.PARALLEL_MIN // 8,), "<f8")
    assert rss_of_mapping(big) < big.nbytes // 2  # its pages come as they are touched
    assert not small.any() and not big[::4096].any()


def test_huge_chunk_maps_cover_whole_huge_pages(monkeypatch):
    """The kernel refuses to unmap a hugetlb map of part of a huge page (silently, from
    Python): every chunk map is whole pages of the segment's page size."""
    monkeypatch.setattr(_fresh, "PARALLEL_MIN", 0)
    monkeypatch.setattr(_fresh, "_usable_cpus", lambda: 2)
    page, lengths, real = 2 << 20, [], mmap.mmap

    def recording(fd, n, *args, **kwargs):
        lengths.append(n)
        return real(fd, n, *args, **kwargs)

    monkeypatch.setattr(_fresh.mmap, "mmap", recording)
    fd = os.memfd_create("fresh-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 11 * page)
        raw = np.frombuffer(os.urandom(16 * 2**20 + 3 * 4096 + 8), np.uint8)
        assert _fresh.fill_fresh_huge(fd, raw, page, page, advise=False)
        assert os.pread(fd, raw.size, page) == raw.tobytes()
    finally:
        os.close(fd)
    monkeypatch.undo()
    assert lengths and all(n % page == 0 for n in lengths), lengths


def test_no_helper_thread_to_be_had_fills_alone(small_chunks, monkeypatch):
    real_start = threading.Thread.start

    def refuse(self):
        if self.name.startswith("stridemap-"):
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    fds = open_fds()
    a = np.arange(50_000, dtype="<f8")[::-1]
    assert np.array_equal(stridemap.share(a), a)
    e = stridemap.empty((50_000,), "<f8")
    e[:] = 1.0
    assert e.sum() == 50_000.0
    del e, a  # share() keeps its copy while the source lives
    quiet()
    assert open_fds() == fds


def test_the_helper_has_an_fd_of_its_own_and_closes_it(small_chunks, monkeypatch):
    seen = set()
    map_and_copy = _fresh._map_and_copy

    def spy(fd, part, at, page, advise=False):
        if threading.current_thread().name == "stridemap-fill":
            seen.add(fd)
        return map_and_copy(fd, part, at, page, advise)

    monkeypatch.setattr(_fresh, "_map_and_copy", spy)
    counts = counting(monkeypatch, slow_front=0.002)
    copy_into = _uffd.copy_into

    def spy_uffd(uffd, fd, part, at):
        seen.add(fd)
        return copy_into(uffd, fd, part, at)

    monkeypatch.setattr(_uffd, "copy_into", spy_uffd)
    fd = os.memfd_create("fresh-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 1 << 20)
        fds = open_fds()
        raw = np.frombuffer(os.urandom(1 << 20), np.uint8)
        _fresh.fill_fresh(fd, raw, 0)
        assert os.pread(fd, 1 << 20, 0) == raw.tobytes()
        assert open_fds() == fds
    finally:
        os.close(fd)
    assert counts["back"] > 0 and seen and fd not in seen


def test_join_outlasts_an_interrupt_and_raises_it_after():
    class Slow:
        calls = 0

        def join(self):
            Slow.calls += 1
            if Slow.calls == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fresh._join(Slow())
    assert Slow.calls == 2  # joined again before the interrupt went on


def uffd_note():
    if _uffd.open_uffd() is None:
        print("note: no userfaultfd here (kernel, seccomp or architecture): the helper faults "
              "pages in and copies instead; the UFFDIO_COPY path is not exercised")
        return False
    return True


def test_the_helper_places_pages_with_uffdio_copy_where_it_can(small_chunks, monkeypatch):
    if not uffd_note():
        return
    placed = []

    def spy(uffd, fd, part, at):
        err = copy_into(uffd, fd, part, at)
        placed.append(err)
        return err

    counting(monkeypatch, slow_front=0.002)
    copy_into = _uffd.copy_into  # counting's
    monkeypatch.setattr(_uffd, "copy_into", spy)
    a = np.arange(64 * 1024 + 3, dtype="<f8")[::-1]  # not whole pages: the last chunk falls back
    s = stridemap.share(a)
    assert np.array_equal(s, a)
    assert placed and all(err is None for err in placed), placed


def test_uffdio_copy_onto_existing_pages_refuses_and_the_fill_falls_back(small_chunks):
    uffd = _uffd.open_uffd()
    if uffd is None:
        uffd_note()
        return
    page = mmap.PAGESIZE
    fd = os.memfd_create("fresh-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 4 * page)
        os.pwrite(fd, b"\x01" * page, page)  # page 1 exists
        part = np.full(2 * page, 9, dtype=np.uint8)
        assert _uffd.copy_into(uffd, fd, part, page) == errno.EEXIST
        assert _fresh._map_and_copy(fd, part, page, page) is None
        assert os.pread(fd, 4 * page, 0) == bytes(page) + b"\x09" * 2 * page + bytes(page)
    finally:
        os.close(uffd)
        os.close(fd)


def test_a_file_uffd_cannot_register_is_filled_anyway(small_chunks, tmp_path, monkeypatch):
    """A named segment on a filesystem that is not a tmpfs (the temp dir here may be one):
    UFFDIO_REGISTER says EINVAL, the helper stops trying and faults pages in and copies."""
    results = []
    counting(monkeypatch, slow_front=0.002)
    copy_into = _uffd.copy_into
    monkeypatch.setattr(_uffd, "copy_into",
                        lambda *args: results.append(copy_into(*args)) or results[-1])
    a = np.arange(100_000, dtype="<i4")
    s = stridemap.share(a, kind="file", temp_folder=str(tmp_path))
    assert np.array_equal(s, a)
    fs = os.statvfs(str(tmp_path))
    print(f"note: {tmp_path} gave UFFDIO_COPY results {set(results)} (f_bsize {fs.f_bsize})")
    assert len(results) <= 1 or None in results  # EINVAL stops it after one try


def test_without_userfaultfd_the_helper_populates_and_copies(small_chunks, monkeypatch):
    monkeypatch.setattr(_uffd, "_usable", False)
    counts = counting(monkeypatch, slow_front=0.002)
    a = np.arange(64 * 1024, dtype="<f8")
    assert np.array_equal(stridemap.share(a), a)
    assert counts["back"] > 0  # _map_and_copy did the helper's chunks
