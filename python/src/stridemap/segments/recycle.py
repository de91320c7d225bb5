"""A producer's recycled segments: :func:`stridemap.empty` takes a segment that an earlier
``empty()`` array let go of before it makes a new one.

A new segment costs a memfd, a map, and a page fault and a zeroed page per 4 KiB as it is
filled; a pool worker that returns a result per task pays that every task (issue #21). A
recycled one costs two ``flock`` calls and a 64-byte header write, and its pages are there.

Which segments: memfds in base pages made by ``empty()`` (a frozen one is sealed for good and
never comes back; a named file's recycling is not worth its unlink rules). Once no array of a
segment lives in this process (:mod:`.lease`: every view ended), it waits here, mapped, with
its fd. ``empty()`` of ``n`` bytes takes the smallest waiting segment of ``n`` to
``2 n + 1 MiB`` bytes that no other process maps: its exclusive lock (SPEC §7.3) is taken
with ``LOCK_EX | LOCK_NB``, which fails while any receiver holds its shared lock, so a
consumer's view never changes under it. Then the header gets the next generation (SPEC §8):
a descriptor of the earlier use that arrives late is refused (O10); the lock goes back to
shared. The contents are what the earlier use left (as ``numpy.empty``'s are whatever was
there).

Bounds: at most :data:`MAX_COUNT` segments and :data:`MAX_BYTES` bytes wait at once (the
oldest go first). One waiting :data:`KEEP_SECONDS` gives its pages back: with the exclusive
lock (no other process maps it; else it is tried again at the next sweep) its data area is
punched out (``FALLOC_FL_PUNCH_HOLE``) and its header gets the next generation. Such a
*hollow* segment holds its header page, its fd and its map (address space), no data; at most
:data:`MAX_HOLLOW` of them wait :data:`HOLLOW_SECONDS` more (a thread checks). ``empty()``
takes a hollow one when no full one fits: admitted and reserved again (SPEC §7.6,
``posix_fallocate``, as a new segment is) before any array of it exists, so a receiver that
kept its mapping (SPEC §6 case 3b) is served the next result from it, with no fd, map or
round trip, even when results come minutes apart (issue #21: a 64 MiB result every few
seconds missed every time). Forks: a child starts with none waiting, and a use that was live
when the process forked never comes back (the child may still hold arrays of it:
:mod:`.lease`).

>>> import stridemap
>>> a = stridemap.empty(1000, "<f8")
>>> seg, gen = a.segment, a.segment.generation
>>> del a
>>> b = stridemap.empty(1000, "<f8")
>>> b.segment is seg, seg.generation - gen
(True, 1)
"""

import collections
import fcntl
import functools
import logging
import mmap
import os
import sys
import threading
import time

from .. import forksafe
from ..codec import errors
from .header import encode_header, with_generation

log = logging.getLogger("stridemap")

MAX_COUNT = 8
KEEP_SECONDS = float(os.environ.get("STRIDEMAP_RECYCLE_SECONDS", "5"))
#: Seconds a hollow segment waits after :data:`KEEP_SECONDS` (``STRIDEMAP_RECYCLE_HOLLOW_SECONDS``;
#: 0: none is made hollow, a segment is let go after :data:`KEEP_SECONDS`).
HOLLOW_SECONDS = max(float(os.environ.get("STRIDEMAP_RECYCLE_HOLLOW_SECONDS", "60")), 0.0)
MAX_HOLLOW = 8
_LOOSE = 1 << 20  # a segment of up to 2 n + this many bytes serves a request of n


