"""Handing arrays to another process of a pool as a descriptor plus an fd (the pools' reducers).

This module is what a pool worker imports when it unpickles its first descriptor: it has no
dependency on joblib, so a ``multiprocessing`` worker stays light. :mod:`stridemap.pools` is the
public face (``install()``, the joblib backend).

What travels in the pickle is ``(_rebuild, (record, handle, kind, mode, policy))``: the
1024-byte fixed record (SPEC §1), with ``source`` "fd" and no path, a handle of the fd, the
sender's :class:`Policy` as ``(numpy, max_nbytes)``, and what the fd is, as the sender knows it: "memfd", "recyclable" (a memfd its producer recycles
in place, :mod:`..segments.recycle`, whose mapping the receiver keeps as :mod:`.mapcache`
says), or "file" for a named file (a segment in a temp root, an ``np.memmap``'s file), which
the receiver checks as SPEC §6 checks a file opened by its path
(:func:`stridemap.reader.open_handed`), where a memfd is held to O9.
While a process is being started (spawn, forkserver) the handle is ``multiprocessing``'s own
and the fd is inherited by the child. At any other time it is a :class:`~.fetch.ChannelFd`:
the sender keeps the fd, and the one process that asks for it gets it, once, over a Unix socket
connection to the sender's listener that it made the first time it received from this sender,
authenticated both ways with the pool's ``authkey``, and then reuses for every array (see
:mod:`stridemap.transport.channel`). When the sender cannot listen, ``multiprocessing.reduction.DupFd``
carries the fd instead (a ``resource_sharer`` connection and handshake per array). Each receiver
gets an open file description made for it alone (``stridemap.export`` reopens the memfd; a named
segment or memmap file is opened again here), on which the sender already holds
``flock(LOCK_SH)`` (SPEC §7): the producer cannot recycle or delete the segment between the send
and the receiver's mapping. The receiver never opens a path: it trusts the fd its pool gave it,
and the descriptor only says how to view it (rules O6-O11 still check the fd against the
record: size, identity, seals, the segment header). A receive that fails returns a stand-in
that raises its error where it is used (:mod:`stridemap.transport.unreceived`): raised from the
unpickle, the error would cost the pool a worker and the task, or break the whole executor.

Why this transport and not reopening ``/proc/<sender>/fd/<n>`` in the receiver: the handle holds
the fd from the moment of pickling, so the sender may drop the array at once (a worker
returning a result does exactly that); it needs no ptrace access to the sender (hidepid,
non-dumpable processes); and only processes with the pool's authkey can fetch it. The same
handle works in loky's pickler (joblib), which does not use ``ForkingPickler`` but pickles the
handle object all the same. The price: one request and reply per array, and the sender must
live until the receiver has fetched it (hence the wait at exit below).
"""

import dataclasses
import errno
import logging
import os
import socket
import weakref
from multiprocessing import context as _mp_context
from multiprocessing import process as _mp_process
from multiprocessing import reduction as _mp_reduction
from multiprocessing import resource_sharer as _resource_sharer

import numpy as np

from .. import forksafe
from ..codec import errors
from ..codec.decode import decode
from ..codec.record import encode, with_generation
from ..codec.rules import KINDS
from ..reader import open_handed
from ..segments import header, recycle
from ..segments.backing import segment_of, system_error
from ..segments.export import Export, export
from ..segments.make import Produced
from ..segments.share import SharedArray, empty, share
from . import channel, fetch, mapcache, queue_offers, unreceived

