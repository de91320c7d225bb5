"""Python as a producer: :func:`share` any numpy array through a stridemap segment, zero copies
after one, or make an :func:`empty` one to fill in place; both give a :class:`SharedArray`.

A segment is a sealed memfd (``kind="memfd"``, the default: it travels as a file descriptor and
needs no deletion) or a named file (``kind="file"``) in this process's private folder below the
temp root (:mod:`.roots`). Both start with the segment header of SPEC §8, so consumers in any
language check them (O10). :func:`share` runs one way: plan the segment (:mod:`.plan`), make it
(:mod:`.make`), fill it (:mod:`.fill`), freeze it, map it and wrap it.

>>> import numpy as np, stridemap
>>> a = np.arange(12.0).reshape(3, 4)
>>> s = stridemap.share(a.T[::-1])            # any strides: copied once, layout kept
>>> bool((s == a.T[::-1]).all()), s.strides, s.flags.writeable
(True, (-8, 32), False)
>>> e = stridemap.export(s[1:, ::2])           # a view of it, for another process
>>> view = stridemap.open(e.record, fd=e.fd)
>>> e.close()
>>> view.tolist()
[[2.0, 10.0], [1.0, 9.0], [0.0, 8.0]]

Lifetime (SPEC §7, :mod:`.lifetime`). A memfd goes away with its last fd and mapping. A named
segment is held with ``flock(LOCK_SH)`` while any array or :class:`~.export.Export` of it lives
in this process; then it is unlinked under ``LOCK_EX | LOCK_NB`` (retried by a reaper thread
while a consumer still maps it). The pool folder is removed at normal exit; a folder left by a
killed producer is removed by :func:`stridemap.sweep` (run when a producer first makes its
folder) or by Rust's ``stridemap gc``.
"""

import logging
import os
import weakref
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..codec import errors
from . import fill, fresh, huge, lease, lifetime, recycle
from .backing import MAX_NDIM, Segment, address, backing, check_dtype, register, segment_of
from .make import Produced, map_segment, new_segment, raise_if_no_space
from .plan import KINDS_OF_SEGMENT, copy_layout

#: Where a segment lives: a sealed memfd, or a named file in this process's folder.
SegmentKind = Literal["memfd", "file"]
#: ``huge_pages=`` of :func:`share` and :func:`empty` (:mod:`.huge`).
HugePages = Literal["auto", "never", "require"]

log = logging.getLogger("stridemap")


class SharedArray(np.ndarray):
    """An ``np.ndarray`` backed by a stridemap segment (from :func:`share` or :func:`empty`).

    Views of it are SharedArrays too; results that are new arrays (``a + 1``, ``a.copy()``,
    fancy indexing) are plain ndarrays. Pickled as a plain ndarray (a copy) unless a pool's
    reducer (:mod:`stridemap.pools`) sends it as a descriptor.
    """

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        if return_scalar:  # numpy >= 2 only passes it
            arr = super().__array_wrap__(arr, context, return_scalar)
        else:
            arr = super().__array_wrap__(arr, context)
        if self is arr or type(self) is not SharedArray:
            return arr
        if return_scalar:
            return arr[()]
        return arr.view(np.ndarray) if backing(arr)[0] is None else arr

    def __getitem__(self, index):
        res = super().__getitem__(index)
        if type(res) is SharedArray and backing(res)[0] is None:
            return res.view(np.ndarray)
        return res

    def __reduce__(self):
        return np.asarray(self).copy().__reduce__()

    @property
    def segment(self) -> Segment | None:
        """The :class:`Segment` that backs this array (None for a copy)."""
        return segment_of(self)

    def freeze(self) -> "SharedArray":
        """Seals the segment (consumers may only read it: see ``Produced.freeze``, mode 0400
        for a file) and makes this array read-only; returns it. This array's own map stays
        writable underneath, so the memfd gets ``F_SEAL_FUTURE_WRITE``, not ``F_SEAL_WRITE``
        (``self.segment.write_sealed`` is False: Rust consumers read it through volatile
        views); :func:`stridemap.share` of it makes a write-sealed copy. Maps made before stay
        writable: views taken before in this process (let go of them first), and a writable
        map another process made of it (joblib's ``mmap_mode="r+"``; a pool hands it on
        read-only)."""
        seg = segment_of(self)
        if not isinstance(seg, Produced):
            raise errors.NotShareable("only an array from stridemap.empty() can be frozen")
        seg.freeze()
        self.flags.writeable = False
        return self