def _max_bytes():
    env = os.environ.get("STRIDEMAP_RECYCLE_BYTES")
    if env is not None:
        return max(int(env), 0)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 16 << 30
    return min(2 << 30, total // 16)


#: At most this many bytes of segments wait for reuse: ``STRIDEMAP_RECYCLE_BYTES``, else 2 GiB
#: or a sixteenth of the machine's memory when that is less. Segments larger are never kept.
MAX_BYTES = _max_bytes()


_lock = forksafe.Lock()
_free = []  # [(seg, mm, since)], oldest first
_hollow = []  # [(seg, mm, since)]: pages given back (see the module), oldest first
_returned = collections.deque()  # (seg, mm) whose last array went, not yet in _free
# "uses": uses begun (counted under _lock); "ended": uses ended (counted in the callbacks, a
# lost count keeps the sweeper alive, nothing worse).
_state = {"pid": os.getpid(), "sweeper": None, "taken": 0, "refilled": 0, "uses": 0,
          "ended": 0}


def recyclable(seg):
    """Whether ``seg`` (a :class:`~.make.Produced`) comes back here when its arrays are gone."""
    return (getattr(seg, "kind", None) == "memfd" and not seg.frozen
            and not seg.huge_plan.huge and seg.capacity > 0 and seg.file_len <= MAX_BYTES
            and getattr(seg, "_recyclable", False))


#: Called (without arguments) before :func:`take` looks: what holds arrays for receivers that
#: may have let go of them already learns so (the fd channel reads its mailboxes).
before_take = []


def take(capacity):
    """``(seg, mm)``: a waiting segment of at least ``capacity`` data bytes, recycled (next
    generation, shared lock), with its writable map; None when none fits or all are mapped
    elsewhere."""
    if capacity <= 0:
        return None
    for hook in before_take:
        hook()
    gone = []
    hollow = None
    with _lock:
        _reset_if_forked(gone)
        _drain(gone)
        for entry in _fitting(_free, capacity):
            if _recycle(entry[0]):
                _free.remove(entry)
                _state["taken"] += 1
                return entry[0], entry[1]
        for entry in _fitting(_hollow, capacity):
            _hollow.remove(entry)
            if _recycle(entry[0]):
                hollow = entry
                break
            gone.append(entry)  # mapped elsewhere: a hollow segment is not worth the wait
    del gone
    if hollow is None or not _refill(hollow[0], hollow[1]):
        return None
    with _lock:
        _state["taken"] += 1
        _state["refilled"] += 1
    return hollow[0], hollow[1]


def _fitting(entries, capacity):  # with _lock held
    return sorted((e for e in entries if capacity <= e[0].capacity <= 2 * capacity + _LOOSE),
                  key=lambda e: e[0].capacity)


def _refill(seg, mm):
    """A hollow segment just recycled (this process's alone): its data area admitted and
    reserved again, as a new segment's is (:func:`.make.make`), its pages faulted in as
    :func:`.fresh.populate` does for a new one. False (``seg`` let go of) when that fails: the
    caller makes a new segment, which reports the error."""
    from . import admit, fresh

    try:
        admit.check(seg.capacity, "memfd")
        os.posix_fallocate(seg.fd, seg.data_offset, seg.capacity)
    except (OSError, errors.NoSpace) as e:
        log.debug("stridemap: a hollow segment could not be reserved again (%s)", e)
        return False
    fresh.populate(mm, seg.data_offset, seg.capacity)
    return True


def _recycle(seg, hollow=False):
    """SPEC §7.3 and §8: the exclusive lock (no other process maps ``seg``), its data area
    punched out when ``hollow``, the next generation's header, the shared lock again. True
    when done; None when another process maps it; False when it failed otherwise (the pages
    could not be given back, the header not written)."""
    fd = seg.fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a failed conversion may have dropped the shared one
        return None
    try:
        if hollow and not _punch(fd, seg.data_offset, -(-seg.capacity // _PAGE) * _PAGE):
            return False
        generation = seg.generation + 1
        head = _next_header(seg, generation)
        if os.pwrite(fd, head, 0) != len(head):
            return False
        seg.generation = generation
        seg._header = (generation, os.getpid(), head)
        return True
    except OSError:
        return False
    finally:
        fcntl.flock(fd, fcntl.LOCK_SH)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x1, 0x2
_PAGE = mmap.PAGESIZE  # a partial last page is punched whole (past the end of the file)


@functools.lru_cache(maxsize=None)
def _fallocate():
    """libc's ``fallocate`` through ctypes, or None."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


def _punch(fd, offset, length):
    """Give back the pages of ``fd`` from ``offset`` for ``length`` bytes (its size kept):
    they read as zeros, and hold no memory. False when the kernel or libc cannot."""
    fn = _fallocate()
    return fn is not None and fn(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset,
                                 length) == 0


def _next_header(seg, generation):
    """The header of ``seg``'s next use: the last one written here patched to ``generation``
    (:func:`.header.with_generation`), or a new one."""
    last = getattr(seg, "_header", None)  # (generation, pid, bytes) of the last one written
    if last is not None and last[:2] == (seg.generation, os.getpid()):
        return with_generation(last[2], generation)
    return encode_header(seg.segment_id, generation, capacity=seg.capacity,
                         owner_pid=os.getpid(), data_offset=seg.data_offset)


def on_gone(seg, mm):
    """The callback for the lease of a new use of ``seg`` (:func:`.lease.view`); the use is
    counted, and the thread that lets go of waiting segments in time is started (here, never
    in the callback: a thread started from a finalizer can deadlock, and hangs at exit)."""
    with _lock:
        _state["uses"] += 1
        _start_sweeper()
    return functools.partial(_returns, seg, mm)


def _returns(seg, mm, forked):
    # Runs wherever the last array went (a finalizer): queue, then take the lock only if free.
    _state["ended"] += 1
    if forked or sys.is_finalizing() or not recyclable(seg):
        return  # let go: seg and mm go with this call's references
    _returned.append((seg, mm))
    if _lock.acquire(blocking=False):
        gone = []
        try:
            _reset_if_forked(gone)
            _drain(gone)
        finally:
            _lock.release()
        del gone


def _drain(gone):  # with _lock held; what is let go is appended to gone
    now = time.monotonic()
    while _returned:
        seg, mm = _returned.popleft()
        if recyclable(seg):
            _free.append((seg, mm, now))
    budget = MAX_BYTES
    total = sum(e[0].file_len for e in _free)
    while _free and (len(_free) > MAX_COUNT or total > budget):
        e = _free.pop(0)
        total -= e[0].file_len
        gone.append(e)


def sweep(now=None):
    """Make the segments waiting longer than :data:`KEEP_SECONDS` hollow, and let go of the
    hollow ones waiting :data:`HOLLOW_SECONDS` more. One another process still maps (a caller
    holds a result longer than the wait) stays as it is and is tried again at the next sweep,
    up to that time too: its pages are held by that reader anyway, and once it lets go the
    segment is reused or made hollow. One that cannot be made hollow is let go, as every one
    is with hollowing turned off."""
    now = time.monotonic() if now is None else now
    gone = []
    with _lock:
        _reset_if_forked(gone)
        _drain(gone)
        keep = []
        for e in _free:
            age = now - e[2]
            if age < KEEP_SECONDS:
                keep.append(e)
                continue
            done = (_recycle(e[0], hollow=True)
                    if HOLLOW_SECONDS > 0 and age < KEEP_SECONDS + HOLLOW_SECONDS else False)
            if done:
                _hollow.append(e)
            elif done is None:
                keep.append(e)
            else:
                gone.append(e)
        _free[:] = keep
        old = [e for e in _hollow if now - e[2] >= KEEP_SECONDS + HOLLOW_SECONDS]
        old.extend(_hollow[:max(len(_hollow) - len(old) - MAX_HOLLOW, 0)])
        gone.extend(old)
        _hollow[:] = [e for e in _hollow if not any(e is o for o in old)]
    del gone


def clear():
    """Let go of every waiting segment now."""
    gone = []
    with _lock:
        _drain(gone)
        gone.extend(_free)
        gone.extend(_hollow)
        _free.clear()
        _hollow.clear()
    del gone


def stats():
    """``{"waiting", "bytes", "hollow", "taken", "refilled"}``: segments waiting now with their
    pages, their bytes, hollow ones waiting, how many ``empty()`` calls of this process took
    a recycled one, and how many of those a hollow one."""
    gone = []
    with _lock:
        _reset_if_forked(gone)
        _drain(gone)
        out = {"waiting": len(_free), "bytes": sum(e[0].file_len for e in _free),
               "hollow": len(_hollow), "taken": _state["taken"],
               "refilled": _state["refilled"]}
    del gone
    return out


def _start_sweeper():  # with _lock held; never from a finalizer
    t = _state["sweeper"]
    if (t is not None and t.is_alive()) or sys.is_finalizing():
        return
    t = threading.Thread(target=_sweep_loop, name="stridemap-recycle", daemon=True)
    _state["sweeper"] = t
    try:
        t.start()
    except RuntimeError:  # no thread to be had: waiting segments go at the next take
        _state["sweeper"] = None


def _sweep_loop():
    while True:
        time.sleep(max(KEEP_SECONDS / 2, 0.05))
        sweep()
        with _lock:  # gone once nothing waits and no use that could come back lives
            if (not _free and not _hollow and not _returned
                    and _state["ended"] >= _state["uses"]):
                _state["sweeper"] = None
                return


def _reset_if_forked(gone):  # with _lock held
    if _state["pid"] != os.getpid():
        _state.update(pid=os.getpid(), sweeper=None, taken=0, refilled=0, uses=0, ended=0)
        gone.extend(_free)
        gone.extend(_hollow)
        _free.clear()
        _hollow.clear()
        _returned.clear()


def _after_fork_in_child():
    _free.clear()
    _hollow.clear()
    _returned.clear()
    _state.update(pid=os.getpid(), sweeper=None, taken=0, refilled=0, uses=0, ended=0)


os.register_at_fork(after_in_child=_after_fork_in_child)