log = logging.getLogger("stridemap.pools")


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the reducers share.

    ``numpy``: plain ndarrays of at least ``max_nbytes`` are copied once into a segment
    (``stridemap.share``) and views of an ``np.memmap`` are described in place; without it only
    arrays backed by a stridemap segment (``share``, ``empty``, ``open`` and their views) are.
    """

    numpy: bool = False
    max_nbytes: int = 1 << 20

    def __post_init__(self):
        if isinstance(self.max_nbytes, bool) or not isinstance(self.max_nbytes, int):
            raise TypeError(f"max_nbytes must be an int, not {type(self.max_nbytes).__name__}")
        if self.max_nbytes < 0:
            raise ValueError(f"max_nbytes must be >= 0, not {self.max_nbytes}")


_lock = forksafe.Lock()
_installed = None  # the Policy in force in this process (install(), or the first array's)
# _installed is the default that a bare install() chose knowing no policy: the first array
# received replaces it with its sender's.
_provisional = False
_parents = None  # the policy the parent process pickled stridemap.pools.install with


def array_types():
    """The array types the reducers are registered for (a dispatch table matches exact types)."""
    return [np.ndarray, np.memmap, SharedArray]


def install(policy, *, provisional=False):
    """Register the reducers with ``ForkingPickler`` (and loky's pickler when loaded).
    ``provisional``: ``policy`` is a default that the first array received replaces."""
    global _installed, _provisional
    reducer = Reducer(policy)
    with _lock:
        for t in array_types():
            _mp_reduction.ForkingPickler.register(t, reducer)
        _installed, _provisional = policy, provisional
        _scope_dumps()
    register_with_loky()
    _ensure_exit_wait()


def install_known():
    """``install()`` without arguments: the policy in force in this process (installed here,
    or inherited by fork), else the one the parent pickled ``install`` with
    (:func:`note_parents_policy`), else the default until the first array received brings its
    sender's."""
    with _lock:
        known = pass_on()
        installed_default = _installed
    if known is not None:
        install(known)
    else:
        install(installed_default or Policy(), provisional=True)


def pass_on():
    """The policy a child started with a pickled ``install`` should take: the one in force
    here unless it is a provisional default, else the one this process's parent passed on;
    None when there is none."""
    if _installed is not None and not _provisional:
        return _installed
    return _parents


def note_parents_policy(policy):
    """Remember the policy the parent passed on (unpickling ``install``, as a child starts)."""
    global _parents
    _parents = policy


def uninstall():
    """Remove the reducers from ``ForkingPickler``: arrays are pickled as before. The parent's
    policy is forgotten too: no policy is known any more."""
    global _installed, _provisional, _parents
    with _lock:
        for t in array_types():
            if isinstance(_mp_reduction.ForkingPickler._extra_reducers.get(t), Reducer):
                del _mp_reduction.ForkingPickler._extra_reducers[t]
        _installed, _provisional, _parents = None, False, None
        _unscope_dumps()


def _scope_dumps():
    """Make ``ForkingPickler.dumps`` (what multiprocessing's queues, pipes and pools pickle
    with) run in a :class:`channel.pickle_scope`, so that a pickle that fails withdraws the
    fds it had offered. Called with _lock held; once."""
    pickler = _mp_reduction.ForkingPickler
    current = pickler.__dict__.get("dumps")
    func = getattr(current, "__func__", None)
    if func is None or getattr(func, "_stridemap_unscoped", None) is not None:
        return

    def dumps(cls, obj, protocol=None):
        with channel.pickle_scope():
            return func(cls, obj, protocol)

    dumps._stridemap_unscoped = current
    dumps.__doc__ = func.__doc__
    pickler.dumps = classmethod(dumps)


def _unscope_dumps():
    pickler = _mp_reduction.ForkingPickler
    func = getattr(pickler.__dict__.get("dumps"), "__func__", None)
    original = getattr(func, "_stridemap_unscoped", None)
    if original is not None:
        pickler.dumps = original


def installed():
    """The :class:`Policy` in force in this process, or None."""
    return _installed


def register_with_loky():
    """Make loky's pickler (joblib's default backend) pass ``SharedArray`` by descriptor.

    Only the ``SharedArray`` type: joblib's own reducers keep plain ndarrays and memmaps (loky
    copies its global table into each pickler, then joblib's per-executor reducers override).
    Both joblib's vendored loky and a standalone loky, each only when already loaded, so that a
    ``multiprocessing`` worker never imports them.
    """
    import sys

    shared = SharedArray
    for name in ("joblib.externals.loky.backend.reduction", "loky.backend.reduction"):
        module = sys.modules.get(name)
        if module is not None:
            module.register(shared, Reducer(Policy()))
    queue_offers.watch_call_queues()



MMAP_MODES = (None, "r", "r+", "w+", "c")


class Reducer:
    """A pickle reducer for arrays: a descriptor plus an fd when :func:`handoff` can share the
    array under ``policy``, else a copy (:func:`pickled`).

    ``mmap_mode`` is joblib's: how the receiver maps what this reducer shares. None (the pools):
    as the sender's view allows, read-only or, for a writable view of a writable segment,
    shared writes. "r": the same. "r+" and "w+": a plain ndarray is copied into a writable
    segment, mapped with shared writes. "c": what would reach the receiver read-only is mapped
    copy-on-write, writable and private to it.
    """

    __slots__ = ("policy", "mmap_mode")

    def __init__(self, policy, mmap_mode=None):
        if mmap_mode not in MMAP_MODES:
            raise ValueError(f"mmap_mode must be one of {MMAP_MODES}, not {mmap_mode!r}")
        self.policy = policy
        self.mmap_mode = mmap_mode

    def __call__(self, array):
        shared = handoff(array, self.policy, self.mmap_mode)
        if shared is None:
            return pickled(array)
        return shared

    def __reduce__(self):  # loky pickles the reducers into its workers
        return Reducer, (self.policy, self.mmap_mode)

    def __eq__(self, other):
        return (isinstance(other, Reducer) and other.policy == self.policy
                and other.mmap_mode == self.mmap_mode)

    def __hash__(self):
        return hash((self.policy, self.mmap_mode))


def pickled(array):
    """A reduction of ``array`` as a copy that any pickle protocol reads, byte order, dtype,
    shape and strides' order kept, rebuilt writable.

    Not numpy's own reduction at a fixed protocol: a reducer does not know its pickler's
    protocol, and below protocol 5 numpy rebuilds a ``>i4`` array as ``<i4``. The bytes travel
    as a bytearray (one copy, as numpy's in-band pickling makes). Arrays of Python objects, and
    dtypes of no size, go by numpy's reduction: their elements are pickled one by one.
    """
    dt = array.dtype
    if dt.hasobject or dt.itemsize == 0:
        return np.ndarray.__reduce__(array)
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    data = bytearray(array.nbytes)
    _from_bytes(data, dt, array.shape, order)[...] = array
    return _from_bytes, (data, dt, array.shape, order)


def _from_bytes(data, dtype, shape, order):
    """The array :func:`pickled` sends: a view of ``data`` (writable, a bytearray)."""
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)


