"""What backs an array: a segment this process made, a mapping ``open()`` made, or the file of
an ``np.memmap`` (:func:`segment_of`), and the record of a view of it (SPEC §9).

Every mapping this process makes of a segment, as producer or consumer, is registered here with
its :class:`Segment`, so that any view of it can be described again and handed on.
"""

import errno
import logging
import mmap
import os
import weakref

import numpy as np

from .. import forksafe
from ..codec import errors
from ..codec.descriptor import Descriptor, Mode
from ..codec.record import encode, with_identity
from ..codec.rules import KINDS

log = logging.getLogger("stridemap")

MAX_NDIM = 32


class Segment:
    """What backs a shared array, as :func:`segment_of` finds it.

    ``kind`` is ``"memfd"``, ``"file"`` (a named segment) or ``"memmap"`` (the file of an
    ``np.memmap``); ``path`` is the file's path (None for a memfd), ``folder`` the pool folder
    of a named segment this process made (a consumer's allowed root), ``frozen`` whether
    consumers may only read it, ``private`` whether this process maps it copy-on-write (its
    views hold changes no other process sees: they cannot be described, only copied).
    :meth:`describe` writes the descriptor of a view of it,
    :meth:`new_fd` opens a new open file description of a memfd for one receiver.
    """

    kind = None
    path = None
    folder = None
    frozen = True
    private = False
    generation = 0
    segment_id = bytes(16)

    def describe(self, view: np.ndarray, mode: Mode = "r") -> bytes:
        """The fixed record (1024 bytes) of ``view``, which must lie in this segment."""
        raise NotImplementedError

    def new_fd(self, mode: Mode = "r") -> int | None:
        """A new open file description (close-on-exec, the caller's) of a memfd, or None for a
        file consumers open by path."""
        return None

    def _grant(self, view, mode):
        if mode not in ("r", "c", "r+"):
            raise ValueError(f"mode must be 'r', 'c' or 'r+', not {mode!r}")
        if mode == "r+" and (self.frozen or not view.flags.writeable):
            what = "the segment is frozen" if self.frozen else "the view is read-only"
            raise errors.NotShareable(f"cannot grant 'r+': {what}; export with mode='r'")


