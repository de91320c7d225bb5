"""Writing bytes into a fresh segment as fast as the kernel lets us.

``write(2)`` is the fastest single-threaded way into a tmpfs or memfd: each new page is
allocated and filled by the copy, never zeroed first. But every write to one file takes the
file's inode lock, so two threads writing the same file take turns, and a fresh page costs
more than its copy (allocating it; on a virtual machine also the host's fault). Faults taken
through a shared map of the file do not take that lock. So a large fill runs two ways at once:
this thread writes chunks from the front with ``pwrite``, a helper thread takes chunks from the
back, allocates their pages with ``madvise(MADV_POPULATE_WRITE)`` (one kernel loop, no trap
per page) and copies into them through the map. They meet wherever their speeds put them.

Space: ``pwrite`` reports a full filesystem as ENOSPC; ``MADV_POPULATE_WRITE`` reports it as an
error too (EFAULT or ENOMEM) instead of the SIGBUS a plain store would get, and the helper only
copies into pages it has populated. A chunk the helper could not populate is written by this
thread with ``pwrite``, which then raises the error the caller turns into ``NoSpace``.

>>> import os, numpy as np
>>> fd = os.memfd_create("doc")
>>> os.ftruncate(fd, 4096 + 8)
>>> pwrite_all(fd, np.arange(8, dtype=np.uint8), 4096)
>>> os.pread(fd, 8, 4096)
b'\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07'
>>> os.close(fd)
"""

import ctypes
import errno
import mmap
import os
import threading

import numpy as np

from .. import forksafe
from . import uffd as _uffd

#: Fills of at least this many bytes use the helper thread (below it, starting a thread and
#: mapping the file cost more than they save).
PARALLEL_MIN = 16 << 20
_CHUNK = 8 << 20  # bytes per claim; a multiple of the page sizes (4 KiB, 2 MiB)
_WRITE_CHUNK = 1 << 30  # pwrite moves at most ~2 GiB per call
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14


def pwrite_all(fd, raw, pos):
    """Write the uint8 array ``raw`` to ``fd`` at ``pos`` with ``pwrite``, in calls of at most
    1 GiB. Raises the ``OSError`` of a failed write."""
    for start in range(0, raw.size, _WRITE_CHUNK):
        chunk = raw[start:start + _WRITE_CHUNK]
        done = 0
        while done < chunk.size:
            done += os.pwrite(fd, chunk[done:], pos + start + done)