def _typestr_problem(dt):
    if dt.hasobject:
        return f"dtype {dt} holds Python objects"
    if dt.fields is not None or dt.subdtype is not None:
        return f"dtype {dt} is structured"
    if dt.kind not in KINDS:
        return f"dtype {dt} has no stridemap typestr"
    return None


def handoff(array, policy, mmap_mode=None):
    """``(_rebuild, args)`` passing ``array`` as a descriptor and an fd, or None to pickle it.

    None (with a debug log line saying why) for a dtype stridemap cannot describe, and, unless
    ``policy.numpy``, for an array no stridemap segment backs; with ``policy.numpy``, a plain
    array smaller than ``policy.max_nbytes``. A view of a copy-on-write mapping counts as a plain
    array (its changes are this process's own). ``mmap_mode`` as for :class:`Reducer`. A plain
    array whose copy finds no room (``NoSpace``), or that comes while the fds held for arrays
    not yet received take half the limit, is pickled, with a warning (never silently); other
    errors of the producer are raised.
    """
    problem = _typestr_problem(array.dtype)
    wire = (policy.numpy, policy.max_nbytes)  # plain values: a Policy pickles by copyreg
    if problem is not None:
        log.debug("stridemap.pools: pickling a %s array: %s", array.shape, problem)
        return None
    seg = segment_of(array)
    if seg is not None and seg.private:
        seg = None
    view = array
    if seg is not None and _is_memmap(seg) and not policy.numpy:
        log.debug("stridemap.pools: pickling an np.memmap view (install(numpy=True) shares "
                  "them in place)")
        return None
    if seg is not None and _is_memmap(seg):
        try:
            # joblib's backend hands a memmap view on in the memmap's own mode, as loky does
            # (a writable one with shared writes); a pool, read-only.
            return _rebuild, (*export_for_receiver(view, seg=seg,
                                                   **_grants(mmap_mode, memmap=True)), wire)
        except (errors.NotShareable, FileNotFoundError) as e:
            # Its file was deleted or replaced at its path: the bytes this process maps are
            # only here now, so they travel as a copy (as pickling would have sent them).
            log.debug("stridemap.pools: copying an np.memmap view: %s", e)
            seg = None
    if seg is not None and not getattr(seg, "can_hand_on", True):
        # A received array whose fd was not kept (kept_fds_cap): handed on as a frozen copy,
        # shared (read-only in the receiver even when writable here: writes there could not
        # reach this array, so they fail loudly instead of going nowhere), or pickled when
        # fds are scarce (_fds_scarce).
        if _fds_scarce():
            return None
        log.debug("stridemap.pools: copying a received %s array to hand it on (no fd of it "
                  "was kept)", array.shape)
        return _rebuild, (*export_for_receiver(_copy(array), **_grants(mmap_mode)), wire)
    if seg is None:
        if not policy.numpy:
            log.debug("stridemap.pools: pickling a %s array: no stridemap segment backs it "
                      "(share() it, or install(numpy=True))", array.shape)
            return None
        if array.nbytes < policy.max_nbytes:
            log.debug("stridemap.pools: pickling a %d-byte array: below max_nbytes=%d",
                      array.nbytes, policy.max_nbytes)
            return None
        if _fds_scarce():
            return None
        # No room for its copy, or no fd for it (this process holds many of its own: the
        # count of _fds_scarce is only stridemap's): it travels pickled, as multiprocessing
        # alone sends it (the Dask plugin falls back the same way).
        try:
            view = _writable_copy(array) if mmap_mode in ("r+", "w+") else _copy(array)
            return _rebuild, (*export_for_receiver(view, **_grants(mmap_mode)), wire)
        except (errors.NoSpace, errors.ProducerError, OSError) as e:
            if not isinstance(e, errors.NoSpace) and \
                    getattr(e, "errno", None) not in (errno.EMFILE, errno.ENFILE):
                raise
            _warn_pickled(array, e)
            return None
    return _rebuild, (*export_for_receiver(view, seg=seg, **_grants(mmap_mode)), wire)


