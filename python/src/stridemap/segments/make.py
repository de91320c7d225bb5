"""Making a planned segment (:class:`~.plan.SegmentPlan`): a memfd sealed against shrinking and
growing, or a named file in this process's pool folder; the header of SPEC §8 written, its
space reserved, the producer's shared lock taken (SPEC §7.2). :meth:`Produced.freeze` seals it
for consumers that may only read; :func:`map_segment` maps it.
"""

import errno
import fcntl
import logging
import mmap
import os
import uuid
import weakref

import numpy as np

from ..codec import errors
from ..codec.descriptor import Mode
from . import admit, huge, lifetime, roots
from .backing import Segment, record_of_view, reopen, system_error
from .header import encode_header
from .mapfd import map_fd
from .plan import plan_segment

log = logging.getLogger("stridemap")

# Seals (linux/fcntl.h); fcntl lacks F_SEAL_FUTURE_WRITE before Python 3.13.
F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
F_SEAL_SEAL = getattr(fcntl, "F_SEAL_SEAL", 0x1)
F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x2)
F_SEAL_GROW = getattr(fcntl, "F_SEAL_GROW", 0x4)
F_SEAL_WRITE = getattr(fcntl, "F_SEAL_WRITE", 0x8)
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x10)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class Produced(Segment):
    """A segment this process made (memfd or named file)."""

    def __init__(self, plan, fd, seg_id, name=None):
        folder = plan.folder
        self.kind = plan.kind
        self.capacity = plan.capacity
        self.data_offset = plan.data_offset  # where the data starts in the file (SPEC §8)
        self.file_len = plan.file_len
        self.huge_plan = plan.pages  # the huge pages mechanism (.huge)
        self.segment_id = seg_id
        self.generation = 1
        self.frozen = False
        self.write_sealed = False  # F_SEAL_WRITE: no writer at all, in any process (freeze)
        self.folder = folder.path if folder is not None else None
        self.path = os.path.join(folder.path, name) if folder is not None else None
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self._fs = lifetime.FileState(fd, plan.kind, name, folder)
        self._buf_addr = None
        self._recyclable = False  # empty() made it: recycled once its arrays go (.recycle)
        # Records of its views handed to pool processes, by view: kept by
        # transport.handoff (described once, a later generation's patched).
        self.view_records = {}
        self._finalizer = weakref.finalize(self, lifetime.release, self._fs)
        self._finalizer.atexit = False  # at exit the folder goes as a whole (_at_exit)

    @property
    def fd(self):
        """The producer's own fd of the segment (holds its shared lock); do not close it."""
        return self._fs.fd

    def describe(self, view: np.ndarray, mode: Mode = "r") -> bytes:
        self._grant(view, mode)
        return record_of_view(
            view, buf_addr=self._buf_addr, buffer_offset=self.data_offset,
            buffer_len=self.capacity, file_len=self.file_len, device=self.identity[0],
            inode=self.identity[1], generation=self.generation, segment_id=self.segment_id,
            source="fd" if self.kind == "memfd" else "path", path=self.path, mode=mode,
        )

    def new_fd(self, mode: Mode = "r") -> int | None:
        if self.kind != "memfd":
            return None
        return reopen(self._fs.fd, mode)

    def freeze(self):
        """Consumers may only read from now on.

        A memfd with no writable map of it left in this process (every :func:`stridemap.share`)
        is sealed for good, ``F_SEAL_WRITE | F_SEAL_SEAL``: the kernel then refuses every
        writer, so consumers may lend references to its bytes (SPEC §9; Rust's ``view()``).
        While a writable map lives (the array of :func:`stridemap.empty` itself), the kernel
        refuses ``F_SEAL_WRITE``: the memfd is sealed ``F_SEAL_FUTURE_WRITE`` (no new writer, in
        any process, but that map stays writable), :attr:`write_sealed` stays False, a line
        on the ``stridemap`` logger says so, and Rust consumers read it through volatile views.
        A named file is made mode 0400 (which root ignores: never write-sealed)."""
        if self.frozen:
            return
        fd = self._fs.fd
        try:
            if self.kind == "memfd":
                try:
                    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL)
                    self.write_sealed = True
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    # No F_SEAL_SEAL: nothing else to seal now, and a later F_SEAL_WRITE stays
                    # possible for whoever holds the fd once the writable map is gone.
                    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)
                    log.info("stridemap: segment %s is frozen against new writers only: a "
                             "writable map of it lives in this process (F_SEAL_WRITE refused)",
                             self.segment_id.hex())
            else:
                os.fchmod(fd, 0o400)
        except OSError as e:
            raise system_error(f"freezing a {self.kind} segment", e) from None
        self.frozen = True

    def __repr__(self):
        where = self.path or "memfd"
        return (f"<stridemap segment {self.segment_id.hex()} ({where}, {self.capacity} bytes, "
                f"{'frozen' if self.frozen else 'writable'})>")



