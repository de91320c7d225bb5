"""Handing a view on without a copy: its descriptor (:func:`describe_view`) and, for a memfd, a
new open file description for one receiver (:func:`export`, SPEC §7.4).
"""

import os

import numpy as np

from ..codec import errors
from ..codec.descriptor import Mode
from . import header
from .backing import Segment, segment_of


# Handing views on


class Export:
    """What a receiver needs for one view: ``record`` (the 1024-byte descriptor), ``fd`` (for a
    memfd: a new open file description made for this receiver, close-on-exec, owned by the
    caller, which passes it beside the record and closes it; None for a file opened by path)
    and ``segment``, which keeps the segment (and a named file) alive while this lives. A
    memfd segment's ``fd`` carries the receiver's shared lock (SPEC §7), so the producer
    cannot recycle the segment while the fd or a mapping made from it lives anywhere."""

    __slots__ = ("record", "fd", "segment", "__weakref__")

    def __init__(self, record: bytes, fd: int | None, segment: Segment) -> None:
        self.record = record
        self.fd = fd
        self.segment = segment

    def close(self) -> None:
        """Closes ``fd`` if it is still here (take it with ``detach_fd`` to keep it)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def detach_fd(self) -> int | None:
        """Returns ``fd`` and forgets it (the caller closes it)."""
        fd, self.fd = self.fd, None
        return fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<stridemap Export fd={self.fd} segment={self.segment!r}>"


def describe_view(view, mode="r"):
    """The record of a view with a backing segment (see :func:`export`), without an fd."""
    seg = segment_of(view)
    if seg is None:
        raise errors.NotShareable(
            "the array is not a view of a stridemap segment, an open() mapping or an np.memmap: "
            "stridemap.share() it first"
        )
    return seg, seg.describe(view, mode)


def export(view: np.ndarray, *, mode: Mode = "r") -> Export:
    """The descriptor of ``view`` (any view of an array from :func:`share`, :func:`empty`,
    :func:`stridemap.open`, or of an ``np.memmap``) and, for a memfd, a new fd for one
    receiver: an :class:`Export`. No data is copied.

    ``mode`` is what the receiver may map with: ``"r"``, ``"c"``, or ``"r+"`` for a writable
    view of a segment that is not frozen. Raises :class:`~stridemap.NotShareable` for
    any other array.
    """
    seg, record = describe_view(view, mode)
    fd = seg.new_fd(mode)
    if fd is not None and seg.generation:
        # The receiver's lock of SPEC §7, taken for it now on the open file description it
        # gets: from here until it lets go of its fd and mapping, the producer cannot recycle
        # the segment (an empty() array dropped after the export, :mod:`.recycle`), so the
        # descriptor stays good until it is opened.
        try:
            header.lock_shared(fd, wait=True)
        except BaseException:
            os.close(fd)
            raise
    return Export(record, fd, seg)