def _grants(mmap_mode, memmap=False):
    """What a receiver may do with an array handed on under ``mmap_mode`` (:class:`Reducer`),
    as :func:`export_for_receiver` takes it: copy-on-write under "c"; shared writes under "r+"
    and "w+", and for a memmap under any joblib mode (as loky hands memmaps on); a pool
    (``None``): read-only."""
    return {"copy_on_write": mmap_mode == "c",
            "shared_writes": mmap_mode is not None if memmap else mmap_mode in ("r+", "w+")}


_pickled_said = {"pid": None, "count": 0}


def _warn_pickled(array, e):
    """One warning per process for plain arrays pickled because their copy could not be made
    (then a debug line for each)."""
    if _pickled_said["pid"] != os.getpid():
        _pickled_said.update(pid=os.getpid(), count=0)
    _pickled_said["count"] += 1
    if _pickled_said["count"] == 1:
        log.warning("stridemap.pools: a %d-byte array is pickled (copied), not shared: %s "
                    "(further arrays pickled for this reason are logged at debug level)",
                    array.nbytes, e)
    else:
        log.debug("stridemap.pools: a %d-byte array is pickled (copied), not shared: %s",
                  array.nbytes, e)


_scarce_said = {"pid": None}


def _fds_scarce():
    """Whether the fds held for arrays not yet received (a copy's segment and the fd offered,
    two each) already take half of this process's fd limit: a plain array is then pickled (a
    copy, as multiprocessing alone would send it) instead of shared, so that a pool that
    pickles thousands of arrays at once (``Pool.map``'s chunks) never runs out of fds. Said
    once per process, as a warning."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or 2 * channel.pending() < soft // 2:
        return False
    if _scarce_said["pid"] != os.getpid():
        _scarce_said["pid"] = os.getpid()
        log.warning("stridemap.pools: %d arrays handed to other processes are not received "
                    "yet, holding about %d of this process's %d fds: plain arrays are pickled "
                    "(copied) until receivers catch up; raise the limit (`ulimit -n`) to share "
                    "them", channel.pending(), 2 * channel.pending(), soft)
    return True


# A plain ndarray can change in place between two pickles of it, so its shared copy is reused
# only inside a reuse scope: joblib's "stridemap" backend opens one for each Parallel call
# (joblib reads an argument's contents when the call dispatches it, so a change made between
# two calls reaches the second, as with loky). Outside a scope (multiprocessing, executors)
# every pickle of it copies it once, as every pickle of it copied it before: never a stale
# copy. Arrays from stridemap.share()/empty() and memmap views are never copied.
_scope_lock = forksafe.Lock()
_scopes = 0  # open reuse scopes
_scoped = {}  # id(array) -> (weakref(array), its shared copy), while any scope is open


def open_reuse_scope():
    """From now until the matching :func:`close_reuse_scope`, a plain ndarray pickled again
    is sent as the copy made the first time (call it where the array cannot change)."""
    global _scopes
    with _scope_lock:
        _scopes += 1


def close_reuse_scope():
    """Ends a scope of :func:`open_reuse_scope`; when none is left, the copies are let go."""
    global _scopes
    with _scope_lock:
        _scopes = max(_scopes - 1, 0)
        if not _scopes:
            _scoped.clear()


def _copy(array):
    """``array`` copied into a frozen segment, or the copy made earlier in the open scope."""
    with _scope_lock:
        hit = _scoped.get(id(array)) if _scopes else None
    if hit is not None and hit[0]() is array:
        again = hit[1]() if isinstance(hit[1], weakref.ref) else hit[1]
        if again is not None:
            return again
    shared = share(array, reuse=False)
    try:
        ref = weakref.ref(array)
    except TypeError:
        return shared
    with _scope_lock:
        if _scopes:
            # Each copy kept costs an fd: beyond a share of the fd limit they are remembered
            # weakly (reused while a pending handoff still holds them, copied again after).
            budget = _scope_budget()
            strong = len(_scoped) < budget or sum(
                1 for _, c in _scoped.values() if not isinstance(c, weakref.ref)) < budget
            keep = shared if strong else weakref.ref(shared)
            _scoped[id(array)] = (ref, keep)
    return shared


def _scope_budget():
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(soft // 8, 1)


def _writable_copy(array):
    """A copy of ``array`` in a new writable segment, for a receiver that writes (mmap_mode
    "r+"): each handoff its own copy (never reused: the receiver changes it)."""
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    copy = empty(array.shape, array.dtype, order=order)
    copy[...] = array
    return copy


def _is_memmap(seg):
    return getattr(seg, "kind", None) == "memmap"


def export_for_receiver(view, *, copy_on_write=False, seg=None, shared_writes=False):
    """``(record, handle, kind, mode)`` for :func:`_rebuild`: ``view``'s fixed record with
    ``source`` "fd"; a DupFd handle of an open file description made for one receiver and
    locked shared (SPEC §7); what the file is, as its segment says: "memfd", "recyclable" (a
    memfd its producer recycles in place once no process maps it: :mod:`..segments.recycle`),
    or "file" for a named one (opened by its path here, or received as a named file's fd and
    handed on); and the mode the receiver maps with: "r" (read-only: what a pool hands on,
    arguments and results alike), "c" (copy-on-write, private to the receiver) with
    ``copy_on_write``, or with ``shared_writes`` (joblib's "r+" and "w+", and memmaps under
    joblib, as loky hands them on) "r+" for a writable view of a writable segment: the
    receiver's writes reach the sender's array. ``seg``: ``view``'s segment when the caller has
    found it already (:func:`segment_of`)."""
    mode = "r+" if shared_writes and view.flags.writeable else "r"
    found = _remembered_record(view, mode, seg)
    lazy = _lazy_offer(view, mode, *found) if found is not None else None
    if lazy is not None:
        return (*lazy, _kind_of(found[0]), _receiver_mode(mode, copy_on_write))
    quick = _export_remembered(*found, mode) if found is not None else None
    try:
        ex = quick or export(view, mode=mode)
    except (ValueError, errors.StridemapError):
        if mode == "r":
            raise
        mode = "r"
        ex = export(view, mode=mode)  # a writable view of a read-only segment
    record, fd = ex.record, ex.fd
    generation = getattr(ex.segment, "generation", None)
    try:
        if fd is None:  # a named segment or a memmap's file: open it once more, for this receiver
            desc = decode(record)
            fd = _open_again(desc)
            record = encode(dataclasses.replace(desc, source="fd", path=""))
            generation = desc.generation
        elif generation is None:
            generation = decode(record).generation
        header.lock_shared(fd, wait=generation != 0)
        try:
            handle = _dup_for_receiver(fd, view, ex.segment)
        except OSError as e:
            raise system_error("handing a shared array's fd to a pool process", e) from None
    finally:
        if fd is not None:
            os.close(fd)
    return record, handle, _kind_of(ex.segment), _receiver_mode(mode, copy_on_write)


def _kind_of(seg):
    kind = getattr(seg, "kind", None)
    if kind in ("file", "memmap"):
        return "file"
    return "recyclable" if isinstance(seg, Produced) and recycle.recyclable(seg) else "memfd"


def _receiver_mode(mode, copy_on_write):
    return "c" if copy_on_write and mode == "r" else mode


# Records of views of memfd segments whose records only the view's geometry changes, kept on
# the segment (``Produced.view_records``): frozen ones, and recycled ones (where a later
# generation's record is the earlier one's with the generation and checksum patched). A
# repeated handoff of the same view (the same array shared again, as a pool does call after
# call; a worker's result in a recycled segment) skips describing it (about 40 us of the 120 us
# a sender spends). Plain dict operations (atomic): two threads that race describe it twice.
_RECORDS_PER_SEGMENT = 64


def _remembered_record(view, mode, seg=None):
    """``(segment, record)`` of a view granted ``mode`` of a frozen (mode "r") or recycled
    memfd segment, its record remembered per segment; None for any other view. ``seg``:
    ``view``'s segment, when the caller has it."""
    if seg is None:
        seg = segment_of(view)
    if not isinstance(seg, Produced) or seg.kind != "memfd":
        return None
    if not (seg.frozen and mode == "r") and not recycle.recyclable(seg):
        return None
    key = (mode, view.__array_interface__["data"][0], view.shape, view.strides,
           view.dtype.str)
    generation = seg.generation
    records = seg.view_records
    known = records.get(key)
    if known is not None and known[0] == generation:
        return seg, known[1]
    if known is not None:
        record = with_generation(known[1], generation)
    else:
        record = seg.describe(view, mode)
    if len(records) >= _RECORDS_PER_SEGMENT:
        records.clear()
    records[key] = (generation, record)
    return seg, record


