"""Python as a producer: share any numpy array through a stridemap segment, zero copies after one.

:func:`share` copies an array once into a new segment and returns an equal, read-only
:class:`SharedArray` backed by it; :func:`empty` makes a writable one to fill in place, and
:meth:`SharedArray.freeze` seals it. A segment is a sealed memfd (``kind="memfd"``, the
default: it travels as a file descriptor and needs no deletion) or a named file
(``kind="file"``) in this process's private folder (:mod:`stridemap.temp`). Both start with the
segment header of SPEC §8, so consumers in any language check them (O10).

Any view of an array from :func:`share`, :func:`empty` or :func:`stridemap.open` can be handed
on without a copy: :func:`describe` writes its descriptor and :func:`export` adds, for a memfd,
a new open file description for the receiver (SPEC §7.4).

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

Lifetime (SPEC §7). A memfd goes away with its last fd and mapping. A named segment is held
with ``flock(LOCK_SH)`` while any array or :class:`Export` of it lives in this process; then
it is unlinked under ``LOCK_EX | LOCK_NB`` (retried by a reaper thread while a consumer still
maps it). The pool folder is removed at normal exit; a folder left by a killed producer is
removed by :func:`stridemap.sweep` (run when a producer first makes its folder) or by Rust's
``stridemap gc``.
"""

import atexit
import errno
import functools
import fcntl
import logging
import mmap
import os
import sys
import threading
import time
import uuid
import weakref

import numpy as np

from . import _fresh, errors, huge, temp
from .descriptor import Descriptor
from .record import encode
from .rules import KINDS
from .segment import DATA_OFFSET, encode_header

log = logging.getLogger("stridemap")

KINDS_OF_SEGMENT = ("memfd", "file")
MAX_NDIM = 32
# Seals (linux/fcntl.h); fcntl lacks F_SEAL_FUTURE_WRITE before Python 3.13.
F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
F_SEAL_SEAL = getattr(fcntl, "F_SEAL_SEAL", 0x1)
F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x2)
F_SEAL_GROW = getattr(fcntl, "F_SEAL_GROW", 0x4)
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x10)
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


# --------------------------------------------------------------------------------------------
# What backs an array: a segment this process made, a mapping open() made, or an np.memmap file.


class Segment:
    """What backs a shared array, as :func:`segment_of` finds it.

    ``kind`` is ``"memfd"``, ``"file"`` (a named segment) or ``"memmap"`` (the file of an
    ``np.memmap``); ``path`` is the file's path (None for a memfd), ``folder`` the pool folder
    of a named segment this process made (a consumer's allowed root), ``frozen`` whether
    consumers may only read it. :meth:`describe` writes the descriptor of a view of it,
    :meth:`new_fd` opens a new open file description of a memfd for one receiver.
    """

    kind = None
    path = None
    folder = None
    frozen = True
    generation = 0
    segment_id = bytes(16)

    def describe(self, view, mode="r"):
        """The fixed record (1024 bytes) of ``view``, which must lie in this segment."""
        raise NotImplementedError

    def new_fd(self, mode="r"):
        """A new open file description (close-on-exec, the caller's) of a memfd, or None for a
        file consumers open by path."""
        return None

    def _grant(self, view, mode):
        if mode not in ("r", "c", "r+"):
            raise ValueError(f"mode must be 'r', 'c' or 'r+', not {mode!r}")
        if mode == "r+" and (self.frozen or not view.flags.writeable):
            what = "the segment is frozen" if self.frozen else "the view is read-only"
            raise errors.NotShareable(f"cannot grant 'r+': {what}; export with mode='r'")


