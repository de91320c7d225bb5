"""Describing a view of a memory-mapped file without copying it (SPEC §9): Python as a producer.

The buffer is the whole mapping numpy made; ``offset`` is element (0, …, 0)'s position in it —
not the lowest byte the view touches — and the strides are the view's, whatever their signs.

>>> import os, tempfile, numpy as np
>>> from stridemap import decode, describe
>>> path = os.path.join(tempfile.mkdtemp(), "m.bin")
>>> m = np.memmap(path, dtype="<f8", mode="w+", shape=(1000,))
>>> d = decode(describe(m[500:490:-1]))
>>> d.offset, d.strides, d.buffer_len
(4000, (-8,), 8000)
"""

import mmap
import os
import stat
import weakref

import numpy as np

from ..codec import errors
from ..codec.descriptor import Descriptor, Mode
from ..codec.record import encode
from ..codec.rules import KINDS
from .backing import segment_of


def describe(array: np.ndarray, *, fd: int | None = None, mode: Mode = "r") -> bytes:
    """A fixed record (1024 bytes) describing ``array``, without copying it: any view of an array
    from :func:`stridemap.share`, :func:`stridemap.empty` or :func:`stridemap.open` (sub-views,
    reversed, transposed, ``r+`` outputs), or a view at any depth of an ``np.memmap``.

    A view of a stridemap segment is described from the segment (its header's id and generation;
    a memfd's record says an fd travels beside it: :func:`stridemap.export` makes that fd). For
    an ``np.memmap`` the file is named by the memmap's path (made canonical with
    ``os.path.realpath``), or, when ``fd`` is given, travels as that fd (e.g. a memfd the memmap
    was made from). The identity (``file_len``, ``device``, ``inode``) is the file's ``fstat``.
    ``mode`` is what consumers may map with: ``"r"``, ``"c"``, or ``"r+"`` when the memmap is
    writable.
    """
    if fd is None:
        seg = segment_of(array)
        if seg is not None and seg.kind != "memmap":
            return seg.describe(array, mode)
    mm, owner = _backing_mmap(array)
    if not isinstance(owner, np.memmap) or owner.offset is None:
        raise errors.NotShareable(
            "the array is not a view of an np.memmap or of an array from stridemap.share(), "
            "empty() or open(): share it first"
        )
    if owner.mode == "c":
        raise ValueError(
            "a copy-on-write memmap's changes are private to this process: consumers would "
            "not see them; map the file with mode 'r' or 'r+' to share it"
        )
    if mode == "r+" and owner.mode not in ("r+", "w+"):
        raise ValueError(f"cannot grant 'r+' on a memmap opened with mode {owner.mode!r}")
    dt = array.dtype
    if dt.fields is not None or dt.subdtype is not None or dt.kind not in KINDS:
        raise ValueError(
            f"dtype {dt} has no stridemap typestr; view it as plain numbers or bytes first"
        )
    mm_addr = _address(np.frombuffer(mm, dtype=np.uint8))
    buffer_offset = owner.offset - (_address(owner) - mm_addr)
    if fd is None:
        if owner.filename is None:
            raise ValueError("the memmap has no file name: pass the file's fd=")
        path = os.path.realpath(owner.filename)
        st = _stat_path(path)
        mapped = mapped_inode(mm, mm_addr)
        if mapped is not None and st.st_ino != mapped:
            raise errors.NotShareable(
                f"{path} is no longer the file this memmap maps (it was replaced at its path, "
                "e.g. written to a temporary file and renamed over it): a consumer opening the "
                "path would see the new file; share() the array, or map the new file"
            )
    else:
        path = ""
        st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("the memmap's file is not a regular file")
    buffer_len = len(mm)
    strides = tuple(
        0 if n <= 1 and abs(s) > buffer_len else s for n, s in zip(array.shape, array.strides)
    )
    f_order = array.flags.f_contiguous and not array.flags.c_contiguous
    return encode(
        Descriptor(
            dtype=dt.str,
            order="F" if f_order else "C",
            mode=mode,
            source="path" if fd is None else "fd",
            path=path,
            shape=array.shape,
            strides=strides,
            offset=_address(array) - mm_addr,
            buffer_offset=buffer_offset,
            buffer_len=buffer_len,
            file_len=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
        )
    )


def _backing_mmap(array):
    """The mmap at the end of ``array``'s base chain and the array whose base it is."""
    obj = array
    while obj is not None:  # ndarrays, and the helper objects of as_strided, have a .base
        base = getattr(obj, "base", None)
        if isinstance(base, mmap.mmap):
            return base, obj
        obj = base
    raise errors.NotShareable(
        "the array is not a view of a memory-mapped file or of an array from stridemap.share(), "
        "empty() or open(): share it first"
    )


def _address(a):
    return a.__array_interface__["data"][0]


_inodes = weakref.WeakKeyDictionary()  # mmap -> the inode of the file it maps


def mapped_inode(mm, addr):
    """The inode of the file the mapping ``mm`` (at ``addr``) maps, from ``/proc/self/maps``
    (what a path names may since be another file); None if not found. (Not the device: on some
    filesystems, btrfs subvolumes, the maps show another device number than ``fstat``; a file
    still mapped keeps its inode, so no other file on it has that one.)"""
    hit = _inodes.get(mm)
    if hit is not None:
        return hit
    with open("/proc/self/maps", "rb") as f:
        for line in f:
            fields = line.split(None, 5)
            lo, _, hi = fields[0].partition(b"-")
            if int(lo, 16) <= addr < int(hi, 16):
                hit = _inodes[mm] = int(fields[4])
                return hit
    return None


def _stat_path(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
