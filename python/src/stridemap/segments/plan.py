"""Planning a new segment, before anything is made: where a copy's bytes go (:func:`copy_layout`)
and what the segment is (:func:`plan_segment`: its kind, temp root and pool folder, huge page
mechanism, data offset and length).

The flow of :func:`stridemap.share` runs one way through this package: plan the segment
(here), make it (:mod:`.make`), fill it (:mod:`.fill`), freeze it, wrap it (:mod:`.share`).
"""

from dataclasses import dataclass

from . import huge, lifetime
from .header import DATA_OFFSET

KINDS_OF_SEGMENT = ("memfd", "file")


def copy_layout(shape, strides, itemsize):
    """Where a copy of an array with this layout goes in a new buffer: ``(strides, offset,
    buffer_len)``.

    If the array's span (SPEC §1.2) is no bigger than its distinct elements (contiguous in any
    order or direction, broadcast, overlapping windows), the span is kept as it is: the same
    strides, nothing materialized. Otherwise (a view with gaps) the axes are packed densely in
    the order of their stride magnitudes, keeping each stride's sign; broadcast axes keep
    stride 0.

    >>> copy_layout((3, 4), (-32, 8), 8)     # a reversed C array: kept as it is
    ((-32, 8), 64, 96)
    >>> copy_layout((2, 2), (64, 8), 8)      # every fourth row: packed
    ((16, 8), 0, 32)
    """
    ndim = len(shape)
    if 0 in shape:
        return (0,) * ndim, 0, 0
    lo = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + itemsize
    real = [k for k in range(ndim) if shape[k] > 1 and strides[k] != 0]
    dense = itemsize
    for k in real:
        dense *= shape[k]
    span = hi - lo
    if span <= dense:
        return (tuple(s if n > 1 or abs(s) <= span else 0 for n, s in zip(shape, strides)),
                -lo, span)
    new = [0] * ndim
    acc = itemsize
    for k in sorted(real, key=lambda k: (abs(strides[k]), -k)):
        new[k] = acc if strides[k] > 0 else -acc
        acc *= shape[k]
    offset = sum((shape[k] - 1) * -new[k] for k in real if new[k] < 0)
    return tuple(new), offset, acc


@dataclass(frozen=True)
class SegmentPlan:
    """What :func:`~.make.make` makes: a ``kind`` segment of ``capacity`` data bytes (whole huge
    pages for a huge one) at ``data_offset`` in a file of ``file_len`` bytes, with the huge page
    mechanism ``pages``; a named one in ``folder`` (this process's pool folder). ``reserve``:
    its space is reserved with ``posix_fallocate`` when made (else the fill writes every byte)."""

    kind: str
    capacity: int
    data_offset: int
    file_len: int
    pages: huge.Plan
    folder: object = None
    reserve: bool = True
    memory: bool = True

    # ``memory``: its pages are memory (a memfd, a file in a tmpfs), which the admission check
    # (:mod:`.admit`) weighs before it is made.

    @property
    def where(self):
        """Where its bytes live, for messages: ``"memfd"`` or the pool folder's path."""
        return "memfd" if self.folder is None else self.folder.path


def plan_segment(kind, capacity, temp_folder=None, huge_pages="auto", *, reserve=True):
    """The plan of a new segment of ``capacity`` data bytes. A named one's temp root is chosen
    and this process's pool folder there made (its root swept the first time); huge pages as
    :mod:`.huge` says. Raises ValueError for an unknown ``kind`` or ``huge_pages``,
    :class:`~.huge.HugePagesUnavailable` for "require" without huge pages."""
    if kind not in KINDS_OF_SEGMENT:
        raise ValueError(f"kind must be one of {KINDS_OF_SEGMENT}, not {kind!r}")
    page = huge.page_size_for(huge_pages, kind, capacity, temp_folder)
    if page:
        capacity = -(-max(capacity, 1) // page) * page
    data_offset = page or DATA_OFFSET
    file_len = data_offset + capacity
    folder = lifetime.folder_for(file_len, temp_folder) if kind == "file" else None
    pages = huge.BASE_PLAN
    if page:
        pages = huge.choose(huge_pages, kind, capacity, folder.path if folder else None)
    memory = folder is None or _in_tmpfs(folder.path)
    return SegmentPlan(kind, capacity, data_offset, file_len, pages, folder, reserve, memory)


_tmpfs_folders = {}  # pool folder path -> whether it is in a tmpfs (a folder stays where it is)


def _in_tmpfs(path):
    hit = _tmpfs_folders.get(path)
    if hit is None:
        mount = huge.mount_of(path)
        hit = _tmpfs_folders[path] = mount is not None and mount[1] == "tmpfs"
    return hit
