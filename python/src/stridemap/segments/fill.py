"""Filling a new segment with a copy of an array, in the layout :func:`~.plan.copy_layout`
chose: the span's own bytes written with ``pwrite`` (a fresh file's pages, with a helper
thread from the other end where that pays: :mod:`.fresh`), slabs packed by numpy and written,
or element by element through a writable map; huge-page segments through maps.
"""

import numpy as np

from . import fresh
from .backing import address, system_error, view_span
from .make import map_segment


_STAGE = 32 << 20  # bytes staged per pwrite when packing a view with gaps


def _fill_packed(seg, src, strides, offset):
    """Copies ``src`` into a dense layout (every byte of ``[0, capacity)`` is one of its
    elements): numpy packs a slab of the outermost axis into a buffer, ``pwrite`` stores it."""
    real = [k for k, n in enumerate(src.shape) if n > 1]
    if not real:  # one element
        k, row = 0, src.itemsize
    else:
        k = max(real, key=lambda i: abs(strides[i]))
        row = abs(strides[k])
    n = src.shape[k] if src.ndim else 1
    step = max(1, _STAGE // row)
    for i in range(0, n, step):
        j = min(n, i + step)
        part = src[(slice(None),) * k + (slice(i, j),)] if src.ndim else src
        lo = i * row if strides[k] >= 0 or not src.ndim else (n - j) * row
        buf = np.empty((j - i) * row, dtype=np.uint8)
        first = offset + (i * strides[k] if src.ndim else 0)  # element (.., i, ..) in dst
        stage = np.ndarray(part.shape, src.dtype, buffer=buf, offset=first - lo,
                           strides=strides)
        np.copyto(stage, part, casting="no")
        _pwrite_all(seg.fd, buf, seg.data_offset + lo)


class _Span:
    """``n`` raw bytes at address ``addr`` as a numpy array (keeping ``owner`` alive)."""

    def __init__(self, addr, n, owner):
        self.__array_interface__ = {"data": (addr, True), "shape": (n,), "typestr": "|u1",
                                    "version": 3}
        self.owner = owner


def raw_span(addr, n, owner):
    """``n`` raw bytes at address ``addr``, of ``owner`` (kept alive), as a uint8 array."""
    return np.asarray(_Span(addr, n, owner))


def _pwrite_all(fd, raw, pos, new_pages=False):
    """Writes the uint8 array ``raw`` at ``pos`` with ``pwrite``; where the file has no pages
    yet (``new_pages``), with a helper thread when that is faster (:mod:`.fresh`)."""
    try:
        if new_pages:
            fresh.fill_fresh(fd, raw, pos)
        else:
            fresh.pwrite_all(fd, raw, pos)
    except OSError as e:
        raise system_error("writing a segment", e) from None


def fill(seg, src, strides, offset):
    """Copies ``src`` into the segment with the given layout.

    When the layout is the source's own and its span holds exactly its elements (contiguous
    in any axis order and direction), the span's bytes are written as they are, with
    ``pwrite`` (no zeroing pass, the fastest way into a tmpfs), helped for large spans by a
    second thread filling from the other end through a map (:mod:`.fresh`).
    Otherwise (broadcast, gaps) numpy copies element by element through a writable map.
    """
    if seg.huge_plan.huge:
        _fill_huge(seg, src, strides, offset)
        return
    how = fill_kind(src, strides, seg.capacity)
    if how == "span":
        lo_addr = view_span(src)[0]
        raw = raw_span(lo_addr, src.nbytes, src)
        _pwrite_all(seg.fd, raw, seg.data_offset + offset - (address(src) - lo_addr),
                    new_pages=True)
    elif how == "packed":
        _fill_packed(seg, src, strides, offset)
    else:
        _fill_mapped(seg, src, strides, offset, populate=False)


def fill_kind(src, strides, capacity):
    """How :func:`fill` copies ``src`` into ``capacity`` bytes laid out with ``strides``:
    ``"span"`` (the source's own bytes, one pwrite), ``"packed"`` (slabs packed by numpy, each
    pwritten; every byte written) or ``"mapped"`` (through a writable map)."""
    lo_addr, hi_addr = view_span(src)
    if strides == src.strides and hi_addr - lo_addr == src.nbytes:
        return "span"
    dense = capacity == src.nbytes
    if dense and all(st != 0 or n <= 1 for n, st in zip(src.shape, strides)):
        return "packed"
    return "mapped"


def _fill_huge(seg, src, strides, offset):
    """Huge segments are filled through maps, each huge page faulted in once: hugetlb files
    cannot be written with write(2), and write(2) into a THP memfd with
    ``shmem_enabled=advise`` would get base pages. A large span is filled by two threads from
    its two ends (the kernel zeroes each fresh huge page: that work is shared too)."""
    plan = seg.huge_plan
    if fill_kind(src, strides, seg.capacity) == "span":
        lo_addr = view_span(src)[0]
        raw = raw_span(lo_addr, src.nbytes, src)
        pos = seg.data_offset + offset - (address(src) - lo_addr)
        try:
            if fresh.fill_fresh_huge(seg.fd, raw, pos, plan.page_size, plan.thp):
                return
        except OSError as e:
            raise system_error("filling a huge-page segment", e) from None
    _fill_mapped(seg, src, strides, offset, populate=False)


def _fill_mapped(seg, src, strides, offset, populate):
    mm = map_segment(seg, writable=True, populate=populate)
    try:
        dst = np.ndarray(src.shape, src.dtype, buffer=mm, offset=seg.data_offset + offset,
                         strides=strides)
        # Broadcast axes are copied once: index 0 of them, on both sides.
        once = tuple(slice(0, 1) if n > 1 and s == 0 else slice(None)
                     for n, s in zip(src.shape, src.strides))
        np.copyto(dst[once], src[once], casting="no")
        del dst
    finally:
        mm.close()