def _wrap(seg, mm, shape, dtype, strides, offset):
    """The SharedArray over ``mm``, registered so views of it find ``seg``. A segment that is
    recycled when its arrays are gone (:mod:`.recycle`) gets a new use (:mod:`.lease`)."""
    if seg._buf_addr is None:
        seg._buf_addr = address(np.frombuffer(mm, dtype=np.uint8)) + seg.data_offset
    register(mm, seg)
    if recycle.recyclable(seg):
        arr = lease.view(mm, seg._buf_addr + offset, shape, dtype, strides, writable=True,
                         on_gone=recycle.on_gone(seg, mm))
        return arr.view(SharedArray)
    return np.ndarray.__new__(SharedArray, shape, dtype, buffer=mm,
                              offset=seg.data_offset + offset, strides=strides)


def _check_array(a):
    check_dtype(a.dtype)
    if a.ndim > MAX_NDIM:
        raise errors.NotShareable(f"the array has {a.ndim} axes; a descriptor holds {MAX_NDIM}")


def share(array: npt.ArrayLike, *, kind: SegmentKind = "memfd",
          temp_folder: str | os.PathLike[str] | None = None, reuse: bool = True,
          huge_pages: HugePages = "auto") -> SharedArray:
    """A read-only copy of ``array`` in a frozen stridemap segment: a :class:`SharedArray`
    equal to it, with the same shape, dtype and (where possible) strides.

    The data is copied exactly once, whatever the strides: reversed and transposed views keep
    their layout, broadcast (stride-0) axes copy only the bytes they touch (a row broadcast to
    a million rows costs one row), views with gaps are packed. ``kind`` is ``"memfd"`` (sealed
    against shrinking, growing and writing; it travels as an fd) or ``"file"`` (a named file in
    this process's private folder below the temp root, or below ``temp_folder``).

    With ``reuse`` (the default), sharing the same array object again while it and the
    SharedArray of the first share live returns that SharedArray without copying (the
    SharedArray is not kept alive for this: hold it to reuse it): the key is the object's
    identity, never its
    contents, so share it again after changing it in place with ``reuse=False``. A
    SharedArray from a frozen segment is returned as it is.

    Raises :class:`~stridemap.NotShareable` for dtypes without a stridemap typestr
    (object, structured, strings, datetimes), :class:`~stridemap.NoSpace` when the
    space cannot be reserved, :class:`~stridemap.ProducerError` for other system
    failures (e.g. out of file descriptors); nothing is left behind.

    ``huge_pages`` ("auto", "never" or "require") chooses huge pages for the segment as
    :mod:`stridemap.segments.huge` says; "require" raises
    :class:`~stridemap.segments.huge.HugePagesUnavailable` when the system offers none.
    """
    if kind not in KINDS_OF_SEGMENT:
        raise ValueError(f"kind must be one of {KINDS_OF_SEGMENT}, not {kind!r}")
    if isinstance(array, SharedArray):
        seg = segment_of(array)
        if isinstance(seg, Produced) and seg.frozen and seg.kind == kind:
            return array
    source = array
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
        source = None
    try:
        _check_array(array)
    except errors.NotShareable as e:
        log.debug("stridemap: not shared: %s", e)
        raise
    key = (id(source), kind, temp_folder if temp_folder is None else os.fspath(temp_folder))
    if reuse and source is not None:
        st = lifetime.state()
        with st.lock:
            hit = st.reused.get(key)
        if hit is not None and hit[0]() is source:
            again = hit[1]()
            if again is not None:
                return again
    strides, offset, capacity = copy_layout(array.shape, array.strides, array.itemsize)
    # A fill that writes every byte of the segment with pwrite reserves its space as it goes
    # (ENOSPC there, before anything maps it); only a fill through a map needs fallocate.
    reserve = fill.fill_kind(array, strides, capacity) == "mapped"
    seg = new_segment(kind, capacity, temp_folder, huge_pages, reserve=reserve)
    try:
        if capacity:
            try:
                fill.fill(seg, array, strides, offset)
            except OSError as e:  # pwrite reserving the space found none
                raise_if_no_space(e, seg.folder or "memfd", seg.file_len)
                raise
        seg.freeze()
        mm = map_segment(seg, writable=False)
        shared = _wrap(seg, mm, array.shape, array.dtype, strides, offset)
    except BaseException:
        seg._finalizer()  # now, not when the traceback lets go of it: nothing left behind
        raise
    if reuse and source is not None:
        try:
            ref = weakref.ref(source)
        except TypeError:
            return shared
        st = lifetime.state()
        with st.lock:  # weakly: the cache never keeps a copy (its fd, its memory) alive
            st.reused[key] = (ref, weakref.ref(shared))
        weakref.finalize(source, _forget, key, ref).atexit = False
    return shared


