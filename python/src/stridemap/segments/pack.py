"""Many arrays in one segment: :func:`share_many` (issue #21, the pattern inference servers use).

A task that carries a dict or a list of 1,000 small arrays would otherwise cost 1,000 segments,
1,000 fds and 1,000 handoffs. :func:`share_many` copies them all, once each, into one frozen
segment (each at a 64-byte aligned offset, in its own layout, as :func:`~stridemap.share` keeps
it, written with ``pwritev`` a thousand arrays a call, or for huge pages through one writable
map let go of before the segment is sealed ``F_SEAL_WRITE``) and returns the same kind of container of read-only views of it. Its pickle, through a
pool (:mod:`stridemap.pools`), is one descriptor and one fd for the whole segment, plus a
manifest of each array's key, dtype, shape, strides and offset: the receiver maps the segment
once and builds every view from the manifest (each checked by numpy against the mapped buffer).

>>> import numpy as np, stridemap
>>> parts = stridemap.share_many({"w": np.ones((2, 3)), "b": np.arange(3, dtype="i4")})
>>> type(parts).__name__, parts["b"].tolist(), parts["w"].flags.writeable
('PackedDict', [0, 1, 2], False)
>>> stridemap.segment_of(parts["w"]) is stridemap.segment_of(parts["b"])
True
"""

import errno
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..codec import errors
from . import fill, huge
from .backing import MAX_NDIM, address, check_dtype, segment_of, system_error, view_span
from .make import map_segment, new_segment, raise_if_no_space
from .plan import KINDS_OF_SEGMENT, copy_layout
from .share import SharedArray, _wrap

ALIGN = 64


class PackedDict(dict):
    """A dict of read-only :class:`~stridemap.SharedArray` views of one segment, from
    :func:`share_many`; a pool pickles it as one descriptor plus a manifest."""

    base = None  # the whole segment's data, a uint8 SharedArray

    def __reduce__(self):
        from ..transport.manifest import reduce_packed

        return reduce_packed(self, list(self.items()))


class PackedList(list):
    """A list of read-only :class:`~stridemap.SharedArray` views of one segment, from
    :func:`share_many`; a pool pickles it as one descriptor plus a manifest."""

    base = None

    def __reduce__(self):
        from ..transport.manifest import reduce_packed

        return reduce_packed(self, list(enumerate(self)))


