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

>>> stats()["entries"] >= 0
True
"""

import collections
import mmap
import os
import threading
import time
import weakref

import numpy as np

from .. import forksafe
from ..segments import backing

GRACE = float(os.environ.get("STRIDEMAP_MAP_GRACE", "1.0"))
HELD = 32
IDLE_EXIT = 10.0  # seconds the sweeping thread waits with nothing to sweep before it ends

_lock = forksafe.Lock()
_entries = {}  # key -> weakref(mmap)
_held = collections.OrderedDict()  # key -> (mmap, deadline): kept alive for the grace
_state = {"pid": None, "sweeper": None, "hits": 0, "misses": 0}


def key_of(sender, desc, granted, named):
    """The cache key of a record ``desc`` handed by ``sender``, or None when it is not kept."""
    if desc.generation == 0 or desc.segment_id == bytes(16) or desc.buffer_len == 0:
        return None
    return (sender, desc.segment_id, desc.generation, granted, named)


def lookup(key, desc):
    """The array ``desc`` describes, viewed in the mapping kept under ``key``; None on a miss."""
    if key is None:
        return None
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


def remember(key, array):
    """Keep the mapping behind ``array`` (just received) under ``key``."""
    if key is None:
        return
    mm, _ = backing.backing(array)
    if mm is None:
        return
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


def _forget(key):
    # A weakref callback: it may run while this thread holds _lock (an mmap let go of in
    # remember()), so it takes no lock; dict operations are atomic. At worst it drops an entry
    # just made again: a miss.
    ref = _entries.get(key)
    if ref is not None and ref() is None:
        _entries.pop(key, None)


def sweep(now=None):
    """Let go of the mappings whose grace is over (arrays of them keep them alive still)."""
    now = time.monotonic() if now is None else now
    with _lock:
        expired = [k for k, (_, deadline) in _held.items() if deadline <= now]
        gone = [_held.pop(k) for k in expired]
    del gone  # unmapped here, outside the lock, when no array holds them


def clear():
    """Let go of every kept mapping now (arrays of them keep them alive still)."""
    with _lock:
        gone = list(_held.values())
        _held.clear()
    del gone


def stats():
    """``{"entries", "held", "hits", "misses"}``: live keys, mappings kept for their grace,
    and the lookups of this process."""
    with _lock:
        live = sum(1 for r in _entries.values() if r() is not None)
        return {"entries": live, "held": len(_held), "hits": _state["hits"],
                "misses": _state["misses"]}


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
            if _held:
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
        gone = list(_held.values())
        _held.clear()
        return gone
    return None


os.register_at_fork(after_in_child=lambda: (_entries.clear(), _held.clear(),
                                            _state.update(pid=None, sweeper=None)))
