"""Segment files for the tests (SPEC §8): a header, then 12 doubles at the data offset, and the
descriptors of them. Shared by the Python tests and the C reader's tests.
"""

import fcntl
import os
import threading

import numpy as np

from stridemap import Descriptor
from stridemap.segments.header import DATA_OFFSET, encode_header

SEG_ID = bytes(range(1, 17))
CAPACITY = 8192
VALUES = np.arange(12, dtype="<f8")


def write_segment(path, generation=2, segment_id=SEG_ID, capacity=CAPACITY, header=None):
    """A segment file at ``path``: ``header`` (default: a valid one) then VALUES at 4096."""
    if header is None:
        header = encode_header(segment_id, generation, capacity, owner_pid=os.getpid())
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(DATA_OFFSET + CAPACITY)
        f.seek(DATA_OFFSET)
        f.write(VALUES.tobytes())
    return path


def segment_memfd(generation=2, segment_id=SEG_ID):
    """The same in a memfd sealed against shrinking and growing."""
    fd = os.memfd_create("stridemap-segment", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, encode_header(segment_id, generation, CAPACITY))
    os.ftruncate(fd, DATA_OFFSET + CAPACITY)
    os.pwrite(fd, VALUES.tobytes(), DATA_OFFSET)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def segment_desc(path_or_fd, generation=2, segment_id=SEG_ID, **kw):
    """A 3x4 reversed-rows view of the 12 doubles, as a segment's producer describes it."""
    if isinstance(path_or_fd, int):
        st, where = os.fstat(path_or_fd), {"source": "fd"}
    else:
        st, where = os.stat(path_or_fd), {"path": str(path_or_fd)}
    fields = dict(dtype="<f8", shape=(3, 4), strides=(-32, 8), offset=64,
                  buffer_offset=DATA_OFFSET, buffer_len=96, file_len=DATA_OFFSET + CAPACITY,
                  device=st.st_dev, inode=st.st_ino, generation=generation,
                  segment_id=segment_id, **where)
    fields.update(kw)
    return Descriptor(**fields)


EXPECTED = VALUES.reshape(3, 4)[::-1]


def exclusive_free(path_or_fd):
    """Whether LOCK_EX | LOCK_NB succeeds on a new open file description of the file: whether
    no other open file description (a reader's) holds a lock on it."""
    where = path_or_fd if isinstance(path_or_fd, str) else f"/proc/self/fd/{path_or_fd}"
    fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


class Producer:
    """Holds LOCK_EX on its own open file description of a segment, as a producer does while
    it recycles or deletes it; ``release_after(s, then)`` lets go from a thread ``s`` seconds
    later, after calling ``then`` (e.g. rewriting the header)."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.thread = None

    def release_after(self, seconds, then=None):
        def run():
            threading.Event().wait(seconds)
            if then is not None:
                then(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_UN)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def close(self):
        if self.thread is not None:
            self.thread.join()
        os.close(self.fd)
