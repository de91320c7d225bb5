"""A receiver's mappings of the segments it was handed, kept for the next descriptor of the same
segment (issue #21): a pool that hands the same array call after call is mapped once.

Keyed by the sender (its channel address), the segment's id and generation, the mode granted
and what the sender said the fd is. An entry lives as long as any array of its mapping lives,
and :data:`GRACE` seconds after the last one went (at most :data:`HELD` such entries): a worker
that drops its argument at the end of each task still finds it for the next.

Why a hit needs no new check (SPEC §6, reuse under the same policy): the mapping holds the open
file description its first receive checked (O6-O11), and with it the shared lock of SPEC §7,
so the producer cannot have recycled the segment under it (recycling takes the exclusive lock
first): its generation, the key, is still the one checked. What a hit compares is the rest of
the record against the checked one: device, inode, file length and buffer must be the same,
else it is a miss. A memfd was sealed against shrinking when first checked (O9). A named file
can still be truncated by its owner: a hit on one needs the fd kept for handing views on
(``segments.backing``), whose size is checked again (``fstat``); without one it is a miss.
Only segments (``generation`` != 0, a segment id) are kept: a plain file has no generation
that says it is unchanged.

A segment its producer recycles in place (the sender says "recyclable": a pool worker's
``stridemap.empty()`` results, :mod:`stridemap.segments.recycle`) is kept another way (SPEC §6,
reusing a mapping, case 3, and §7.1): keyed without the generation, by sender, segment id and
mode granted, with a duplicate of the fd its first receive checked (the same open file
description, so the same lock). Its arrays are of a use (:mod:`stridemap.segments.lease`), and
when the last array of every use is gone the shared lock is let go (``LOCK_UN``) while the
mapping stays: the producer may then recycle the segment. A later descriptor of it is served
from the mapping after the shared lock is taken again (``LOCK_SH | LOCK_NB``; busy is a miss)
and the header read again through that fd matches it (O10: the generation it names is the
segment's now); device, inode, file length and buffer must be the ones first checked, and the
memfd's length was sealed then (O9). While a use lives the lock is held, so only its own
generation is served. A fork while a use lives pins the entry: its lock is never let go (the
child may hold the use's arrays), and only that generation is served. Such a mapping is kept
:data:`RECYCLED_GRACE` seconds after its last view went (as long as its producer keeps the
segment waiting with its pages), and at most ``recycle.MAX_BYTES`` of them per sender (what
its producer keeps waiting, at most). Then, while its
segment holds no more than :data:`HOLLOW_BYTES` (``st_blocks`` of the kept fd: its producer
gave its pages back, ``recycle.HOLLOW_SECONDS``), it is kept as long again as the producer
keeps a hollow segment: it holds no memory, and the producer's next result in it is served
from it. One whose segment still holds its pages :data:`STILL_FULL` seconds after its grace is
let go (its producer is gone, or let go of it: the mapping would be all that keeps the memory).
One whose sender has exited (``maxtasksperchild``, a crash, a pool shut down: a pidfd of the
sending process, :class:`_Sender`, polls readable) is let go of at the next sweep once its last
view went, full or hollow: no later result can come in it, and its memory is then freed.

>>> stats()["entries"] >= 0
True
"""

import collections
import errno
import fcntl
import functools
import mmap
import os
import select
import threading
import time
import weakref

import numpy as np

from .. import forksafe
from ..segments import backing, header, lease, recycle
from . import channel