def new_segment(kind, capacity, temp_folder=None, huge_pages="auto", *, reserve=True):
    """A new segment of ``capacity`` data bytes: planned (:func:`~.plan.plan_segment`), then
    made (:func:`make`). Under ``huge_pages="auto"``, a huge segment that cannot be made after
    all (another process took the free hugetlb pages, a huge tmpfs is full) is planned and made
    again in base pages, as the Rust pool does."""
    plan = plan_segment(kind, capacity, temp_folder, huge_pages, reserve=reserve)
    try:
        return make(plan)
    except errors.NoSpace as e:
        if huge_pages != "auto" or not plan.pages.huge:
            raise
        log.debug("stridemap: huge pages failed (%s); base pages", e)
    return make(plan_segment(kind, capacity, temp_folder, "never", reserve=reserve))


def make(plan):
    """The segment ``plan`` says, header written, producer's shared lock taken. With
    ``plan.reserve`` its space is reserved with ``posix_fallocate`` (pages zeroed now, so that
    a full tmpfs fails here and never as a SIGBUS in a map); without it the caller reserves the
    space by writing every byte with ``pwrite`` before anything maps it (:func:`stridemap.share`),
    which spares the kernel a zeroing pass. On any error nothing is left behind."""
    if lifetime.state().pending:
        lifetime.reap()
    if plan.memory and not plan.pages.hugetlb:  # hugetlb pages are reserved apart
        admit.check(plan.file_len, plan.where)
    seg_id = uuid.uuid4().bytes
    kind, pages, folder, where = plan.kind, plan.pages, plan.folder, plan.where
    name = None
    if kind == "memfd":
        try:
            fd = os.memfd_create(f"stridemap-{seg_id.hex()}",
                                 os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | pages.memfd_flags)
        except OSError as e:
            raise system_error("creating a memfd", e) from None
    else:
        name = f"seg-{seg_id.hex()}"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=folder.fd)
        except OSError as e:
            raise system_error(f"creating a segment in {where}", e) from None
    try:
        header = encode_header(seg_id, generation=1, capacity=plan.capacity,
                               owner_pid=os.getpid(), data_offset=plan.data_offset)
        if pages.huge:
            huge.prepare(fd, pages, header, plan.file_len, where, plan.reserve)
        else:
            if os.pwrite(fd, header, 0) != len(header):
                raise OSError(errno.EIO, "short write of the segment header")
            try:
                if plan.reserve:
                    os.posix_fallocate(fd, 0, plan.file_len)  # a full tmpfs fails here
                else:
                    os.ftruncate(fd, plan.file_len)  # sized before the seals; pwrite fills it
            except OSError as e:
                raise_if_no_space(e, where, plan.file_len)
                raise
        if kind == "memfd":
            fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
        fcntl.flock(fd, fcntl.LOCK_SH)  # SPEC §7.2, while this process uses it
        seg = Produced(plan, fd, seg_id, name)
        log.debug("stridemap: new %s segment %s (%d bytes) in %s", kind, seg_id.hex(),
                  plan.capacity, huge._NAMES[pages.backing])
        return seg
    except BaseException as e:
        os.close(fd)
        if kind == "file":
            try:
                os.unlink(name, dir_fd=folder.fd)
            except OSError:
                pass
        if isinstance(e, OSError) and not isinstance(e, errors.StridemapError):
            raise system_error(f"making a {plan.capacity}-byte segment in {where}", e) from None
        raise


def raise_if_no_space(e, where, file_len):
    """Raises :class:`~stridemap.NoSpace` (naming ``where``, the bytes needed and
    available) when ``e`` says the filesystem or memory is full, or the file size limit
    (``RLIMIT_FSIZE``) refuses the segment."""
    if e.errno == errno.EFBIG:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        raise errors.NoSpace(
            f"no room for a {file_len}-byte stridemap segment in {where}: this process's file "
            f"size limit (RLIMIT_FSIZE, `ulimit -f`) is {soft} bytes; raise it, or share less",
            where, file_len, max(soft, 0), "RLIMIT_FSIZE",
        ) from None
    if e.errno in (errno.ENOSPC, errno.ENOMEM):
        try:
            available = roots.space(where)[0] if where != "memfd" else 0
        except OSError:
            available = 0
        raise roots.no_space(where, file_len, available) from None


def map_segment(seg, writable, populate=False):
    """Maps the whole segment file; returns the mmap."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
    try:
        mm = map_fd(seg.fd, seg.file_len, flags=flags, prot=prot)
    except OSError as e:
        raise system_error(f"mapping a {seg.file_len}-byte segment", e) from None
    huge.advise(mm, seg.huge_plan)
    return mm
