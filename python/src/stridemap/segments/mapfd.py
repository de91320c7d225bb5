"""Mappings of a file that keep no fd of it: :func:`map_fd`.

``mmap.mmap(fd, ...)`` duplicates ``fd`` and keeps the duplicate for as long as the mapping
lives (for ``size()`` and ``resize()``, which stridemap never calls), so every live array held
one fd more than it needs: 700 received arrays exhausted the common limit of 1,024 fds. The
kernel needs no fd for a mapping: the mapping holds the file itself (and with it the
``flock`` of SPEC §7, which belongs to the open file description, not to an fd).

:func:`map_fd` returns a real ``mmap.mmap`` (numpy views of it, ``madvise``, ``close`` work as
usual) that holds no fd: on Python 3.13 and later through ``trackfd=False``; before, by mapping
an anonymous region of the same length with ``mmap`` (which keeps no fd) and then mapping the
file over it with ``MAP_FIXED`` through libc, so that the ``mmap`` object owns, and at its end
unmaps, the file's pages. Where that cannot be done it falls back to a plain ``mmap.mmap(fd)``,
which keeps its fd: no libc through ctypes, a hugetlb file (it needs an address aligned to
its huge page size), and, before 3.13, any mapping of 2 MiB or more (:data:`HUGE`: the kernel
aligns the address it picks for huge pages, and the region's would not be).

>>> import os
>>> fd = os.memfd_create("doc")
>>> os.ftruncate(fd, 8192)
>>> m = map_fd(fd, 8192, prot=mmap.PROT_READ | mmap.PROT_WRITE)
>>> os.close(fd)                     # the mapping stays valid
>>> m[:3] = b"abc"; bytes(m[:3])
b'abc'
"""

import ctypes
import mmap
import sys

TRACKFD = sys.version_info >= (3, 13)
_MAP_FIXED = 0x10
_MAP_FAILED = ctypes.c_void_p(-1).value
# From this length on, before 3.13, the kernel's choice of address matters: a mapping of at
# least a huge page (2 MiB) gets huge pages only at an address it aligns for the file (a tmpfs
# mounted huge=, shmem with transparent huge pages). Such mappings keep their fd.
HUGE = 2 << 20


def _libc_mmap():
    try:
        fn = ctypes.CDLL(None, use_errno=True).mmap  # the process's own libc: no search
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                   ctypes.c_int64]
    fn.restype = ctypes.c_void_p
    return fn


_mmap = None if TRACKFD else _libc_mmap()


def map_fd(fd: int, length: int, *, offset: int = 0, prot: int = mmap.PROT_READ,
           flags: int = mmap.MAP_SHARED) -> mmap.mmap:
    """``length`` bytes of ``fd``'s file from ``offset`` (a multiple of the page size), mapped
    with ``prot`` and ``flags`` (``MAP_SHARED`` or ``MAP_PRIVATE``, plus ``MAP_POPULATE``),
    as an ``mmap.mmap`` that keeps no fd. Its buffer is read-only when ``prot`` has no
    ``PROT_WRITE``.

    Raises ``OSError`` (and ``ValueError``/``OverflowError`` for impossible lengths) as
    ``mmap.mmap`` does.
    """
    if TRACKFD:
        return mmap.mmap(fd, length, flags=flags, prot=prot, offset=offset, trackfd=False)
    if _mmap is None or length <= 0 or length >= HUGE:
        return mmap.mmap(fd, length, flags=flags, prot=prot, offset=offset)
    # The region: anonymous and private (no page of it is ever touched: the file replaces it
    # first). Its address is not aligned for huge pages, hence HUGE.
    region = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE, prot=prot)
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(region)) if prot & mmap.PROT_WRITE \
            else _address_of_readonly(region)
        got = _mmap(addr, length, prot, flags | _MAP_FIXED, fd, offset)
    except BaseException:
        region.close()
        raise
    if got in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        region.close()
        if err == 22:  # EINVAL: a hugetlb file at an address not aligned to its page size
            return mmap.mmap(fd, length, flags=flags, prot=prot, offset=offset)
        raise OSError(err, f"mmap: {_strerror(err)}")
    if got != addr:  # MAP_FIXED maps exactly there or fails; never leave a stray mapping
        region.close()
        raise OSError(22, "mmap: MAP_FIXED returned another address")
    return region


def _address_of_readonly(region):
    import numpy as np

    return np.frombuffer(region, dtype=np.uint8).__array_interface__["data"][0]


def _strerror(err):
    import os

    return os.strerror(err)