GRACE = float(os.environ.get("STRIDEMAP_MAP_GRACE", "1.0"))
# A segment recycled in place waits in its producer for recycle.KEEP_SECONDS: its mapping is
# kept as long (the next result in it is a hit), and at most recycle.MAX_BYTES of such mappings
# with no view (what a producer let go of meanwhile is memory only they still hold).
RECYCLED_GRACE = max(GRACE, recycle.KEEP_SECONDS)
# ... and once its segment is hollow (recycle.HOLLOW_SECONDS), as long as the producer keeps it.
HOLLOW_GRACE = recycle.HOLLOW_SECONDS
#: A kept segment holding at most this many bytes (its header page) holds no data.
HOLLOW_BYTES = 64 << 10
#: Seconds past its grace a kept mapping whose segment still holds its pages stays: the
#: producer learns of the release from its mailbox (read at least every
#: ``channel.MAILBOX_PERIOD_MAX``: a hit fetched no fd, so nothing else tells it), keeps the
#: segment waiting ``recycle.KEEP_SECONDS``, and its sweeper, which runs every half of that,
#: makes it hollow; one second more for a busy machine (at least the grace again).
STILL_FULL = max(RECYCLED_GRACE, channel.MAILBOX_PERIOD_MAX + 1.5 * recycle.KEEP_SECONDS + 1.0
                 - RECYCLED_GRACE)
#: The longest a kept mapping of a recycled segment stays once its last view went.
LONGEST_KEPT = RECYCLED_GRACE + max(HOLLOW_GRACE, STILL_FULL)
HELD = 32
IDLE_EXIT = 10.0  # seconds the sweeping thread waits with nothing to sweep before it ends

_lock = forksafe.Lock()
_entries = {}  # key -> weakref(mmap)
_held = collections.OrderedDict()  # key -> (mmap, deadline): kept alive for the grace
_state = {"pid": None, "sweeper": None, "hits": 0, "misses": 0}
_recycled = collections.OrderedDict()  # key -> _Recycled, least recently served first
_ended = collections.deque()  # (_Recycled, forked) of uses that ended, not yet counted


class _Recycled:
    """A kept mapping of a segment recycled in place: see the module."""

    __slots__ = ("mm", "seg", "fd", "generation", "uses", "pinned", "deadline", "hollow",
                 "full_since", "sender")

    def __init__(self, mm, seg, fd, generation, sender=None):
        self.mm, self.seg, self.fd, self.generation = mm, seg, fd, generation
        self.sender = sender  # the _Sender that handed it, or None (not known)
        self.uses, self.pinned = 1, False
        self.deadline = time.monotonic() + RECYCLED_GRACE
        self.hollow = False  # found holding no data once its deadline passed
        self.full_since = None  # since when it was found holding data past its deadline

    def expired(self, now):
        """Whether, with no view left, this mapping is let go of at ``now`` (see the module):
        past its deadline, once its segment was found holding its pages for
        :data:`STILL_FULL` seconds in a row. A hollow one found full again was taken by its
        producer for a new result (reserved again), which is on its way: counted anew."""
        if now < self.deadline:
            return False
        if now >= self.deadline - RECYCLED_GRACE + LONGEST_KEPT:
            return True
        try:
            self.hollow = os.fstat(self.fd).st_blocks * 512 <= HOLLOW_BYTES
        except OSError:
            return True
        if self.hollow:
            self.full_since = None
            return False
        if self.full_since is None:
            self.full_since = now
        return now >= self.full_since + STILL_FULL


class _Sender:
    """The process that handed kept mappings of recycled segments, watched through a pidfd
    (``pidfd_open``), which polls readable once that process has exited, whatever became of
    its pid since. Its pid is the one its pickles carry; a sender of another pid namespace may
    name another process or none: then its mappings go by the timers alone, or at its exit.
    Without pidfds (Linux before 5.3) nothing is known and the timers decide."""

    __slots__ = ("pid", "pidfd", "gone")

    def __init__(self, pid):
        self.pid, self.pidfd, self.gone = pid, None, False
        try:
            self.pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError, TypeError, ValueError, OverflowError) as e:
            # ESRCH: it exited (and was reaped) already; anything else: not known.
            self.gone = getattr(e, "errno", None) == errno.ESRCH

    def exited(self):
        """Whether the process has exited (a zombie included)."""
        if not self.gone and self.pidfd is not None:
            try:
                p = select.poll()
                p.register(self.pidfd, select.POLLIN)
                self.gone = bool(p.poll(0))
            except (OSError, ValueError):
                pass
        return self.gone

    def close(self):
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None