def _madvise():
    """libc's ``madvise`` through ctypes (which lets go of the GIL during the call, where
    ``mmap.madvise`` holds it), or None when ctypes cannot reach it or the kernel has no
    ``MADV_POPULATE_WRITE`` (before 5.14; probed once on one anonymous page)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise  # the process's own libc: no search
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    try:
        probe = mmap.mmap(-1, mmap.PAGESIZE)
    except OSError:
        return None
    view = np.frombuffer(probe, dtype=np.uint8)
    try:
        works = fn(view.ctypes.data, mmap.PAGESIZE, MADV_POPULATE_WRITE) == 0
    finally:
        del view
        probe.close()
    return fn if works else None


_madvise_fn = None  # None: not looked up yet; False: not usable here
_populate_works = True  # until a populate says EINVAL


def _madvise_ready():
    """The usable ``madvise``, looked up on first use (a race makes it twice, harmlessly)."""
    global _madvise_fn
    if _madvise_fn is None:
        _madvise_fn = _madvise() or False
    return _madvise_fn


def _start(t):
    """Start the helper thread; False when the system refuses a new thread (RLIMIT_NPROC, a
    cgroup's pids.max): the caller then does the helper's share itself."""
    try:
        t.start()
        return True
    except RuntimeError:
        return False


def _join(t):
    """Join the helper even through a KeyboardInterrupt (re-raised once it has stopped): it
    must never outlive the call that started it. It stops within one chunk."""
    interrupted = None
    while True:
        try:
            t.join()
            break
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


FILL_THREADS_ENV = "STRIDEMAP_FILL_THREADS"
USERFAULTFD_ENV = "STRIDEMAP_USERFAULTFD"
_SWITCHES = {
    FILL_THREADS_ENV: {"1": "this thread alone", "2": "a helper thread too (the default)"},
    USERFAULTFD_ENV: {"0": "never", "1": "where the system allows (the default)"},
}


def _switch(name):
    """The value of the environment variable ``name`` (one of ``_SWITCHES``; unset or empty:
    the default); a ``ValueError`` naming it and its values for anything else."""
    choices = _SWITCHES[name]
    value = os.environ.get(name) or max(choices)
    if value not in choices:
        said = "; ".join(f"{k}: {v}" for k, v in choices.items())
        raise ValueError(f"{name}={value!r} means nothing: set it to one of {said}")
    return value


def fill_threads():
    """How many threads a fill may use, from ``$STRIDEMAP_FILL_THREADS``: 1 (this thread
    alone) or 2 (the default: a helper thread too, where two CPUs are usable)."""
    return int(_switch(FILL_THREADS_ENV))


def userfaultfd_allowed():
    """Whether the helper may place pages with userfaultfd, from ``$STRIDEMAP_USERFAULTFD``:
    0 never, 1 (the default) where the system allows."""
    return _switch(USERFAULTFD_ENV) == "1"


def parallel_worthwhile(nbytes):
    """Whether :func:`fill_fresh` would use a helper thread for ``nbytes``. Reads both
    switches, so that a wrong value is an error of any fill, whatever its size."""
    allowed = fill_threads() >= 2
    userfaultfd_allowed()
    return allowed and nbytes >= PARALLEL_MIN and _populate_works and _usable_cpus() >= 2


def fill_fresh(fd, raw, pos):
    """Write ``raw`` (a uint8 array) at ``pos`` of ``fd``, a file whose pages in that range are
    not yet allocated (a fresh segment): with a helper thread when
    :func:`parallel_worthwhile`, else with ``pwrite`` alone. Raises the ``OSError`` of a write
    that failed (ENOSPC for a full filesystem); the helper is always stopped first."""
    if not parallel_worthwhile(raw.size) or not _madvise_ready():
        pwrite_all(fd, raw, pos)
        return
    _fill_two_ways(fd, raw, pos, userfaultfd=userfaultfd_allowed())


class _Claims:
    """Chunks ``0..n`` taken from the front by one thread and from the back by the other."""

    def __init__(self, n):
        self.lo, self.hi = 0, n
        self.lock = forksafe.Lock()
        self.stop = False
        self.undone = []  # chunks the helper took but could not fill

    def front(self):
        with self.lock:
            if self.lo >= self.hi:
                return None
            self.lo += 1
            return self.lo - 1

    def back(self):
        with self.lock:
            if self.stop or self.lo >= self.hi:
                return None
            self.hi -= 1
            return self.hi


def fill_fresh_huge(fd, raw, pos, page, advise):
    """Like :func:`fill_fresh` for a huge-page segment (``page``: its huge page size;
    ``advise``: transparent huge pages, asked for with ``MADV_HUGEPAGE`` on each map), which
    is filled through maps only (hugetlb files cannot be written with ``pwrite``; ``pwrite``
    into a THP memfd under ``shmem_enabled=advise`` would get base pages): both threads fault
    in, zero and fill huge pages, from the two ends. ``pos`` must be a multiple of ``page``.
    Returns False, having written nothing, when it would not use two threads (the caller fills
    through one map). Raises the ``OSError`` of pages that could not be had."""
    if not parallel_worthwhile(raw.size) or pos % page or not _madvise_ready():
        return False

    def front(part, at):
        err = _map_and_copy(fd, part, at, page, advise)
        if err is not None:
            # MADV_POPULATE_WRITE says EFAULT where a store would get SIGBUS: no room.
            err = errno.ENOSPC if err == errno.EFAULT else err
            raise OSError(err, f"cannot fault in huge pages of a new segment: {os.strerror(err)}")

    _fill_two_ways(fd, raw, pos, page, front, advise)
    return True


def _fill_two_ways(fd, raw, pos, page=None, front=None, advise=False, userfaultfd=False):
    page = page or mmap.PAGESIZE
    chunk = max(page, _CHUNK - _CHUNK % page)
    if front is None:
        def front(part, at):
            pwrite_all(fd, part, at)
    # Chunk k covers raw[bounds(k)]; chunk edges fall on chunk edges of the file.
    first = min(raw.size, (-pos) % chunk)
    n = (1 if first else 0) + -(-(raw.size - first) // chunk)

    def bounds(k):
        if first:
            if k == 0:
                return 0, first
            k -= 1
        lo = first + k * chunk
        return lo, min(raw.size, lo + chunk)

    claims = _Claims(n)
    # The helper maps through an fd of its own, closed by itself: whatever happens to the
    # caller's fd meanwhile, it can only ever write this file.
    try:
        own = os.dup(fd)
    except OSError:  # out of fds: this thread does it all
        own = None

    def helper():
        k = None
        # Base pages: placed with UFFDIO_COPY where the system and $STRIDEMAP_USERFAULTFD
        # allow (no zeroing, no inode lock: .uffd), else faulted in and copied.
        uffd = (_uffd.open_uffd() if userfaultfd and page == mmap.PAGESIZE and not advise
                else None)
        try:
            while True:
                k = claims.back()
                if k is None:
                    return
                lo, hi = bounds(k)
                part, at = raw[lo:hi], pos + lo
                err = None
                if uffd is not None and at % page == 0 and part.size % page == 0:
                    err = _uffd.copy_into(uffd, own, part, at)
                    if err == errno.EINVAL:  # this file cannot be registered: stop trying
                        os.close(uffd)
                        uffd = None
                    if err is not None:
                        err = _map_and_copy(own, part, at, page, advise)
                else:
                    err = _map_and_copy(own, part, at, page, advise)
                if err is not None:
                    claims.undone.append(k)
                    return
        except BaseException:  # never leave a chunk unwritten: this thread's caller writes it
            if k is not None:
                claims.undone.append(k)
            raise
        finally:
            if uffd is not None:
                os.close(uffd)
            os.close(own)

    t = threading.Thread(target=helper, name="stridemap-fill", daemon=True)
    if own is not None and not _start(t):
        os.close(own)
    try:
        while True:
            k = claims.front()
            if k is None:
                break
            lo, hi = bounds(k)
            front(raw[lo:hi], pos + lo)
    finally:
        claims.stop = True
        if t.ident is not None:
            _join(t)
    for k in claims.undone:
        lo, hi = bounds(k)
        front(raw[lo:hi], pos + lo)


_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)


def _map_and_copy(fd, part, at, page, advise=False):
    """Copy ``part`` to offset ``at`` of ``fd`` through a map of just those pages (from ``at``
    rounded down to ``page``), allocated first with ``MADV_POPULATE_WRITE`` (after
    ``MADV_HUGEPAGE`` if ``advise``); None when done, else the errno of what failed (nothing
    written). Each chunk has its own map, so tearing its page tables down is this thread's
    work too."""
    global _populate_works
    start = at - at % page
    length = at + part.size - start
    if page > mmap.PAGESIZE:
        # Whole huge pages: the kernel refuses to unmap a hugetlb map of part of a huge page
        # (and Python's close() would not say so); such a file holds whole huge pages. (Base
        # pages are not rounded: Python refuses a map that reaches past the end of the file.)
        length = -(-length // page) * page
    try:
        mm = mmap.mmap(fd, length, flags=mmap.MAP_SHARED,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    except OSError as e:
        return e.errno or 12
    except ValueError:
        return 22
    dst = None
    try:
        dst = np.frombuffer(mm, dtype=np.uint8)[:at + part.size - start]
        if advise:
            _madvise_fn(dst.ctypes.data, dst.size, _MADV_HUGEPAGE)  # a hint
        if _madvise_fn(dst.ctypes.data, dst.size, MADV_POPULATE_WRITE) != 0:
            err = ctypes.get_errno() or 12
            if err == 22:  # EINVAL: a kernel without it (before 5.14)
                _populate_works = False
            return err
        dst[at - start:] = part
        return None
    finally:
        del dst
        mm.close()


def populate(mm, start, length):
    """Fault in the pages of ``mm`` (a writable shared map of a new segment) from ``start`` for
    ``length`` bytes with ``MADV_POPULATE_WRITE``, this thread from the front and a helper from
    the back, when :func:`parallel_worthwhile`: the kernel's first touch of each page (zeroing
    it, mapping it) is then shared by two CPUs, and the caller's fill runs at memcpy speed.
    ``start`` is a multiple of the segment's page size. A hint: nothing happens below the
    threshold, and both threads stop at the first failure (the pages then come as they are
    touched, as they would have)."""
    if length <= 0 or not parallel_worthwhile(length) or not _madvise_ready():
        return
    view = np.frombuffer(mm, dtype=np.uint8)
    try:
        base = view.ctypes.data + start
        n = -(-length // _CHUNK)
        claims = _Claims(n)

        def one(k):
            lo = k * _CHUNK
            return _madvise_fn(base + lo, min(_CHUNK, length - lo), MADV_POPULATE_WRITE) == 0

        def helper():
            while True:
                k = claims.back()
                if k is None or not one(k):
                    claims.stop = True
                    return

        t = threading.Thread(target=helper, name="stridemap-populate", daemon=True)
        _start(t)  # without it, this thread populates it all
        try:
            while not claims.stop:
                k = claims.front()
                if k is None or not one(k):
                    break
        finally:
            claims.stop = True
            if t.ident is not None:
                _join(t)
    finally:
        del view