def reopen(fd, mode):
    """SPEC §7.4: a separate open file description of ``fd``'s file, for one receiver."""
    flags = (os.O_RDWR if mode == "r+" else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return os.open(f"/proc/self/fd/{fd}", flags)
    except OSError as e:
        raise system_error("reopening a memfd for a receiver (/proc/self/fd)", e) from None


def system_error(what, e):
    if e.errno in (errno.EMFILE, errno.ENFILE):
        return errors.ProducerError(
            f"{what}: too many open files ({errno.errorcode[e.errno]}); raise the limit "
            "(`ulimit -n`, resource.setrlimit(RLIMIT_NOFILE)) or let go of shared arrays",
            e.errno,
        )
    return errors.ProducerError(f"{what}: {e.strerror or e}", e.errno)


def address(a):
    return a.__array_interface__["data"][0]


def view_span(view):
    """``(lo, hi)`` addresses of the bytes ``view`` touches (lo == hi when empty)."""
    base = address(view)
    if view.size == 0:
        return base, base
    lo = hi = base
    for n, s in zip(view.shape, view.strides):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return lo, hi + view.itemsize


def check_dtype(dt, what="the array"):
    if (dt.hasobject or dt.fields is not None or dt.subdtype is not None or dt.kind not in KINDS
            or dt.itemsize == 0):
        raise errors.NotShareable(
            f"{what} has dtype {dt}, which has no stridemap typestr (object, structured, "
            "string and datetime dtypes travel pickled); view it as plain numbers or bytes first"
        )


def record_of_view(view, *, buf_addr, buffer_offset, buffer_len, file_len, device, inode,
                generation, segment_id, source, path, mode):
    """The record of ``view``, whose bytes lie in a buffer mapped at ``buf_addr`` (SPEC §9)."""
    check_dtype(view.dtype, "the view")
    if view.ndim > MAX_NDIM:
        raise errors.NotShareable(f"the view has {view.ndim} axes; a descriptor holds {MAX_NDIM}")
    lo, hi = view_span(view)
    if view.size and (lo < buf_addr or hi > buf_addr + buffer_len):
        raise errors.NotShareable("the view's bytes do not lie in its segment's buffer")
    offset = address(view) - buf_addr
    if view.size == 0 and not 0 <= offset <= buffer_len:
        offset = 0
    empty = view.size == 0
    strides = tuple(
        0 if (n <= 1 or empty) and abs(s) > buffer_len else s
        for n, s in zip(view.shape, view.strides)
    )
    order = "F" if view.flags.f_contiguous and not view.flags.c_contiguous else "C"
    layout = (view.dtype.str, order, mode, source, path or "", view.shape, strides, offset,
              buffer_offset, buffer_len, file_len)
    known = _layouts.get(layout)
    if known is not None:
        return with_identity(known, device, inode, generation, segment_id)
    record = encode(Descriptor(
        dtype=view.dtype.str, order=order, mode=mode, source=source,
        path=path or "", shape=view.shape, strides=strides, offset=offset,
        buffer_offset=buffer_offset, buffer_len=buffer_len, file_len=file_len, device=device,
        inode=inode, generation=generation, segment_id=segment_id,
    ))
    if len(_layouts) >= _LAYOUTS:
        _layouts.clear()
    _layouts[layout] = record
    return record


# A record of each layout described lately (every field but the identity), of whichever file or
# segment: a view of the same layout in another (a worker's next result in a new segment) is
# that record with its identity and checksum patched (codec.record.with_identity), instead of
# encoded and checked anew (a few hundred microseconds of Python on a just-woken CPU).
_layouts = {}
_LAYOUTS = 256


# Every mapping this process made of a segment (producer or consumer side) -> its Segment.
# Keyed weakly: the mapping lives as long as some array uses it, and keeps its Segment alive.
_mappings = weakref.WeakKeyDictionary()
_mappings_lock = forksafe.Lock()


def register(mm, seg):
    """Records that the mapping ``mm`` is of ``seg`` (views of ``mm`` then find it)."""
    with _mappings_lock:
        _mappings[mm] = seg


class _Opened(Segment):
    """A mapping :func:`stridemap.open` made, described again by the consumer. Its ``kind`` is
    "file" for a path, and for an fd a pool handed as a named file's; "memfd" for any other fd.
    """

    def __init__(self, desc, granted, fd, buf_addr, named=False, why=None):
        self.kind = "file" if desc.source == "path" or named else "memfd"
        self.path = desc.path or None
        self.generation = desc.generation
        self.segment_id = desc.segment_id
        self.frozen = granted != "r+"
        self.private = granted == "c"
        self._desc = desc
        self._fd = fd
        self._buf_addr = buf_addr
        self._why = why  # why no fd was kept
        if fd is not None:
            self._finalizer = weakref.finalize(self, _let_go_of_kept, fd)
            self._finalizer.atexit = False

    @property
    def can_hand_on(self) -> bool:
        """Whether views of it can be exported as they are: a received fd is kept for that
        (within :data:`KEPT_FDS`), a path can be opened again."""
        return self._fd is not None or self._desc.source != "fd"

    def describe(self, view: np.ndarray, mode: Mode = "r") -> bytes:
        if self.private:
            raise errors.NotShareable(
                "the view is of a copy-on-write mapping: its changes are private to this "
                "process; open the descriptor with mode 'r' or 'r+' to share views of it"
            )
        self._grant(view, mode)
        d = self._desc
        return record_of_view(
            view, buf_addr=self._buf_addr, buffer_offset=d.buffer_offset,
            buffer_len=d.buffer_len, file_len=d.file_len, device=d.device, inode=d.inode,
            generation=d.generation, segment_id=d.segment_id, source=d.source, path=d.path,
            mode=mode,
        )

    def new_fd(self, mode: Mode = "r") -> int | None:
        if self._desc.source != "fd":
            return None
        if self._fd is None:
            raise errors.ProducerError(
                "cannot hand on a view of this received file as it is (copy it: "
                f"stridemap.share(view)): no fd of it was kept: {self._why}",
                errno.EMFILE,
            )
        return reopen(self._fd, mode)


class _MemmapFile(Segment):
    """The file of an ``np.memmap``: described by path (SPEC §9)."""

    kind = "memmap"

    def __init__(self, owner):
        self._owner = owner
        self.path = os.path.realpath(owner.filename) if owner.filename else None
        self.frozen = owner.mode not in ("r+", "w+")

    def describe(self, view: np.ndarray, mode: Mode = "r") -> bytes:
        from .describe import describe  # it finds segments here: imported late

        return describe(view, mode=mode)


# A received fd is needed only to hand views of it on as they are (a new open file description
# of it for each receiver): the mapping holds the file, and its SPEC §7 lock, without any fd.
# So a duplicate is kept for that while fewer than kept_fds_cap() are kept; views of arrays
# received beyond that are copied when handed on (stridemap.pools) or refused (export).
_kept = {"pid": None, "n": 0}
_kept_lock = forksafe.Lock()


def kept_fds_cap() -> int:
    """At most this many received fds are kept at once: 256, or an eighth of the soft fd limit
    (``RLIMIT_NOFILE``) when that is less."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 256 if soft == resource.RLIM_INFINITY else max(0, min(256, soft // 8))


def _keep(fd):
    with _kept_lock:
        if _kept["pid"] != os.getpid():  # a fork's kept fds are its parent's count's
            _kept["pid"], _kept["n"] = os.getpid(), 0
        cap = kept_fds_cap()
        if _kept["n"] >= cap:
            return None, (f"at most {cap} received fds are kept for that, and that many were "
                          "live when it was received; let go of other received arrays")
        _kept["n"] += 1
    try:
        return os.dup(fd), None  # not inheritable, like every fd Python makes
    except OSError as e:  # the view is fine; only handing views of it on copies them
        log.debug("stridemap: no fd kept for handing on a received fd: %s", e)
        _let_go_of_kept(None)
        return None, (f"duplicating it failed: {e.strerror}; raise the fd limit (`ulimit -n`, "
                      "resource.setrlimit(RLIMIT_NOFILE))")


def _let_go_of_kept(fd):
    if fd is not None:
        os.close(fd)
    with _kept_lock:
        if _kept["pid"] == os.getpid():
            _kept["n"] = max(0, _kept["n"] - 1)


def register_opened(mm, desc, granted, fd, named=False):
    """Called by :func:`stridemap.open` for each mapping it makes, so that views of it can be
    described again. Of ``fd`` (an fd source's received fd) a duplicate is kept, within
    :func:`kept_fds_cap`; it shares the lock (same open file description). ``named``: a pool
    handed ``fd`` as a named file's."""
    kept, why = _keep(fd) if fd is not None else (None, None)
    start = address(np.frombuffer(mm, dtype=np.uint8))
    delta = desc.buffer_offset % mmap.ALLOCATIONGRANULARITY
    register(mm, _Opened(desc, granted, kept, start + delta, named, why))


def backing(array):
    """``(mm, owner)``: the mmap at the end of ``array``'s base chain and the object whose base
    it is, or ``(None, None)``."""
    obj = array
    for _ in range(64):
        base = getattr(obj, "base", None)
        if base is None and isinstance(obj, memoryview):
            base = obj.obj
        if isinstance(base, mmap.mmap):
            return base, obj
        if base is None:
            return None, None
        obj = base
    return None, None


def segment_of(array: object) -> Segment | None:
    """The :class:`Segment` backing ``array``, any view of an array from :func:`share`,
    :func:`empty` or :func:`stridemap.open`, or of an ``np.memmap``; None for anything else
    (copies such as ``a + 1`` or ``a[[0, 2]]`` included)."""
    if not isinstance(array, np.ndarray):
        return None
    mm, owner = backing(array)
    if mm is None:
        return None
    seg = _mappings.get(mm)
    if seg is not None:
        return seg
    if isinstance(owner, np.memmap) and owner.offset is not None and owner.mode != "c":
        return _MemmapFile(owner)
    return None


# --------------------------------------------------------------------------------------------
# SharedArray
