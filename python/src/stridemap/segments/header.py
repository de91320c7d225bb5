"""Segments (SPEC §7, §8): the shared lock a reader holds while it maps one, and the 64-byte
segment header that rule O10 checks against the descriptor.

A descriptor with ``generation`` != 0 names a segment: a file that starts with a header naming
the segment (``segment_id``) and its current use (``generation``). Its producer deletes or
recycles it only when it can lock it exclusively, so a reader takes ``flock(LOCK_SH)`` before it
reads the header and keeps it as long as it maps the file. The lock belongs to the open file
description: it lasts while any fd of it is open or any mapping made from it lives (a numpy
view's ``mmap.mmap`` holds both: a duplicate of the fd, and the mapping).

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "seg")
>>> with open(path, "wb") as f:
...     _ = f.write(encode_header(bytes(range(16)), generation=3, capacity=4096))
...     _ = f.truncate(DATA_OFFSET + 4096)
>>> fd = os.open(path, os.O_RDONLY)
>>> lock_shared(fd, wait=True)
True
>>> h = read_header(fd)
>>> h.generation, h.data_offset, h.capacity
(3, 4096, 4096)
>>> os.close(fd)
"""

import errno
import fcntl
import os
import struct
import time
from dataclasses import dataclass

from ..codec import errors
from ..codec.crc import replaced
from ..codec.memo import NearMemo
from ..codec.record import crc32c

MAGIC = b"\x89SMS\r\n\x1a\n"
HEADER_SIZE = 64
DATA_OFFSET = 4096  # where stridemap's producers put the data: a page of its own
# SPEC §7: how long a reader retries LOCK_SH | LOCK_NB; the producer holds LOCK_EX only while it
# rewrites a header (or deletes the file).
LOCK_PATIENCE = 2.0

_HEADER = struct.Struct("<8sHHI16sQQI8sI")
# The identity: segment id (16-31) and generation (32-39).
_IDENTITY_AT, _GENERATION_AT, _IDENTITY_END = 16, 32, 40
assert _HEADER.size == HEADER_SIZE


@dataclass(frozen=True)
class SegmentHeader:
    """A valid segment header (SPEC §8)."""

    segment_id: bytes
    generation: int
    data_offset: int
    capacity: int
    owner_pid: int
    version: tuple = (1, 0)

    def matches(self, desc):
        """Whether ``desc`` was made for this use of this segment: the same segment id (not all
        zero) and generation, and its buffer inside the data area."""
        return (
            desc.segment_id == self.segment_id
            and desc.segment_id != bytes(16)
            and desc.generation == self.generation
            and desc.buffer_offset >= self.data_offset
            and desc.buffer_offset + desc.buffer_len <= self.data_offset + self.capacity
        )


def encode_header(segment_id, generation, capacity, owner_pid=0, data_offset=DATA_OFFSET):
    """The 64 bytes of a segment header (for tests and producers that make segments)."""
    body = _HEADER.pack(MAGIC, 1, 0, data_offset, bytes(segment_id), generation, capacity,
                        owner_pid, bytes(8), 0)[:60]
    return body + crc32c(body).to_bytes(4, "little")


def with_generation(head, generation):
    """The valid header ``head`` (its 64 bytes) naming ``generation`` instead of its own, its
    checksum patched (eight lookups, :func:`..codec.crc.patch`): what :func:`encode_header`
    gives for the same segment at that generation.

    >>> h = encode_header(bytes(range(16)), 1, 4096, owner_pid=7)
    >>> with_generation(h, 2) == encode_header(bytes(range(16)), 2, 4096, owner_pid=7)
    True
    """
    return replaced(head, _GENERATION_AT, generation.to_bytes(8, "little"), 60)


# Valid headers decoded before, and headers that differ from one of them only in the segment id
# and generation (bytes 16-39) and checksum: the header of a segment recycled in place, or of
# another segment of the same producer and size (a receiver that maps it skips the sixty-byte
# checksum loop; the generation is checked against its rule, >= 1, here).
_memo = NearMemo(span=(_IDENTITY_AT, _IDENTITY_END), crc_at=60)