def _base_pages(huge_pages, capacity):
    """Whether a new memfd segment of ``capacity`` bytes would be in base pages (recycled ones
    are); raises ValueError for an unknown ``huge_pages``."""
    huge.check_mode(huge_pages)
    if huge_pages != "auto" or capacity < huge.page_size():
        return huge_pages != "require"
    return huge.page_size_for("auto", "memfd", capacity) is None


def _forget(key, ref):
    st = lifetime.state()
    with st.lock:
        hit = st.reused.get(key)
        if hit is not None and hit[0] is ref:
            del st.reused[key]


def empty(shape: int | Sequence[int], dtype: npt.DTypeLike, *, order: Literal["C", "F"] = "C",
          kind: SegmentKind = "memfd", temp_folder: str | os.PathLike[str] | None = None,
          huge_pages: HugePages = "auto") -> SharedArray:
    """A writable :class:`SharedArray` to fill in place; then :meth:`~SharedArray.freeze` it,
    or :func:`export` views of it with ``mode="r+"`` for consumers that write their results
    into it, or hand it to another process as it is (a pool worker's result). Its contents are
    unspecified, as ``numpy.empty``'s: zero in a new segment, what an earlier array left in a
    recycled one.

    A memfd in base pages that is never frozen is recycled (:mod:`.recycle`): once no array of
    it lives in this process, the next ``empty()`` of a size that fits takes it again (no new
    memfd, no page faults), unless another process still maps it. Errors and ``huge_pages`` as
    for :func:`share`."""
    dt = np.dtype(dtype)
    check_dtype(dt)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    if len(shape) > MAX_NDIM or any(n < 0 for n in shape):
        raise ValueError(f"shape {shape}: at most {MAX_NDIM} axes, none negative")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    size = 1
    for n in shape:
        size *= n
    capacity = size * dt.itemsize
    if size == 0:
        strides = (0,) * len(shape)
    else:
        strides = [0] * len(shape)
        acc = dt.itemsize
        axes = range(len(shape)) if order == "F" else reversed(range(len(shape)))
        for k in axes:
            strides[k] = acc
            acc *= shape[k]
        strides = tuple(strides)
    if kind not in KINDS_OF_SEGMENT:
        raise ValueError(f"kind must be one of {KINDS_OF_SEGMENT}, not {kind!r}")
    again = recycle.take(capacity) if kind == "memfd" and _base_pages(huge_pages, capacity) \
        else None
    if again is not None:
        return _wrap(*again, shape, dt, strides, 0)
    seg = new_segment(kind, capacity, temp_folder, huge_pages)
    try:
        mm = map_segment(seg, writable=True)
        # Large segments: the pages' first touch (zeroing, mapping) shared by two threads now,
        # so that filling in place runs at memcpy speed (.fresh).
        fresh.populate(mm, seg.data_offset, seg.file_len - seg.data_offset)
        seg._recyclable = True
        return _wrap(seg, mm, shape, dt, strides, 0)
    except BaseException:
        seg._finalizer()
        raise


# --------------------------------------------------------------------------------------------
