"""The admission check: before a segment is made or grown, what it needs against what is there.

A memfd and a tmpfs file take memory that nothing limits but the machine: the kernel's shmem
mount has no size, a default ``/dev/shm`` is as big as RAM, and a container's pages count
against its cgroup. So before making a segment, :func:`check` compares its bytes with

- ``MemAvailable`` of ``/proc/meminfo``,
- each memory cgroup limit on this process, v2 (``memory.max - memory.current``) and v1
  (``memory.limit_in_bytes - memory.usage_in_bytes``), of its cgroup and every ancestor (found
  from ``/proc/self/cgroup`` and the cgroup mounts of ``/proc/self/mountinfo``),

and refuses with :class:`~stridemap.NoSpace` naming the bytes needed, the bytes available,
which limit it was and what to do, before any memory is touched. A margin is kept below each
limit, so that a request that just fits does not push the rest of the machine into reclaim:
64 MiB plus 1/32 of the limit's size (MemTotal, or the cgroup's limit). The free space of a
named segment's filesystem is checked by :func:`.roots.choose_root`; hugetlb pages are not
counted here (they are reserved apart from the rest of memory, and a hugetlb map that finds too
few fails cleanly). Rust's ``stridemap_shm`` makes the same check (SPEC §7, rule 6).

>>> check(4096)                       # a page fits on any machine that runs this
>>> limits()[0].name
'MemAvailable'
"""

import os
import time
from dataclasses import dataclass

from .. import forksafe
from ..codec.errors import NoSpace

UNLIMITED = 1 << 62  # a cgroup v1 "no limit" is PAGE_COUNTER_MAX pages, just below 2**63


@dataclass(frozen=True)
class Limit:
    """One limit on new shared memory: its ``name`` (what to look at or raise), the bytes
    ``available`` under it now, and its ``size`` (the margin is taken from it)."""

    name: str
    available: int
    size: int

    def margin(self):
        """What :func:`check` keeps free below this limit: 64 MiB and 1/32 of its size."""
        return (64 << 20) + self.size // 32


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _meminfo():
    fields = {}
    for line in (_read("/proc/meminfo") or b"").splitlines():
        key, _, rest = line.partition(b":")
        parts = rest.split()
        if parts:
            fields[key] = int(parts[0]) << 10
    return fields


def _unescape(b):
    """mountinfo's octal escapes (``\\040`` for a space), on bytes."""
    out, i = bytearray(), 0
    while i < len(b):
        if b[i:i + 1] == b"\\" and b[i + 1:i + 4].isdigit():
            out.append(int(b[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return bytes(out)


def _cgroup_dirs():
    """``(version, directory)`` of each memory cgroup this process is in, from its own cgroup
    up to the root of the mount (the limits of ancestors apply too)."""
    mounts = []  # (version, root within the hierarchy, mount point), as bytes
    for line in (_read("/proc/self/mountinfo") or b"").splitlines():
        left, sep, right = line.partition(b" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == b"cgroup2":
            mounts.append((2, _unescape(fields[3]), _unescape(fields[4])))
        elif tail[0] == b"cgroup" and b"memory" in tail[2].split(b","):
            mounts.append((1, _unescape(fields[3]), _unescape(fields[4])))
    dirs = []
    for line in (_read("/proc/self/cgroup") or b"").splitlines():
        hid, _, rest = line.partition(b":")
        controllers, _, path = rest.partition(b":")
        if hid == b"0" and controllers == b"":
            version = 2
        elif b"memory" in controllers.split(b","):
            version = 1
        else:
            continue
        for v, root, point in mounts:
            if v != version or not (path == root or path.startswith(root.rstrip(b"/") + b"/")):
                continue
            rel = path[len(root.rstrip(b"/")):].strip(b"/")
            parts = rel.split(b"/") if rel else []
            for k in range(len(parts), -1, -1):
                dirs.append((version, os.path.join(point, *parts[:k])))
            break
    return dirs


_dirs = None  # (pid, _cgroup_dirs()): found once per process


def _cgroup_limits():
    global _dirs
    if _dirs is None or _dirs[0] != os.getpid():
        _dirs = (os.getpid(), _cgroup_dirs())
    out = []
    for version, d in _dirs[1]:
        if version == 2:
            names = (b"memory.max", b"memory.current")
        else:
            names = (b"memory.limit_in_bytes", b"memory.usage_in_bytes")
        limit, usage = (_read(os.path.join(d, n)) for n in names)
        try:
            limit, usage = int(limit), int(usage)
        except (TypeError, ValueError):  # "max", a missing file: no limit here
            continue
        if limit >= UNLIMITED:
            continue
        where = os.fsdecode(os.path.join(d, names[0]))
        out.append(Limit(f"cgroup v{version} {where}", max(limit - usage, 0), limit))
    return out


def limits():
    """Every limit on new shared memory for this process now: MemAvailable first, then its
    memory cgroups' (innermost first)."""
    info = _meminfo()
    out = []
    if b"MemAvailable" in info:
        out.append(Limit("MemAvailable", info[b"MemAvailable"], info.get(b"MemTotal", 0)))
    return out + _cgroup_limits()


# Reading the limits costs 50-500 us (/proc/meminfo is made anew on each read); a small
# request is weighed against the last reading when it is under STALE_AFTER seconds old, less
# what was admitted since. A request of FRESH_FROM bytes or more always reads them anew.
FRESH_FROM = 16 << 20
STALE_AFTER = 0.05


class _Reading:
    def __init__(self):
        self.pid = os.getpid()
        self.at = time.monotonic()
        self.limits = limits()
        self.taken = 0  # bytes admitted since


_reading = None
_lock = forksafe.Lock()


def check(needed, where="memfd"):
    """Refuses with :class:`~stridemap.NoSpace` a new segment of ``needed`` bytes of shared
    memory (a memfd, or a file in the tmpfs ``where``) that any limit of :func:`limits` cannot
    hold with its margin; returns None when every one can."""
    global _reading
    with _lock:
        r = _reading
        if (r is None or needed >= FRESH_FROM or r.pid != os.getpid()
                or time.monotonic() - r.at > STALE_AFTER):
            r = _reading = _Reading()
        for lim in r.limits:
            available = max(lim.available - r.taken, 0)
            if needed + lim.margin() > available:
                raise NoSpace.memory(where, needed, available, lim.name, lim.margin())
        r.taken += needed


def _after_fork_in_child():  # after forksafe's: the lock is free
    global _reading
    _reading = None


os.register_at_fork(after_in_child=_after_fork_in_child)