_senders = {}  # pid -> _Sender, for the entries of _recycled (closed once none is left)


def _sender(pid):  # with _lock held
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return None
    s = _senders.get(pid)
    if s is None:
        s = _senders[pid] = _Sender(pid)
    return s


def _close_senders(keep=()):  # with _lock held, or in a forked child
    for pid in [p for p in _senders if p not in keep]:
        _senders.pop(pid).close()


def key_of(sender, desc, granted, named, recycled=False):
    """The cache key of a record ``desc`` handed by ``sender``, or None when it is not kept.
    ``recycled``: the sender says its producer recycles the segment in place."""
    if desc.generation == 0 or desc.segment_id == bytes(16) or desc.buffer_len == 0:
        return None
    if recycled:
        if sender is None or granted == "c" or named:
            return None
        return ("recycled", sender, desc.segment_id, granted)
    return (sender, desc.segment_id, desc.generation, granted, named)


def lookup(key, desc):
    """The array ``desc`` describes, viewed in the mapping kept under ``key``; None on a miss."""
    if key is None:
        return None
    if key[0] == "recycled":
        return _serve_recycled(key, desc)
    with _lock:
        gone = _reset_if_forked()
        ref = _entries.get(key)
        mm = ref() if ref is not None else None
        if mm is not None and key in _held:
            _held[key] = (mm, time.monotonic() + GRACE)
    del gone
    if mm is None:
        _count("misses")
        return None
    seg = backing._mappings.get(mm)
    d = getattr(seg, "_desc", None)
    if d is None or (d.device, d.inode, d.file_len, d.buffer_offset, d.buffer_len) != (
            desc.device, desc.inode, desc.file_len, desc.buffer_offset, desc.buffer_len):
        _count("misses")
        return None
    if seg.kind == "file" and not _still_whole(seg, desc):
        _count("misses")
        return None
    delta = desc.buffer_offset % mmap.ALLOCATIONGRANULARITY
    _count("hits")
    return np.ndarray(desc.shape, np.dtype(desc.dtype), buffer=mm, offset=delta + desc.offset,
                      strides=desc.strides)


def _still_whole(seg, desc):
    fd = getattr(seg, "_fd", None)
    if fd is None:
        return False
    try:
        return os.fstat(fd).st_size >= desc.file_len
    except OSError:
        return False


def _same_file(d, desc):
    return d is not None and (d.device, d.inode, d.file_len, d.buffer_offset, d.buffer_len) == (
        desc.device, desc.inode, desc.file_len, desc.buffer_offset, desc.buffer_len)


def _serve_recycled(key, desc):
    gone = []
    with _lock:
        gone.append(_reset_if_forked())
        if _ended:
            _count_ended()
            gone.extend(_over_budget())
        e = _recycled.get(key)
        if e is None or not _same_file(getattr(e.seg, "_desc", None), desc):
            e = None
        elif e.uses == 0 and not e.pinned:
            if not _lock_and_check(e, desc):
                e = None
        elif desc.generation != e.generation:
            e = None  # the lock is held: no other generation can be the segment's now
        if e is not None:
            e.uses += 1
            e.hollow, e.full_since = False, None
            _recycled.move_to_end(key)
            _state["hits"] += 1
        else:
            _state["misses"] += 1
    del gone
    _count_ended_if_free()
    if e is None:
        return None
    try:
        return lease.view(e.mm, e.seg._buf_addr + desc.offset, desc.shape, desc.dtype,
                          desc.strides, writable=key[3] == "r+",
                          on_gone=functools.partial(_use_ended, e))
    except BaseException:
        _use_ended(e, False)
        raise


