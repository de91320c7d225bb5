"""Many arrays in one segment: :func:`share_many` (issue #21, the pattern inference servers use).

A task that carries a dict or a list of 1,000 small arrays would otherwise cost 1,000 segments,
1,000 fds and 1,000 handoffs. :func:`share_many` copies them all, once each, into one frozen
segment (each at a 64-byte aligned offset, in its own layout, as :func:`~stridemap.share` keeps
it, through one writable map let go of before the segment is sealed ``F_SEAL_WRITE``) and
returns the same kind of container of read-only views of it. Its pickle, through a
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

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..codec import errors
from . import fill
from .backing import MAX_NDIM, check_dtype, segment_of
from .make import map_segment, new_segment
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
        if fill.fill_kind(src, src.strides, src.nbytes) != "span":
            src = np.ascontiguousarray(src)  # gaps or broadcasts: its elements, packed
        strides, offset, capacity = copy_layout(src.shape, src.strides, src.itemsize)
        start = -(-end // ALIGN) * ALIGN
        slots.append((src, strides, start + offset))
        end = start + capacity
    seg = new_segment(kind, max(end, 1), temp_folder, huge_pages, reserve=True)
    try:
        # One writable map for every copy (a write(2) each would cost a system call per array),
        # let go of before the seal: the kernel seals F_SEAL_WRITE only when no writable map
        # of the memfd is left, and only then may consumers lend references to its bytes.
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