def _reopen(fd, mode):
    """SPEC §7.4: a separate open file description of ``fd``'s file, for one receiver."""
    flags = (os.O_RDWR if mode == "r+" else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return os.open(f"/proc/self/fd/{fd}", flags)
    except OSError as e:
        raise _system_error("reopening a memfd for a receiver (/proc/self/fd)", e) from None


def _system_error(what, e):
    if e.errno in (errno.EMFILE, errno.ENFILE):
        return errors.ProducerError(
            f"{what}: too many open files ({errno.errorcode[e.errno]}); raise the limit "
            "(`ulimit -n`, resource.setrlimit(RLIMIT_NOFILE)) or let go of shared arrays",
            e.errno,
        )
    return errors.ProducerError(f"{what}: {e.strerror or e}", e.errno)


def _address(a):
    return a.__array_interface__["data"][0]


def _view_span(view):
    """``(lo, hi)`` addresses of the bytes ``view`` touches (lo == hi when empty)."""
    base = _address(view)
    if view.size == 0:
        return base, base
    lo = hi = base
    for n, s in zip(view.shape, view.strides):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return lo, hi + view.itemsize


def _check_dtype(dt, what="the array"):
    if (dt.hasobject or dt.fields is not None or dt.subdtype is not None or dt.kind not in KINDS
            or dt.itemsize == 0):
        raise errors.NotShareable(
            f"{what} has dtype {dt}, which has no stridemap typestr (object, structured, "
            "string and datetime dtypes travel pickled); view it as plain numbers or bytes first"
        )


def _descriptor(view, *, buf_addr, buffer_offset, buffer_len, file_len, device, inode,
                generation, segment_id, source, path, mode):
    """The record of ``view``, whose bytes lie in a buffer mapped at ``buf_addr`` (SPEC §9)."""
    _check_dtype(view.dtype, "the view")
    if view.ndim > MAX_NDIM:
        raise errors.NotShareable(f"the view has {view.ndim} axes; a descriptor holds {MAX_NDIM}")
    lo, hi = _view_span(view)
    if view.size and (lo < buf_addr or hi > buf_addr + buffer_len):
        raise errors.NotShareable("the view's bytes do not lie in its segment's buffer")
    offset = _address(view) - buf_addr
    if view.size == 0 and not 0 <= offset <= buffer_len:
        offset = 0
    empty = view.size == 0
    strides = tuple(
        0 if (n <= 1 or empty) and abs(s) > buffer_len else s
        for n, s in zip(view.shape, view.strides)
    )
    f_order = view.flags.f_contiguous and not view.flags.c_contiguous
    return encode(Descriptor(
        dtype=view.dtype.str, order="F" if f_order else "C", mode=mode, source=source,
        path=path or "", shape=view.shape, strides=strides, offset=offset,
        buffer_offset=buffer_offset, buffer_len=buffer_len, file_len=file_len, device=device,
        inode=inode, generation=generation, segment_id=segment_id,
    ))


class _State:
    """The producer's per-process state (made again in a forked child)."""

    def __init__(self):
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.folders = {}  # temp root -> PoolFolder
        self.swept = set()  # roots swept by this process
        self.pending = []  # _FileState of named segments a consumer still maps
        self.reaper = None
        self.wake = threading.Event()
        self.reused = {}  # (id(source), kind) -> (weakref(source), SharedArray)


_state = _State()
# Every mapping this process made of a segment (producer or consumer side) -> its Segment.
# Keyed weakly: the mapping lives as long as some array uses it, and keeps its Segment alive.
_mappings = weakref.WeakKeyDictionary()
_mappings_lock = threading.Lock()


def _register(mm, seg):
    with _mappings_lock:
        _mappings[mm] = seg


class _FileState:
    """The part of a segment its finalizer needs (never the Segment itself)."""

    __slots__ = ("fd", "name", "folder", "pid", "kind")

    def __init__(self, fd, kind, name=None, folder=None):
        self.fd = fd
        self.kind = kind
        self.name = name
        self.folder = folder
        self.pid = os.getpid()


def _release(fs):
    """A segment nobody in this process uses any more: a memfd's fd is closed; a named file is
    unlinked if it can be locked exclusively (no consumer maps it), else retried later."""
    if fs.fd is None:
        return
    if fs.pid != os.getpid() or fs.kind != "file":
        _close(fs)
        return
    if not _try_unlink(fs):
        with _state.lock:
            if _state.pid == fs.pid:
                _state.pending.append(fs)
                _start_reaper()
                return
        _close(fs)


def _close(fs):
    fd, fs.fd = fs.fd, None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _try_unlink(fs):
    """SPEC §7.3: ``LOCK_EX | LOCK_NB`` (converting this process's shared lock), then unlink
    and close. Whether the file is gone (or the folder already was)."""
    if fs.fd is None:
        return True
    try:
        fcntl.flock(fs.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        pass
    folder = fs.folder
    with folder.lock:  # the folder's fd stays open meanwhile (remove() takes it too)
        if folder.fd is not None:
            try:
                os.unlink(fs.name, dir_fd=folder.fd)
                log.debug("stridemap: unlinked segment %s/%s", folder.path, fs.name)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("stridemap: cannot unlink %s/%s: %s", folder.path, fs.name, e)
    _close(fs)
    return True


def reap():
    """Retries deleting named segments consumers still mapped when this process let go of
    them; how many are still pending. (A reaper thread calls it while any are.)"""
    with _state.lock:
        pending, _state.pending = _state.pending, []
    left = [fs for fs in pending if not _try_unlink(fs)]
    with _state.lock:
        _state.pending.extend(left)
        return len(_state.pending)


def _start_reaper():
    """Wakes the reaper thread (one per process, started the first time it is needed).
    Called with ``_state.lock`` held."""
    st = _state
    if st.reaper is None:
        st.reaper = threading.Thread(target=_reaper_loop, args=(st,), name="stridemap-reaper",
                                     daemon=True)
        st.reaper.start()
    st.wake.set()


def _reaper_loop(st):
    while True:
        st.wake.wait()
        pause = 0.02  # a consumer usually unmaps soon after the producer lets go
        while True:
            time.sleep(pause)
            if st is not _state:  # a forked child's copy of the parent's state
                return
            if reap() == 0:
                break
            pause = min(pause * 2, 0.5)
        with st.lock:
            if not st.pending:
                st.wake.clear()


class _Produced(Segment):
    """A segment this process made (memfd or named file)."""

    data_offset = DATA_OFFSET  # where the data starts in the file (SPEC §8)
    huge_plan = huge.BASE_PLAN  # the huge pages mechanism (stridemap.huge)

    def __init__(self, kind, fd, capacity, seg_id, folder=None, name=None):
        self.kind = kind
        self.capacity = capacity
        self.segment_id = seg_id
        self.generation = 1
        self.file_len = DATA_OFFSET + capacity
        self.frozen = False
        self.folder = folder.path if folder is not None else None
        self.path = os.path.join(folder.path, name) if folder is not None else None
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self._fs = _FileState(fd, kind, name, folder)
        self._buf_addr = None
        self._finalizer = weakref.finalize(self, _release, self._fs)
        self._finalizer.atexit = False  # at exit the folder goes as a whole (_at_exit)

    @property
    def fd(self):
        """The producer's own fd of the segment (holds its shared lock); do not close it."""
        return self._fs.fd

    def describe(self, view, mode="r"):
        self._grant(view, mode)
        return _descriptor(
            view, buf_addr=self._buf_addr, buffer_offset=self.data_offset,
            buffer_len=self.capacity, file_len=self.file_len, device=self.identity[0],
            inode=self.identity[1], generation=self.generation, segment_id=self.segment_id,
            source="fd" if self.kind == "memfd" else "path", path=self.path, mode=mode,
        )

    def new_fd(self, mode="r"):
        if self.kind != "memfd":
            return None
        return _reopen(self._fs.fd, mode)

    def freeze(self):
        """Consumers may only read from now on: a memfd is sealed against writes
        (``F_SEAL_FUTURE_WRITE``: no new writable mapping or write, in any process), a named
        file made mode 0400."""
        if self.frozen:
            return
        fd = self._fs.fd
        try:
            if self.kind == "memfd":
                fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
            else:
                os.fchmod(fd, 0o400)
        except OSError as e:
            raise _system_error(f"freezing a {self.kind} segment", e) from None
        self.frozen = True

    def __repr__(self):
        where = self.path or "memfd"
        return (f"<stridemap segment {self.segment_id.hex()} ({where}, {self.capacity} bytes, "
                f"{'frozen' if self.frozen else 'writable'})>")


class _Opened(Segment):
    """A mapping :func:`stridemap.open` made, described again by the consumer."""

    def __init__(self, desc, granted, fd, buf_addr):
        self.kind = "memfd" if desc.source == "fd" else "file"
        self.path = desc.path or None
        self.generation = desc.generation
        self.segment_id = desc.segment_id
        self.frozen = granted != "r+"
        self._desc = desc
        self._granted = granted
        self._fd = fd
        self._buf_addr = buf_addr
        if fd is not None:
            self._finalizer = weakref.finalize(self, os.close, fd)
            self._finalizer.atexit = False

    def describe(self, view, mode="r"):
        if self._granted == "c":
            raise errors.NotShareable(
                "the view is of a copy-on-write mapping: its changes are private to this "
                "process; open the descriptor with mode 'r' or 'r+' to share views of it"
            )
        self._grant(view, mode)
        d = self._desc
        return _descriptor(
            view, buf_addr=self._buf_addr, buffer_offset=d.buffer_offset,
            buffer_len=d.buffer_len, file_len=d.file_len, device=d.device, inode=d.inode,
            generation=d.generation, segment_id=d.segment_id, source=d.source, path=d.path,
            mode=mode,
        )

    def new_fd(self, mode="r"):
        if self.kind != "memfd":
            return None
        if self._fd is None:
            raise errors.ProducerError(
                "cannot hand on a view of this received memfd: no fd of it was kept (the fd "
                "limit was reached when it was opened); raise the limit (`ulimit -n`)",
                errno.EMFILE,
            )
        return _reopen(self._fd, mode)


class _MemmapFile(Segment):
    """The file of an ``np.memmap``: described by path (SPEC §9)."""

    kind = "memmap"

    def __init__(self, owner):
        self._owner = owner
        self.path = os.path.realpath(owner.filename) if owner.filename else None
        self.frozen = owner.mode not in ("r+", "w+")

    def describe(self, view, mode="r"):
        from .describe import describe

        return describe(view, mode=mode)


def register_opened(mm, desc, granted, fd):
    """Called by :func:`stridemap.open` for each mapping it makes, so that views of it can be
    described again. ``fd`` (an fd source's received fd) is duplicated and kept; the copy
    shares the lock (same open file description)."""
    kept = None
    if fd is not None:
        try:
            kept = os.dup(fd)  # not inheritable, like every fd Python makes
        except OSError as e:  # the view is fine; only exporting views of it will fail
            log.debug("stridemap: no fd kept for re-exporting a received memfd: %s", e)
    start = _address(np.frombuffer(mm, dtype=np.uint8))
    delta = desc.buffer_offset % mmap.ALLOCATIONGRANULARITY
    _register(mm, _Opened(desc, granted, kept, start + delta))


def _backing(array):
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


def segment_of(array):
    """The :class:`Segment` backing ``array``, any view of an array from :func:`share`,
    :func:`empty` or :func:`stridemap.open`, or of an ``np.memmap``; None for anything else
    (copies such as ``a + 1`` or ``a[[0, 2]]`` included)."""
    if not isinstance(array, np.ndarray):
        return None
    mm, owner = _backing(array)
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
        return arr.view(np.ndarray) if _backing(arr)[0] is None else arr

    def __getitem__(self, index):
        res = super().__getitem__(index)
        if type(res) is SharedArray and _backing(res)[0] is None:
            return res.view(np.ndarray)
        return res

    def __reduce__(self):
        return np.asarray(self).copy().__reduce__()

    @property
    def segment(self):
        """The :class:`Segment` that backs this array (None for a copy)."""
        return segment_of(self)

    def freeze(self):
        """Seals the segment (consumers may only read it, SPEC: ``F_SEAL_FUTURE_WRITE`` for a
        memfd, mode 0400 for a file) and makes this array read-only; returns it. Views taken
        before stay writable in this process: let go of them first."""
        seg = segment_of(self)
        if not isinstance(seg, _Produced):
            raise errors.NotShareable("only an array from stridemap.empty() can be frozen")
        seg.freeze()
        self.flags.writeable = False
        return self


# --------------------------------------------------------------------------------------------
# Making segments


def _layout(shape, strides, itemsize):
    """Where a copy of an array with this layout goes in a new buffer: ``(strides, offset,
    buffer_len)``.

    If the array's span (SPEC §1.2) is no bigger than its distinct elements (contiguous in any
    order or direction, broadcast, overlapping windows), the span is kept as it is: the same
    strides, nothing materialized. Otherwise (a view with gaps) the axes are packed densely in
    the order of their stride magnitudes, keeping each stride's sign; broadcast axes keep
    stride 0.
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


def _folder_for(needed, temp_folder):
    """This process's pool folder below the temp root chosen for ``needed`` bytes; the first
    time a root is used, its dead producers' folders are swept."""
    root = os.path.realpath(temp.choose_root(temp_folder, needed))
    with _state.lock:
        folder = _state.folders.get(root)
        if folder is not None and folder.fd is not None:
            return folder
        if root not in _state.swept:
            _state.swept.add(root)
            try:
                temp.sweep(root)
            except OSError as e:
                log.warning("stridemap: orphan sweep of %s failed: %s", root, e)
        try:
            folder = temp.PoolFolder.create(root)
        except OSError as e:
            raise _system_error(f"creating a pool folder in {root}", e) from None
        _state.folders[root] = folder
        return folder


def _new_segment(kind, capacity, temp_folder, huge_pages="auto", *, reserve=True):
    """A new segment of ``capacity`` data bytes, header written, producer's shared lock taken.
    With ``reserve`` its space is reserved with ``posix_fallocate`` (pages zeroed now, so that
    a full tmpfs fails here and never as a SIGBUS in a map); without it the caller reserves the
    space by writing every byte with ``pwrite`` before anything maps it (:func:`share`), which
    spares the kernel a zeroing pass. On any error nothing is left behind."""
    if kind not in KINDS_OF_SEGMENT:
        raise ValueError(f"kind must be one of {KINDS_OF_SEGMENT}, not {kind!r}")
    _check_fork()
    if _state.pending:
        reap()
    seg_id = uuid.uuid4().bytes
    # Huge pages (stridemap.huge): whole huge pages, the data at the huge page size.
    page = huge.page_size_for(huge_pages, kind, capacity, temp_folder)
    if page:
        capacity = -(-max(capacity, 1) // page) * page
    plan = huge.BASE_PLAN
    data_offset = page or DATA_OFFSET
    file_len = data_offset + capacity
    folder = name = None
    if kind == "memfd":
        where = "memfd"
        if page:
            plan = huge.choose(huge_pages, kind, capacity, None)
        try:
            fd = os.memfd_create(f"stridemap-{seg_id.hex()}",
                                 os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | plan.memfd_flags)
        except OSError as e:
            raise _system_error("creating a memfd", e) from None
    else:
        folder = _folder_for(file_len, temp_folder)
        if page:
            plan = huge.choose(huge_pages, kind, capacity, folder.path)
        where = folder.path
        name = f"seg-{seg_id.hex()}"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=folder.fd)
        except OSError as e:
            raise _system_error(f"creating a segment in {where}", e) from None
    try:
        header = encode_header(seg_id, generation=1, capacity=capacity, owner_pid=os.getpid(),
                               data_offset=data_offset)
        if plan.huge:
            huge.prepare(fd, plan, header, file_len, where)
        elif os.pwrite(fd, header, 0) != len(header):
            raise OSError(errno.EIO, "short write of the segment header")
        try:
            if plan.huge:
                pass
            elif reserve:
                os.posix_fallocate(fd, 0, file_len)  # a full tmpfs fails here, not a SIGBUS
            else:
                os.ftruncate(fd, file_len)  # sized before the seals; pages come with the pwrite
        except OSError as e:
            _raise_if_no_space(e, where, file_len)
            raise
        if kind == "memfd":
            fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
        fcntl.flock(fd, fcntl.LOCK_SH)  # SPEC §7.2, while this process uses it
        seg = _Produced(kind, fd, capacity, seg_id, folder, name)
        seg.huge_plan, seg.data_offset, seg.file_len = plan, data_offset, file_len
        log.debug("stridemap: new %s segment %s (%d bytes) in %s", kind, seg_id.hex(), capacity,
                  huge._NAMES[plan.backing])
        return seg
    except BaseException as e:
        os.close(fd)
        if kind == "file":
            try:
                os.unlink(name, dir_fd=folder.fd)
            except OSError:
                pass
        if isinstance(e, OSError) and not isinstance(e, errors.StridemapError):
            raise _system_error(f"making a {capacity}-byte segment in {where}", e) from None
        raise


def _raise_if_no_space(e, where, file_len):
    """Raises :class:`~stridemap.errors.NoSpace` (naming ``where``, the bytes needed and
    available) when ``e`` says the filesystem or memory is full."""
    if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
        try:
            available = temp.space(where)[0] if where != "memfd" else 0
        except OSError:
            available = 0
        raise errors.NoSpace.make(where, file_len, available) from None


def _map(seg, writable, populate=False):
    """Maps the whole segment file; returns the mmap."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
    try:
        mm = mmap.mmap(seg.fd, seg.file_len, flags=flags, prot=prot)
    except OSError as e:
        raise _system_error(f"mapping a {seg.file_len}-byte segment", e) from None
    huge.advise(mm, seg.huge_plan)
    return mm


def _wrap(seg, mm, shape, dtype, strides, offset):
    """The SharedArray over ``mm``, registered so views of it find ``seg``."""
    seg._buf_addr = _address(np.frombuffer(mm, dtype=np.uint8)) + seg.data_offset
    arr = np.ndarray.__new__(SharedArray, shape, dtype, buffer=mm, offset=seg.data_offset + offset,
                             strides=strides)
    _register(mm, seg)
    return arr


def _check_array(a):
    _check_dtype(a.dtype)
    if a.ndim > MAX_NDIM:
        raise errors.NotShareable(f"the array has {a.ndim} axes; a descriptor holds {MAX_NDIM}")


def share(array, *, kind="memfd", temp_folder=None, reuse=True, huge_pages="auto"):
    """A read-only copy of ``array`` in a frozen stridemap segment: a :class:`SharedArray`
    equal to it, with the same shape, dtype and (where possible) strides.

    The data is copied exactly once, whatever the strides: reversed and transposed views keep
    their layout, broadcast (stride-0) axes copy only the bytes they touch (a row broadcast to
    a million rows costs one row), views with gaps are packed. ``kind`` is ``"memfd"`` (sealed
    against shrinking, growing and writing; it travels as an fd) or ``"file"`` (a named file in
    this process's private folder below the temp root, or below ``temp_folder``).

    With ``reuse`` (the default), sharing the same array object again while it lives returns
    the same SharedArray without copying: the key is the object's identity, never its
    contents, so share it again after changing it in place with ``reuse=False``. A
    SharedArray from a frozen segment is returned as it is.

    Raises :class:`~stridemap.errors.NotShareable` for dtypes without a stridemap typestr
    (object, structured, strings, datetimes), :class:`~stridemap.errors.NoSpace` when the
    space cannot be reserved, :class:`~stridemap.errors.ProducerError` for other system
    failures (e.g. out of file descriptors); nothing is left behind.

    ``huge_pages`` ("auto", "never" or "require") chooses huge pages for the segment as
    :mod:`stridemap.huge` says; "require" raises
    :class:`~stridemap.huge.HugePagesUnavailable` when the system offers none.
    """
    if kind not in KINDS_OF_SEGMENT:
        raise ValueError(f"kind must be one of {KINDS_OF_SEGMENT}, not {kind!r}")
    if isinstance(array, SharedArray):
        seg = segment_of(array)
        if isinstance(seg, _Produced) and seg.frozen and seg.kind == kind:
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
    key = (id(source), kind)
    if reuse and source is not None:
        _check_fork()
        with _state.lock:
            hit = _state.reused.get(key)
        if hit is not None and hit[0]() is source:
            return hit[1]
    strides, offset, capacity = _layout(array.shape, array.strides, array.itemsize)
    # A fill that writes every byte of the segment with pwrite reserves its space as it goes
    # (ENOSPC there, before anything maps it); only a fill through a map needs fallocate.
    reserve = _fill_kind(array, strides, capacity) == "mapped"
    seg = huge.with_fallback(
        functools.partial(_new_segment, reserve=reserve), kind, capacity, temp_folder, huge_pages
    )
    try:
        if capacity:
            try:
                _fill(seg, array, strides, offset)
            except OSError as e:  # pwrite reserving the space found none
                _raise_if_no_space(e, seg.folder or "memfd", seg.file_len)
                raise
        seg.freeze()
        mm = _map(seg, writable=False)
        shared = _wrap(seg, mm, array.shape, array.dtype, strides, offset)
    except BaseException:
        seg._finalizer()  # now, not when the traceback lets go of it: nothing left behind
        raise
    if reuse and source is not None:
        try:
            ref = weakref.ref(source)
        except TypeError:
            return shared
        with _state.lock:
            _state.reused[key] = (ref, shared)
        weakref.finalize(source, _forget, key, ref).atexit = False
    return shared


def _forget(key, ref):
    with _state.lock:
        hit = _state.reused.get(key)
        if hit is not None and hit[0] is ref:
            del _state.reused[key]


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


def _pwrite_all(fd, raw, pos, fresh=False):
    """Writes the uint8 array ``raw`` at ``pos`` with ``pwrite``; where the file has no pages
    yet (``fresh``), with a helper thread when that is faster (:mod:`stridemap._fresh`)."""
    try:
        if fresh:
            _fresh.fill_fresh(fd, raw, pos)
        else:
            _fresh.pwrite_all(fd, raw, pos)
    except OSError as e:
        raise _system_error("writing a segment", e) from None


def _fill(seg, src, strides, offset):
    """Copies ``src`` into the segment with the given layout.

    When the layout is the source's own and its span holds exactly its elements (contiguous
    in any axis order and direction), the span's bytes are written as they are, with
    ``pwrite`` (no zeroing pass, the fastest way into a tmpfs), helped for large spans by a
    second thread filling from the other end through a map (:mod:`stridemap._fresh`).
    Otherwise (broadcast, gaps) numpy copies element by element through a writable map.
    """
    if seg.huge_plan.huge:
        _fill_huge(seg, src, strides, offset)
        return
    how = _fill_kind(src, strides, seg.capacity)
    if how == "span":
        lo_addr = _view_span(src)[0]
        raw = np.asarray(_Span(lo_addr, src.nbytes, src))
        _pwrite_all(seg.fd, raw, seg.data_offset + offset - (_address(src) - lo_addr),
                    fresh=True)
    elif how == "packed":
        _fill_packed(seg, src, strides, offset)
    else:
        _fill_mapped(seg, src, strides, offset, populate=False)


def _fill_kind(src, strides, capacity):
    """How :func:`_fill` copies ``src`` into ``capacity`` bytes laid out with ``strides``:
    ``"span"`` (the source's own bytes, one pwrite), ``"packed"`` (slabs packed by numpy, each
    pwritten; every byte written) or ``"mapped"`` (through a writable map)."""
    lo_addr, hi_addr = _view_span(src)
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
    if _fill_kind(src, strides, seg.capacity) == "span":
        lo_addr = _view_span(src)[0]
        raw = np.asarray(_Span(lo_addr, src.nbytes, src))
        pos = seg.data_offset + offset - (_address(src) - lo_addr)
        try:
            if _fresh.fill_fresh_huge(seg.fd, raw, pos, plan.page_size, plan.thp):
                return
        except OSError as e:
            raise _system_error("filling a huge-page segment", e) from None
    _fill_mapped(seg, src, strides, offset, populate=False)


def _fill_mapped(seg, src, strides, offset, populate):
    mm = _map(seg, writable=True, populate=populate)
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


def empty(shape, dtype, *, order="C", kind="memfd", temp_folder=None, huge_pages="auto"):
    """A writable :class:`SharedArray` (zeroed) in a new segment, to fill in place; then
    :meth:`~SharedArray.freeze` it, or :func:`export` views of it with ``mode="r+"`` for
    consumers that write their results into it. Errors and ``huge_pages`` as for
    :func:`share`."""
    dt = np.dtype(dtype)
    _check_dtype(dt)
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
    seg = huge.with_fallback(_new_segment, kind, capacity, temp_folder, huge_pages)
    try:
        mm = _map(seg, writable=True)
        # Large segments: the pages' first touch (zeroing, mapping) shared by two threads now,
        # so that filling in place runs at memcpy speed (stridemap._fresh).
        _fresh.populate(mm, seg.data_offset, seg.file_len - seg.data_offset)
        return _wrap(seg, mm, shape, dt, strides, 0)
    except BaseException:
        seg._finalizer()
        raise


# --------------------------------------------------------------------------------------------
# Handing views on


class Export:
    """What a receiver needs for one view: ``record`` (the 1024-byte descriptor), ``fd`` (for a
    memfd: a new open file description made for this receiver, close-on-exec, owned by the
    caller, which passes it beside the record and closes it; None for a file opened by path)
    and ``segment``, which keeps the segment (and a named file) alive while this lives."""

    __slots__ = ("record", "fd", "segment", "__weakref__")

    def __init__(self, record, fd, segment):
        self.record = record
        self.fd = fd
        self.segment = segment

    def close(self):
        """Closes ``fd`` if it is still here (take it with ``detach_fd`` to keep it)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def detach_fd(self):
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


def export(view, *, mode="r"):
    """The descriptor of ``view`` (any view of an array from :func:`share`, :func:`empty`,
    :func:`stridemap.open`, or of an ``np.memmap``) and, for a memfd, a new fd for one
    receiver: an :class:`Export`. No data is copied.

    ``mode`` is what the receiver may map with: ``"r"``, ``"c"``, or ``"r+"`` for a writable
    view of a segment that is not frozen. Raises :class:`~stridemap.errors.NotShareable` for
    any other array.
    """
    seg, record = describe_view(view, mode)
    return Export(record, seg.new_fd(mode), seg)


# --------------------------------------------------------------------------------------------
# Process lifetime: forks and exit


def producer_root(needed=0, *, temp_folder=None):
    """This process's pool folder for a named segment of ``needed`` bytes (made, and its temp
    root swept, if it is the first): the allowed root a consumer needs for named segments."""
    _check_fork()
    return _folder_for(DATA_OFFSET + needed, temp_folder).path


def producer_folders():
    """The pool folders this process has made so far."""
    _check_fork()
    with _state.lock:
        return [f.path for f in _state.folders.values() if f.fd is not None]


def _check_fork():
    if _state.pid != os.getpid():
        _after_fork_in_child()


def _after_fork_in_child():
    """A forked child starts with no folders and no reuse cache of its own; the parent's
    segments it inherited are never unlinked or unlocked by it."""
    global _state, _mappings_lock
    old = _state
    _state = _State()
    _mappings_lock = threading.Lock()  # another thread may have held it at the fork
    for folder in old.folders.values():
        folder.lock = threading.Lock()  # another thread may have held it at the fork
        folder.close()  # a duplicate: the parent's lock stays


def _at_exit():
    """Normal exit: pending named segments get a last try, then every pool folder is removed."""
    if _state.pid != os.getpid():
        return
    with _state.lock:
        _state.reused.clear()
        folders = list(_state.folders.values())
        _state.folders.clear()
        pending, _state.pending = _state.pending, []
    for fs in pending:
        _close(fs)
    for folder in folders:
        folder.remove()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)

if sys.platform != "linux":  # pragma: no cover
    log.debug("stridemap: the producer needs Linux (memfd, seals, /proc/self/fd)")