def _lock_and_check(e, desc):  # with _lock held
    """SPEC §7.1 and O10 again on the kept open file description, for ``desc``'s generation."""
    try:
        fcntl.flock(e.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False  # being recycled right now, or gone: received anew
    try:
        found = header.read_header(e.fd)
    except Exception:  # noqa: BLE001 - whatever it is, a miss (received anew), never the lock
        found = None
    if found is None or not found.matches(desc):
        _unlock(e)
        return False
    e.generation = desc.generation
    e.seg._desc = desc
    e.seg.generation = desc.generation
    return True


def _unlock(e):
    try:
        fcntl.flock(e.fd, fcntl.LOCK_UN)
    except OSError:
        pass


def _use_ended(e, forked):
    # A lease's callback (.segments.lease): it may run while this thread holds _lock, so it
    # queues, and counts only if the lock is free.
    _ended.append((e, forked))
    _count_ended_if_free()


def _count_ended_if_free():
    gone = []  # mappings over the bytes bound: unmapped after the lock is released
    while _ended and _lock.acquire(blocking=False):
        try:
            _count_ended()
            gone.extend(_over_budget())
        finally:
            _lock.release()
    del gone


def _count_ended():  # with _lock held
    now = time.monotonic()
    while _ended:
        e, forked = _ended.popleft()
        if forked:
            e.pinned = True
        e.uses -= 1
        if e.uses == 0:
            e.deadline = now + RECYCLED_GRACE
            if not e.pinned:
                _unlock(e)


def remember(key, array, sender_pid=None):
    """Keep the mapping behind ``array`` (just received) under ``key``; returns the array to
    hand out (for a recycled segment, the same view as a use of the kept mapping).
    ``sender_pid``: the pid of the process that handed it, when known (its exit lets go of a
    kept mapping of a recycled segment at once)."""
    if key is None:
        return array
    mm, _ = backing.backing(array)
    if mm is None:
        return array
    if key[0] == "recycled":
        return _remember_recycled(key, mm, array, sender_pid)
    gone = []  # mappings let go of: unmapped after the lock is released
    with _lock:
        gone.append(_reset_if_forked())
        _entries[key] = weakref.ref(mm, lambda _, key=key: _forget(key))
        gone.append(_held.get(key))
        _held[key] = (mm, time.monotonic() + GRACE)
        _held.move_to_end(key)
        while len(_held) > HELD:
            gone.append(_held.popitem(last=False))
        _start_sweeper()
    del gone
    return array


def _remember_recycled(key, mm, array, sender_pid):
    seg = backing._mappings.get(mm)
    fd = getattr(seg, "_fd", None)
    if fd is None or not _length_sealed(fd):
        # No fd kept (kept_fds_cap), or a file whose length may change: its lock lives with
        # the mapping, as for any receive (SPEC §6 case 3b asks for both).
        return array
    e = _Recycled(mm, seg, fd, seg._desc.generation)
    out = lease.view(mm, array.__array_interface__["data"][0], array.shape, array.dtype,
                     array.strides, writable=array.flags.writeable,
                     on_gone=functools.partial(_use_ended, e))
    gone = []
    with _lock:
        gone.append(_reset_if_forked())
        e.sender = _sender(sender_pid)
        gone.append(_recycled.pop(key, None))
        _recycled[key] = e
        while len(_recycled) > HELD:
            gone.append(_recycled.popitem(last=False))
        _start_sweeper()
    del gone
    return out


def _length_sealed(fd):
    try:
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
    except OSError:
        return False
    return seals & (_F_SEAL_SHRINK | _F_SEAL_GROW) == _F_SEAL_SHRINK | _F_SEAL_GROW


_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
_F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x2)
_F_SEAL_GROW = getattr(fcntl, "F_SEAL_GROW", 0x4)


def _forget(key):
    # A weakref callback: it may run while this thread holds _lock (an mmap let go of in
    # remember()), so it takes no lock; dict operations are atomic. At worst it drops an entry
    # just made again: a miss.
    ref = _entries.get(key)
    if ref is not None and ref() is None:
        _entries.pop(key, None)


