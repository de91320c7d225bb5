"""Huge pages for share()/empty() segments, on this machine's kernel (stridemap.segments.huge).

As root: a tmpfs mounted ``huge=always``, a few reserved hugetlb pages and
``shmem_enabled=advise``, each restored right after, serialized with the Rust tests by a lock
file; the segments are checked in /proc/self/smaps, for the producer and a consumer mapping.
Without root, the tests say what they could not exercise and still test auto's fallback.
"""

import contextlib
import fcntl
import gc
import mmap
import os
import subprocess
import tempfile
import threading

import numpy as np
import pytest

import stridemap
from stridemap.segments import huge

SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
MIB = 1 << 20
ROOT = os.geteuid() == 0



pytestmark = pytest.mark.usefixtures("new_segments_only")  # these tests are about new segments

@pytest.fixture(autouse=True)
def serial():
    """One test at a time across processes (the Rust tests change the same settings)."""
    path = os.path.join(tempfile.gettempdir(), "stridemap-huge-pages-tests.lock")
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)  # flock needs no more
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def note(text):
    print(f"note: {text}")


@contextlib.contextmanager
def setting(path, value):
    """``value`` written to a sysfs/procfs file for the block; restored after. Yields False
    (with a note) when this sandbox refuses."""
    with open(path) as f:
        text = f.read()
    old = huge._selected(text) or text.strip()
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        note(f"cannot write {value} to {path} ({e}); not exercised")
        yield False
        return
    try:
        yield True
    finally:
        with open(path, "w") as f:
            f.write(old)


def meminfo(key):
    return huge._meminfo(key) or 0


def consume(e):
    """What export() made, opened as another process would, every page read once."""
    roots = [e.segment.folder] if e.segment.folder else []
    try:
        v = stridemap.open(e.record, fd=e.fd, allowed_roots=roots)
    finally:
        e.close()
    touch(v)
    return v


def touch(a):
    """Reads one byte per 4 KiB page of the whole mapping under ``a``."""
    b = a
    while not isinstance(b, mmap.mmap) and getattr(b, "base", None) is not None:
        b = b.base
    int(np.frombuffer(b, np.uint8)[::4096].sum())


def record_of(s):
    """The descriptor of ``s`` (its export's fd closed at once)."""
    e = stridemap.export(s)
    e.close()
    return stridemap.decode(e.record)


def check_huge(s, want, nbytes):
    """The mechanism, the layout (data at the huge page size, whole huge pages) and the
    producer's and a consumer's mappings really huge-mapped."""
    h = huge.page_size()
    assert huge.page_backing(s) == want
    d = record_of(s)
    assert d.buffer_offset == h and d.file_len % h == 0
    touch(s)  # fault the producer's map in
    assert huge.huge_page_bytes(s) >= nbytes, huge.huge_page_bytes(s)
    v = consume(stridemap.export(s))
    assert np.array_equal(v, s)
    got = huge.huge_page_bytes(v)
    assert got >= nbytes, f"{want}: only {got} of {nbytes} bytes huge-mapped by the consumer"
    print(f"{want}: consumer {got} bytes huge-mapped")


def test_auto_falls_back_and_the_segment_works(tmp_path):
    for kind, folder in (("memfd", None), ("file", str(tmp_path))):
        p = huge.probe(kind, folder, 8 * MIB)
        print(f"{kind} here: {p.summary()}")
        a = np.arange(MIB, dtype="f8")
        s = stridemap.share(a, kind=kind, temp_folder=folder)
        want = p.chosen().backing if p.chosen() else "base"
        assert huge.page_backing(s) == want
        assert np.array_equal(consume(stridemap.export(s[::-3])), a[::-3])
        small = stridemap.share(np.arange(100.0), kind=kind, temp_folder=folder)
        assert huge.page_backing(small) == "base"
        assert record_of(small).buffer_offset == 4096


def test_mode_is_checked():
    with pytest.raises(ValueError, match="huge_pages"):
        stridemap.empty(10, "f8", huge_pages="sometimes")