def decode_header(buf):
    """The header in the first 64 bytes of ``buf``, or ``None`` if they are not a valid one:
    magic, major version 1, checksum, ``data_offset`` >= 64 and ``generation`` >= 1 (SPEC §8)."""
    if len(buf) < HEADER_SIZE:
        return None
    key = bytes(buf[:HEADER_SIZE])
    header = _memo.get(key)
    if header is not None:
        return header
    t = _memo.near(key)
    generation = int.from_bytes(key[_GENERATION_AT:_IDENTITY_END], "little")
    if t is not None and generation >= 1:  # a SegmentHeader made directly: replace() is slower
        return SegmentHeader(key[_IDENTITY_AT:_GENERATION_AT], generation, t.data_offset,
                             t.capacity, t.owner_pid, t.version)
    header = _decode_header(key)
    if header is not None:
        _memo.put(key, header)
    return header


def _decode_header(buf):
    magic, major, minor, data_offset, seg_id, generation, capacity, pid, _, crc = (
        _HEADER.unpack_from(buf)
    )
    if magic != MAGIC or major != 1 or crc != crc32c(buf[:60]):
        return None
    if data_offset < HEADER_SIZE or generation < 1:
        return None
    return SegmentHeader(seg_id, generation, data_offset, capacity, pid, (major, minor))


def read_header(fd):
    """The header at offset 0 of the file ``fd``, or ``None`` when there is no valid one."""
    buf = b""
    while len(buf) < HEADER_SIZE:
        more = os.pread(fd, HEADER_SIZE - len(buf), len(buf))
        if not more:
            return None
        buf += more
    return decode_header(buf)


def lock_shared(fd, *, wait):
    """``flock(LOCK_SH)`` on ``fd``'s open file description (SPEC §7.1); whether it got it.

    With ``wait``, retries ``LOCK_SH | LOCK_NB`` for up to :data:`LOCK_PATIENCE` seconds, then
    raises :class:`~stridemap.SegmentBusy` (another ``flock`` failure is raised as the
    ``OSError`` it is). Without, tries once and never fails: a file that is not a segment is
    locked if that is possible at once, and opened either way.
    """
    deadline = time.monotonic() + LOCK_PATIENCE
    pause = 50e-6
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # EINTR is retried by Python
            return True
        except BlockingIOError:
            if not wait:
                return False
        except OSError:
            if not wait:
                return False
            raise
        if time.monotonic() >= deadline:
            raise errors.SegmentBusy(
                f"the segment stayed locked by its producer (being recycled or deleted) for "
                f"{LOCK_PATIENCE:g} s; ask the producer for a fresh descriptor",
                errno.EWOULDBLOCK,
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def enter(fd, desc):
    """SPEC §7 and O10 for an opened file: lock it shared, then check its header.

    A file that is not a segment (``generation`` 0) gets the lock if it is free and is never
    waited for. A segment is waited for (then :class:`~stridemap.SegmentBusy`), and its
    header must be valid and match ``desc``, else :class:`~stridemap.StaleSegment`
    (O10). The lock stays on ``fd``'s open file description: whatever maps the file next keeps
    it.
    """
    if desc.generation == 0:
        lock_shared(fd, wait=False)
        return
    lock_shared(fd, wait=True)
    try:
        header = read_header(fd)
    except OSError as e:
        raise errors.StaleSegment(
            f"O10: cannot read the segment header: {e.strerror}", e.errno
        ) from None
    if header is None:
        raise errors.StaleSegment("O10: the file has no valid segment header")
    if not header.matches(desc):
        if desc.segment_id == bytes(16):
            why = "the descriptor names no segment (segment_id all zero): it matches no header"
        elif header.segment_id != desc.segment_id:
            why = (f"the file is segment {header.segment_id.hex()}, the descriptor names "
                   f"{desc.segment_id.hex()}")
        elif header.generation != desc.generation:
            why = (f"stale descriptor: the segment now holds generation {header.generation}, "
                   f"the descriptor was made for generation {desc.generation}; ask the "
                   "producer again")
        else:
            why = (f"the buffer [{desc.buffer_offset}, {desc.buffer_offset + desc.buffer_len}) "
                   f"is not inside the data area [{header.data_offset}, "
                   f"{header.data_offset + header.capacity})")
        raise errors.StaleSegment(f"O10: {why}", found=header)