def share_many(arrays: Mapping[object, object] | Sequence[object], *, kind: str = "memfd",
               temp_folder: str | os.PathLike[str] | None = None,
               huge_pages: str = "auto") -> PackedDict | PackedList:
    """Copies every array of ``arrays`` (a mapping, or a sequence) into one new frozen segment
    and returns a :class:`PackedDict` (for a mapping, same keys) or :class:`PackedList` of
    read-only views of it, each equal to its source with the same shape, dtype and (where
    possible) strides. ``kind``, ``temp_folder`` and ``huge_pages`` as for
    :func:`~stridemap.share`.

    Raises :class:`~stridemap.NotShareable` for an array whose dtype has no stridemap
    typestr, :class:`~stridemap.NoSpace` when the space cannot be reserved,
    :class:`~stridemap.ProducerError` for other system failures; nothing is left behind.
    """
    if kind not in KINDS_OF_SEGMENT:
        raise ValueError(f"kind must be one of {KINDS_OF_SEGMENT}, not {kind!r}")
    if isinstance(arrays, Mapping):
        keys, values, out = list(arrays.keys()), list(arrays.values()), PackedDict()
    elif isinstance(arrays, Sequence) and not isinstance(arrays, (str, bytes)):
        keys, values, out = list(range(len(arrays))), list(arrays), PackedList()
    else:
        raise TypeError(f"share_many takes a mapping or a sequence of arrays, not "
                        f"{type(arrays).__name__}")
    slots, end = [], 0
    for key, value in zip(keys, values):
        src = np.asarray(value)
        check_dtype(src.dtype, f"the array under {key!r}")
        if src.ndim > MAX_NDIM:
            raise errors.NotShareable(
                f"the array under {key!r} has {src.ndim} axes; a descriptor holds {MAX_NDIM}")
        if not (src.flags.c_contiguous or src.flags.f_contiguous) and \
                fill.fill_kind(src, src.strides, src.nbytes) != "span":
            src = np.ascontiguousarray(src)  # gaps or broadcasts: its elements, packed
        strides, offset, capacity = copy_layout(src.shape, src.strides, src.itemsize)
        start = -(-end // ALIGN) * ALIGN
        slots.append((src, strides, start + offset))
        end = start + capacity
    # Base pages are written with pwritev (every byte of the data area: that reserves the
    # space, ENOSPC before anything maps it); huge pages through a map, reserved first.
    huge_planned = bool(huge.page_size_for(huge_pages, kind, max(end, 1), temp_folder))
    seg = new_segment(kind, max(end, 1), temp_folder, huge_pages, reserve=huge_planned)
    try:
        if seg.huge_plan.huge:
            _copy_mapped(seg, slots)
        else:
            try:
                _write_all(seg.fd, seg.data_offset, slots)
            except OSError as e:  # pwritev reserving the space found none
                raise_if_no_space(e, seg.folder or "memfd", seg.file_len)
                raise system_error("writing the arrays into their segment", e) from None
        seg.freeze()
        mm = map_segment(seg, writable=False)
        out.base = _wrap(seg, mm, (max(end, 1),), np.dtype(np.uint8), (1,), 0)
        views = [_wrap(seg, mm, src.shape, src.dtype, strides, offset)
                 for src, strides, offset in slots]
    except BaseException:
        seg._finalizer()
        raise
    if isinstance(out, PackedDict):
        out.update(zip(keys, views))
    else:
        out.extend(views)
    return out


def _copy_mapped(seg, slots):
    """Every array copied through one writable map, let go of before the seal: the kernel
    seals F_SEAL_WRITE only when no writable map of the memfd is left, and only then may
    consumers lend references to its bytes."""
    wmm = map_segment(seg, writable=True)
    try:
        for src, strides, offset in slots:
            if src.nbytes:
                dst = np.ndarray(src.shape, src.dtype, buffer=wmm,
                                 offset=seg.data_offset + offset, strides=strides)
                dst[...] = src
                del dst
    finally:
        wmm.close()


def _write_all(fd, data_offset, slots):
    """Every array's bytes written at its place with ``pwritev`` (up to ``IOV_MAX`` buffers a
    call), zeros between them: every byte of the data area up to the last array, in a few
    system calls and without a page fault (into fresh tmpfs pages, half the time of copying
    through a map on this machine: 28 ms against 61 ms for 64 MiB in 1,000 arrays). Each
    array is a span here (``share_many`` packed any other), kept in its own layout: its
    bytes from its lowest address go where its layout puts them."""
    zeros = bytes(ALIGN)
    bufs, pos = [], 0
    for src, _, offset in slots:
        if not src.nbytes:
            continue
        if src.flags.c_contiguous or src.flags.f_contiguous:  # element 0 at its lowest byte
            start, raw = offset, memoryview(src if src.flags.c_contiguous else src.T)
        else:
            lo_addr = view_span(src)[0]
            start = offset - (address(src) - lo_addr)
            raw = memoryview(fill.raw_span(lo_addr, src.nbytes, src))
        if start > pos:
            bufs.append(memoryview(zeros if start - pos <= ALIGN else bytes(start - pos))
                        [:start - pos])
        bufs.append(raw.cast("B"))
        pos = start + src.nbytes
    at, i = data_offset, 0
    while i < len(bufs):
        n = os.pwritev(fd, bufs[i:i + _IOV_MAX], at)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        at += n
        while n:  # a short write ends inside a buffer: the rest of it goes first next time
            if n >= len(bufs[i]):
                n -= len(bufs[i])
                i += 1
            else:
                bufs[i], n = bufs[i][n:], 0


_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def views_of(base: SharedArray, manifest: list) -> list:
    """``[(key, view)]`` of ``base`` (a received segment's data) as ``manifest`` says:
    ``(key, typestr, shape, strides, offset)`` each; numpy refuses a view that does not lie in
    the buffer (ValueError)."""
    out = []
    for key, typestr, shape, strides, offset in manifest:
        view = np.ndarray.__new__(SharedArray, tuple(shape), np.dtype(typestr), buffer=base,
                                  offset=offset, strides=tuple(strides))
        out.append((key, view))
    return out


def manifest_of(base: SharedArray, items: list) -> list | None:
    """The manifest of ``items`` (``[(key, view)]``), each a view of ``base``'s segment as it
    is now; None when one is not (it was replaced by another array): then the container is
    pickled as it is, one array at a time."""
    seg = segment_of(base)
    start = base.__array_interface__["data"][0]
    manifest = []
    for key, view in items:
        if not isinstance(view, np.ndarray) or segment_of(view) is not seg:
            return None
        manifest.append((key, view.dtype.str, view.shape, view.strides,
                         view.__array_interface__["data"][0] - start))
    return manifest