def test_a_tmpfs_mounted_huge_always_gives_huge_file_segments():
    if not ROOT:
        return note("not root: no huge= tmpfs mounted; not exercised")
    mnt = tempfile.mkdtemp()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,huge=always", "tmpfs", mnt])
    if r.returncode:
        os.rmdir(mnt)
        return note("cannot mount a tmpfs here; not exercised")
    try:
        s = stridemap.share(np.arange(MIB, dtype="f8"), kind="file", temp_folder=mnt)
        check_huge(s, "thp-file", 8 * MIB)
        e = stridemap.empty((MIB,), "f8", kind="file", temp_folder=mnt)
        e[:] = 2.0
        assert huge.page_backing(e) == "thp-file" and huge.huge_page_bytes(e) >= 8 * MIB
        del s, e
        stridemap.reap()
    finally:
        # The pool folder's lock fd lives as long as the process: detach lazily.
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)


def test_reserved_hugetlb_pages_back_memfd_segments():
    if not ROOT:
        return note("not root: no hugetlb pages reserved; not exercised")
    before = meminfo("HugePages_Total:")
    with setting(NR_HUGEPAGES, str(before + 8)) as ok:
        if not ok or meminfo("HugePages_Total:") < before + 8:
            return note("the kernel did not reserve 8 hugetlb pages; not exercised")
        free = meminfo("HugePages_Free:")
        e = stridemap.empty((4 * MIB // 8,), "f8")
        e[:] = np.arange(4 * MIB // 8)
        assert free - meminfo("HugePages_Free:") == 3, "2 data pages and the header's"
        check_huge(e, "hugetlb-memfd", 4 * MIB)
        s = stridemap.share(np.arange(MIB // 8 * 3, dtype="f8"))  # 3 MiB: 2 pages + header
        check_huge(s, "hugetlb-memfd", 3 * MIB)
        del e, s
        gc.collect()
        assert meminfo("HugePages_Free:") == free, "the pages come back"
        # More than is free: auto falls back, never fails.
        if free > 16:
            return note(f"{free} hugetlb pages free here; the fallback is not exercised")
        big = stridemap.empty((32 * MIB // 8,), "f8")
        assert huge.page_backing(big) != "hugetlb-memfd"
        del big


def test_a_lost_race_for_hugetlb_pages_falls_back_under_auto(monkeypatch):
    """The probe sees free pages, but another process took them before the segment was made:
    the kernel refuses the mapping (ENOMEM), auto makes the segment in base pages, require
    says there is no space."""
    if not ROOT:
        return note("not root: no hugetlb pages reserved; not exercised")
    if meminfo("HugePages_Free:") > 0:
        return note("hugetlb pages are free here already; the lost race is not exercised")
    before = meminfo("HugePages_Total:")
    with setting(NR_HUGEPAGES, str(before + 2)) as ok:
        if not ok or meminfo("HugePages_Total:") < before + 2:
            return note("the kernel did not reserve 2 hugetlb pages; not exercised")
        monkeypatch.setattr(huge, "hugetlb_available", lambda size: 1 << 20)
        a = stridemap.empty((16 * MIB // 8,), "f8")
        assert huge.page_backing(a) == "base"
        a[:] = 1.0
        with pytest.raises(stridemap.NoSpace):
            stridemap.empty((16 * MIB // 8,), "f8", huge_pages="require")
        del a


def test_a_hugetlbfs_temp_root_holds_named_segments():
    if not ROOT:
        return note("not root: no hugetlbfs mounted; not exercised")
    before = meminfo("HugePages_Total:")
    with setting(NR_HUGEPAGES, str(before + 8)) as ok:
        if not ok or meminfo("HugePages_Total:") < before + 8:
            return note("the kernel did not reserve 8 hugetlb pages; not exercised")
        mnt = tempfile.mkdtemp()
        if subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", mnt]).returncode:
            os.rmdir(mnt)
            return note("cannot mount hugetlbfs here; not exercised")
        try:
            # Even "never" and a small array: a hugetlbfs has no base pages.
            s = stridemap.share(np.arange(100.0), kind="file", temp_folder=mnt, huge_pages="never")
            assert huge.page_backing(s) == "hugetlb-file"
            b = stridemap.share(np.arange(MIB // 2, dtype="f8"), kind="file", temp_folder=mnt)
            check_huge(b, "hugetlb-file", 4 * MIB)
            del s, b
            stridemap.reap()
            gc.collect()
        finally:
            subprocess.run(["umount", "-l", mnt])
            os.rmdir(mnt)


def test_shmem_enabled_advise_gives_thp_memfds_and_never_gives_base_pages():
    if not ROOT:
        return note("not root: shmem_enabled not changed; not exercised")
    if meminfo("HugePages_Free:") > meminfo("HugePages_Rsvd:"):
        return note("hugetlb pages are free here, so auto would take those; not exercised")
    with setting(SHMEM_ENABLED, "advise") as ok:
        if not ok:
            return
        s = stridemap.share(np.arange(2 * MIB, dtype="f8"))
        check_huge(s, "thp-memfd", 16 * MIB)
        e = stridemap.empty((2 * MIB,), "f8")
        e[:] = 1.0
        assert huge.page_backing(e) == "thp-memfd" and huge.huge_page_bytes(e) >= 16 * MIB
        # Pages nobody wrote come in when a consumer reads them: huge too, since the consumer's
        # map asks for them (MADV_HUGEPAGE).
        holes = stridemap.empty((MIB,), "f8")
        holes.freeze()
        v = consume(stridemap.export(holes))
        assert huge.huge_page_bytes(v) >= 8 * MIB, "holes read by a consumer"
        del holes, v
        n = stridemap.share(np.arange(2 * MIB, dtype="f8"), huge_pages="never")
        assert huge.page_backing(n) == "base"
        assert record_of(n).buffer_offset == 4096
        v = consume(stridemap.export(n))
        assert huge.huge_page_bytes(n) == 0 and huge.huge_page_bytes(v) == 0, "4 KiB pages"
        del s, e, n, v


def test_require_without_any_mechanism_is_the_clear_error(tmp_path):
    p = huge.probe("file", str(tmp_path), 8 * MIB)
    if p.chosen() is None:
        with pytest.raises(huge.HugePagesUnavailable) as err:
            stridemap.empty((MIB,), "f8", kind="file", temp_folder=str(tmp_path),
                            huge_pages="require")
        text = str(err.value)
        for want in ("huge=within_size", "STRIDEMAP_TEMP_FOLDER", "huge_pages='auto'"):
            assert want in text, text
        assert isinstance(err.value, stridemap.StridemapError)
    else:
        note(f"{tmp_path} offers huge pages ({p.summary()}); file require not exercised")
    # memfds: no free hugetlb pages and shmem_enabled=never (made so as root, restored after;
    # no hugetlb pages are reserved here), else tested only when that is the state already.
    with (setting(SHMEM_ENABLED, "never") if ROOT else contextlib.nullcontext(False)):
        p = huge.probe("memfd", None, 8 * MIB)
        if p.chosen() is not None:
            return note(f"memfd huge pages are available here ({p.summary()}); not exercised")
        with pytest.raises(huge.HugePagesUnavailable) as err:
            stridemap.share(np.zeros(MIB), huge_pages="require")
        text = str(err.value)
        for want in ("vm.nr_hugepages", "shmem_enabled", "advise"):
            assert want in text, text
        print(f"the error: {text}")


def test_a_large_hugetlb_share_is_filled_from_both_ends(monkeypatch):
    """share() of a large span into hugetlb pages: this thread and the helper each fault in,
    zero and fill huge pages (stridemap.segments.fresh), every byte in place, every page huge."""
    if not ROOT:
        return note("not root: no hugetlb pages reserved; not exercised")
    from stridemap.segments import fresh as _fresh

    monkeypatch.setattr(_fresh, "PARALLEL_MIN", 0)
    monkeypatch.setattr(_fresh, "_usable_cpus", lambda: 2)
    sides = {"back": 0}
    map_and_copy = _fresh._map_and_copy

    def back(fd, part, at, page, advise=False):
        err = map_and_copy(fd, part, at, page, advise)
        if threading.current_thread().name == "stridemap-fill" and err is None:
            sides["back"] += 1
        return err

    monkeypatch.setattr(_fresh, "_map_and_copy", back)
    before = meminfo("HugePages_Total:")
    with setting(NR_HUGEPAGES, str(before + 24)) as ok:
        if not ok or meminfo("HugePages_Total:") < before + 24:
            return note("the kernel did not reserve 24 hugetlb pages; not exercised")
        a = np.arange(16 * MIB // 8, dtype="<f8")[::-1]
        s = stridemap.share(a)
        assert np.array_equal(s, a) and s.strides == a.strides
        assert sides["back"] > 0, "the helper filled nothing"
        check_huge(s, "hugetlb-memfd", 16 * MIB)
        del s
        gc.collect()