def _lazy_offer(view, mode, seg, record):
    """``(record, handle)`` of a lazy offer for ``view`` of the memfd segment ``seg``
    (``record`` its record, :func:`_remembered_record`) when every process connected to this
    one's fd channel maps ``seg`` already (it fetched or released an offer of it): no fd is made
    unless a receiver asks for one (one whose mapping went, or a new one). None otherwise (an fd
    is made now, which the receiver may take without a round trip)."""
    if _mp_context.get_spawning_popen() is not None:
        return None
    if not channel.mapped_by_every_peer(seg):
        return None

    def make(seg=seg, mode=mode):
        fd = seg.new_fd(mode)
        try:
            header.lock_shared(fd, wait=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    queue_offers.watch_call_queues()
    try:
        return record, channel.offer(None, view, seg, make, drained=True)
    except OSError:
        return None  # no channel: the usual way


def _export_remembered(seg, record, mode):
    """``stridemap.export(view, mode=mode)`` for a view of the memfd segment ``seg`` whose
    record (remembered per segment) is ``record``."""
    fd = seg.new_fd(mode)
    try:
        return Export(record, fd, seg)
    except BaseException:
        os.close(fd)
        raise


def _open_again(desc):
    flags = (os.O_RDWR if desc.mode == "r+" else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(desc.path, flags | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            raise system_error(f"opening {desc.path!r} for a pool process", e) from None
        raise errors.OpenFailed(
            f"cannot open {desc.path!r} again to hand it to a pool worker: {e.strerror}",
            e.errno,
        ) from None
    st = os.fstat(fd)
    if desc.inode and (st.st_dev, st.st_ino) != (desc.device, desc.inode):
        os.close(fd)
        raise errors.IdentityMismatch(
            f"{desc.path!r} was replaced after it was described (device {st.st_dev} inode "
            f"{st.st_ino}, described as {desc.device} {desc.inode}); describe the array again"
        )
    return fd


def _dup_for_receiver(fd, keep, holding=None):
    """multiprocessing's fd handle; the caller closes ``fd`` right after. ``keep`` (the array)
    is held until the receiver has fetched the fd: a worker that returns an array and drops it
    at once would otherwise unmap it (page tables to tear down) while its receiver waits for
    the fd."""
    popen = _mp_context.get_spawning_popen()
    if popen is not None:
        # Process.start() of spawn/forkserver: the fd is inherited, not duplicated; keep a
        # duplicate until the Popen object (which launched the child) goes.
        dup = os.dup(fd)
        weakref.finalize(popen, os.close, dup)
        return popen.DupFd(popen.duplicate_for_child(dup))
    queue_offers.watch_call_queues()  # loky may have been imported since install()
    dup = os.dup(fd)
    try:
        handle = channel.offer(dup, keep, holding)
    except OSError as e:  # this process cannot listen: one resource_sharer connection per fd
        os.close(dup)
        log.debug("stridemap.pools: no fd channel (%s); using multiprocessing's DupFd", e)
    else:
        _ensure_exit_wait()
        return handle
    handle = _mp_reduction.DupFd(fd)
    _track(handle)
    _hold_until_fetched(handle, keep)
    return handle


def _hold_until_fetched(handle, keep):
    """Make the resource_sharer's close of ``handle`` (once sent) also let go of ``keep``."""
    sharer = getattr(_resource_sharer, "_resource_sharer", None)
    ident = getattr(handle, "_id", None)
    cache, lock = getattr(sharer, "_cache", None), getattr(sharer, "_lock", None)
    if ident is None or cache is None or lock is None:
        return  # another multiprocessing: the array is simply not held
    holder = [keep]
    # No receiver can ask for this key before the pickle that carries it has been sent, which
    # is after this returns: the entry cannot be popped under us.
    with lock:
        entry = cache.get(ident[1])
        if entry is None:
            return
        send, close = entry

        def release(close=close, holder=holder):
            try:
                close()
            finally:
                holder.clear()

        cache[ident[1]] = (send, release)


# A handle's fd waits in this process (its channel listener, or its resource_sharer thread)
# until its receiver asks for it:
# a process that exits before then (a Process whose last act is to put a result in a Queue, a
# pool worker retired by maxtasksperchild) would leave the receiver nothing to fetch. So at exit
# (multiprocessing's exit function, which its children run too) the process waits until its
# handles have been fetched, for up to EXIT_WAIT seconds, and only while a process that could
# fetch them lives (_a_receiver_may_live): the process that started it, a child (none are left
# by then in a pool's parent: multiprocessing has joined them), or a peer connected to its fd
# channel. The fds offered for tasks pickled into a broken pool's queue are never fetched, and
# the parent whose workers are gone no longer waits for them.
EXIT_WAIT = float(os.environ.get("STRIDEMAP_POOLS_EXIT_WAIT", "10"))
_pending = {"pid": None, "ids": set(), "finalizer": None}
_pending_lock = forksafe.Lock()


def _ensure_exit_wait():
    """Register the wait at exit, once per process. Early (at install, at the first receipt):
    multiprocessing's exit function lists its finalizers before it flushes the queues, whose
    feeder threads pickle, and so make handles, while it runs."""
    fin = _pending["finalizer"]
    if _pending["pid"] == os.getpid() and fin is not None and fin.still_active():
        return  # registered in this process, and not cleared since
    with _pending_lock:
        if _pending["pid"] != os.getpid():  # a fork starts with no handles of its own
            _pending["pid"] = os.getpid()
            _pending["ids"] = set()
            _pending["finalizer"] = None
        # A child clears the finalizers it inherited, or registered while it unpickled the
        # Process object, when it starts running: register again then.
        fin = _pending.get("finalizer")
        if fin is None or not fin.still_active():
            from multiprocessing import util

            # After the queues' feeder threads are flushed (exitpriority -5).
            _pending["finalizer"] = util.Finalize(None, _wait_for_receivers, exitpriority=-10)


def _track(handle):
    ident = getattr(handle, "_id", None)
    if ident is None:
        return
    _ensure_exit_wait()
    with _pending_lock:
        _pending["ids"].add(ident[1])
        _unlink_listener_after_wait()


def _unlink_listener_after_wait():
    """The resource_sharer's listener socket is unlinked by a finalizer of exit priority 0, which
    multiprocessing's exit function runs before the wait above (-10): a receiver that asks for
    its fd during the wait would find no socket (FileNotFoundError). Move that unlink after the
    wait (-20), once per listener. Called with _pending_lock held."""
    from multiprocessing import util

    sharer = getattr(_resource_sharer, "_resource_sharer", None)
    inner = getattr(getattr(sharer, "_listener", None), "_listener", None)
    unlink = getattr(inner, "_unlink", None)
    key = getattr(unlink, "_key", None)
    args = getattr(unlink, "_args", None)
    if key is None or not args or key[0] is None or key[0] < -10 or not unlink.still_active():
        return  # no listener yet, already moved, or another multiprocessing
    unlink.cancel()
    inner._unlink = util.Finalize(inner, os.unlink, args=tuple(args), exitpriority=-20)


def _unfetched():
    cache = getattr(getattr(_resource_sharer, "_resource_sharer", None), "_cache", None)
    if cache is None:
        return set()
    with _pending_lock:
        if _pending["pid"] != os.getpid():
            return set()
        _pending["ids"] &= set(cache)
        return set(_pending["ids"])


def _a_receiver_may_live():
    """Whether a process that could still fetch this process's fds lives: a process connected
    to its fd channel, a child of its own, or the process that started it. At exit
    ``multiprocessing`` has joined (or terminated) the children already: in a pool's parent
    whose workers are gone, nothing is left that could fetch the fds offered for tasks that
    never reached a worker (pickled into a broken pool's queue)."""
    if channel.peers():
        return True
    if _mp_process.active_children():
        return True
    parent = _mp_process.parent_process()
    if parent is not None:
        return parent.is_alive()
    ppid = getattr(_mp_process.current_process(), "_parent_pid", None)
    if ppid is None:  # the main process
        return False
    try:
        os.kill(ppid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def _wait_for_receivers():
    import time

    deadline = time.monotonic() + EXIT_WAIT
    while _unfetched() or channel.pending():
        if not _a_receiver_may_live():
            log.info("stridemap.pools: exiting with %d shared array(s) never received: no "
                     "process that could receive them is alive (no child, parent or peer "
                     "connected)", len(_unfetched()) + channel.pending())
            return
        if time.monotonic() >= deadline:
            log.warning(
                "stridemap.pools: exiting with %d shared array(s) never received (their "
                "receivers did not unpickle them within %g s); set STRIDEMAP_POOLS_EXIT_WAIT "
                "to wait longer", len(_unfetched()) + channel.pending(), EXIT_WAIT)
            return
        time.sleep(0.01)


def _detach(handle, expect=None):
    """The fd a handle carries, close-on-exec, owned by the caller. ``expect``: the device and
    inode the record names (a channel's handle may then be taken without a round trip)."""
    if type(handle) is fetch.ChannelFd:
        return handle.detach(expect)
    if isinstance(handle, _resource_sharer.DupFd):
        get_connection = getattr(_resource_sharer._ResourceSharer, "get_connection", None)
        ident = getattr(handle, "_id", None)
        if get_connection is not None and ident is not None:
            with get_connection(ident) as conn:
                return _recv_fd_cloexec(conn.fileno())
    fd = handle.detach()  # inherited at start, or an older multiprocessing: then set it
    os.set_inheritable(fd, False)
    return fd


def _recv_fd_cloexec(conn_fd):
    """multiprocessing.reduction.recvfds for one fd, with MSG_CMSG_CLOEXEC: never inheritable."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=conn_fd)  # no dup: no new fd
    try:
        msg, ancillary, flags, _ = s.recvmsg(
            1, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC
        )
    finally:
        s.detach()  # the connection closes its fd
    fds = []
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds.extend(int.from_bytes(data[i:i + 4], "little" if _LE else "big", signed=True)
                       for i in range(0, len(data) - len(data) % 4, 4))
    if flags & socket.MSG_CTRUNC and not fds:
        for fd in fds:
            os.close(fd)
        raise errors.OpenFailed(
            "the fd of a shared array was dropped on receipt: this process is out of file "
            "descriptors (received arrays hold none, but the fds in flight do); raise the limit "
            "(ulimit -n, resource.setrlimit(RLIMIT_NOFILE)) or let go of received arrays",
            errno.EMFILE,
        )
    if not msg and not fds:
        raise errors.OpenFailed(
            "the process that sent this array could not hand over its fd (it may be out of "
            "file descriptors itself: see its log) or is gone"
        )
    if len(fds) != 1 or msg != b"\x01" or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise errors.OpenFailed(
            f"the pool's fd handoff sent {len(fds)} fds (message {msg!r}), expected exactly one"
        )
    return fds[0]


_LE = np.little_endian


def _rebuild(record, handle, kind, mode, policy):
    """The receiving end: map the descriptor's fd (then close it) and return the array, or,
    when that fails, a stand-in that raises the error where it is used (never raised here).
    ``kind`` is the sender's word for the fd: "file" (a named file's), else a memfd's
    ("recyclable": one its producer recycles in place, kept as :mod:`.mapcache` says)."""
    if _installed is None or _provisional:
        install(_policy_of(policy))  # results and onward tasks go back the same way
    _ensure_exit_wait()
    named = kind == "file"
    try:
        desc = decode(record)
    except Exception as e:  # noqa: BLE001
        _release(handle)
        return unreceived.stand_in(e)
    key = None
    if mode != "c":  # a private copy-on-write map is never shared by two arrays
        key = mapcache.key_of(_sender_of(handle), desc, mode, named, kind == "recyclable")
        try:
            hit = mapcache.lookup(key, desc)
        except Exception as e:  # noqa: BLE001 - a bug of the cache costs a miss, not the pool
            log.warning("stridemap.pools: the mapping cache failed (%r); receiving anew", e)
            hit = None
        if hit is not None:
            _release(handle)
            return _as_shared(hit)
    try:
        fd = _detach(handle, (desc.device, desc.inode) if desc.inode else None)
    except Exception as e:  # noqa: BLE001 - any failure: the task gets it, not the pool
        return unreceived.stand_in(e)
    try:
        array = open_handed(record, fd, mode=mode, named=named)
    except Exception as e:  # noqa: BLE001
        return unreceived.stand_in(e)
    finally:
        os.close(fd)
    sender = handle.pid if type(handle) is fetch.ChannelFd else None
    return _as_shared(mapcache.remember(key, array, sender))


def _policy_of(wire):
    """The :class:`Policy` a sender's ``(numpy, max_nbytes)`` (or a Policy) stands for; the
    default for anything else (a receive never fails on it).

    >>> _policy_of((True, 4096)), _policy_of(None)
    (Policy(numpy=True, max_nbytes=4096), Policy(numpy=False, max_nbytes=1048576))
    """
    if isinstance(wire, Policy):
        return wire
    try:
        return Policy(*wire)
    except (TypeError, ValueError):
        return Policy()


def _sender_of(handle):
    """Who handed ``handle``: its channel's or resource_sharer's address; None for an fd
    inherited at a process's start (never cached: no later handle comes from there)."""
    if type(handle) is fetch.ChannelFd:
        return handle.address
    ident = getattr(handle, "_id", None)
    if isinstance(handle, _resource_sharer.DupFd) and ident is not None:
        return ident[0]
    return None


def _release(handle):
    """A handle whose fd is not needed (its segment is mapped already): the sender lets go of
    it all the same."""
    if type(handle) is fetch.ChannelFd:
        handle.release()
        return
    try:
        os.close(_detach(handle))
    except Exception as e:  # noqa: BLE001 - the array is fine; the sender's copy is its own
        log.debug("stridemap.pools: letting go of an unneeded fd failed: %s", e)


def _as_shared(array):
    return array.view(SharedArray)


def _reset_reuse_scopes_in_child():
    global _scopes
    _scopes = 0
    _scoped.clear()


os.register_at_fork(after_in_child=_reset_reuse_scopes_in_child)