def sweep(now=None):
    """Let go of the mappings whose grace is over, and of the kept mappings of recycled
    segments with no view left whose sender has exited (it hands nothing more in them).
    Arrays of them keep them alive still."""
    now = time.monotonic() if now is None else now
    with _lock:
        _count_ended()
        expired = [k for k, (_, deadline) in _held.items() if deadline <= now]
        gone = [_held.pop(k) for k in expired]
        expired = [k for k, e in _recycled.items() if e.uses == 0 and (
            (e.sender is not None and e.sender.exited()) or e.expired(now))]
        gone.extend(_recycled.pop(k) for k in expired)
        gone.extend(_over_budget())
        _close_senders(keep={e.sender.pid for e in _recycled.values() if e.sender is not None})
    del gone  # unmapped here, outside the lock, when no array holds them


def _over_budget():  # with _lock held; returns what the caller lets go of after it
    """The kept mappings of recycled segments with no view left and not hollow, least recent
    first, taken out until those left of each sender hold at most ``recycle.MAX_BYTES`` (what
    that sender's producer keeps waiting itself, at most): checked as each use ends, not only
    at the sweeps (40 results of 32 MiB in a second would otherwise all stay mapped)."""
    totals = collections.Counter()
    for k, e in _recycled.items():
        if e.uses == 0 and not e.hollow:
            totals[k[1]] += e.seg._desc.file_len
    gone = []
    for k, e in list(_recycled.items()):
        if totals[k[1]] <= recycle.MAX_BYTES:
            continue
        if e.uses == 0 and not e.hollow:
            totals[k[1]] -= e.seg._desc.file_len
            gone.append(_recycled.pop(k))
    return gone


def clear():
    """Let go of every kept mapping now (arrays of them keep them alive still)."""
    with _lock:
        _count_ended()
        gone = list(_held.values()) + list(_recycled.values())
        _held.clear()
        _recycled.clear()
        _close_senders()
    del gone


def stats():
    """``{"entries", "held", "recycled", "locked", "hits", "misses"}``: live keys, mappings
    kept for their grace, kept mappings of recycled segments and how many of them hold their
    lock (a use lives), and the lookups of this process."""
    with _lock:
        _count_ended()
        live = sum(1 for r in _entries.values() if r() is not None)
        return {"entries": live, "held": len(_held), "recycled": len(_recycled),
                "locked": sum(1 for e in _recycled.values() if e.uses or e.pinned),
                "hits": _state["hits"], "misses": _state["misses"]}


def _count(what):
    with _lock:
        _state[what] += 1


def _start_sweeper():  # with _lock held
    t = _state["sweeper"]
    if t is not None and t.is_alive():
        return
    t = threading.Thread(target=_sweep_loop, name="stridemap-map-cache", daemon=True)
    _state["sweeper"] = t
    t.start()


def _sweep_loop():
    period = max(GRACE / 2, 0.05)
    idle_since = None
    while True:
        time.sleep(period)
        sweep()
        with _lock:
            if _held or _recycled or _ended:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT:
                # Gone only after a while with nothing to keep: starting a thread costs a
                # receive more than the whole hit it serves.
                _state["sweeper"] = None
                return


def _reset_if_forked():  # with _lock held; returns what the caller lets go of after it
    if _state["pid"] != os.getpid():
        _state.update(pid=os.getpid(), sweeper=None, hits=0, misses=0)
        _entries.clear()
        gone = list(_held.values()) + list(_recycled.values())
        _held.clear()
        _recycled.clear()
        _ended.clear()
        _close_senders()
        return gone
    return None


os.register_at_fork(after_in_child=lambda: (_entries.clear(), _held.clear(), _recycled.clear(),
                                            _ended.clear(), _close_senders(),
                                            _state.update(pid=None, sweeper=None)))
