"""Huge pages for new segments, as the Rust pool makes them (``PoolConfig::huge_pages``).

A fresh segment costs a page fault, and a page zeroed, per 4 KiB for the producer that fills it,
and a fault per 4 KiB again for each consumer that maps it; with 2 MiB pages, once per 2 MiB.
:func:`stridemap.share` and :func:`stridemap.empty` take ``huge_pages="auto"`` (the default),
``"never"`` or ``"require"``. ``auto`` gives segments of at least one huge page the first
mechanism the system offers for their kind:

- ``kind="memfd"``: a memfd made with ``MFD_HUGETLB`` when enough hugetlb pages are free
  (``vm.nr_hugepages``); else a memfd with transparent huge pages (``madvise(MADV_HUGEPAGE)`` on
  its mappings) when ``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` is ``advise``,
  ``within_size``, ``always`` or ``force``;
- ``kind="file"``: the temp root is a tmpfs mounted with ``huge=`` (``within_size``, ``always``,
  ``advise``), or a hugetlbfs (which has huge pages only, whatever the option says).

``require`` raises :class:`HugePagesUnavailable` naming what to enable when there is none.
Huge segments put their data at the huge page size into the file (SPEC §8 ``data_offset``), so
every consumer maps it aligned, and their capacity is whole huge pages.

>>> import stridemap, stridemap.segments.huge as huge
>>> p = huge.probe("memfd", None, 64 << 20)
>>> p.page_size >= 4096 and len(p.candidates)
2
>>> a = stridemap.empty((1000,), "f8", huge_pages="never")
>>> huge.page_backing(a)
'base'
"""

import errno
import mmap
import os
import re
from dataclasses import dataclass, field

from ..codec import errors
from . import roots
from .backing import segment_of
from .header import DATA_OFFSET

THP = "/sys/kernel/mm/transparent_hugepage"
HUGETLB = "/sys/kernel/mm/hugepages"
MODES = ("auto", "never", "require")
MFD_HUGETLB = getattr(os, "MFD_HUGETLB", 4)
MFD_HUGE_SHIFT = getattr(os, "MFD_HUGE_SHIFT", 26)
MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
HUGETLBFS_MAGIC = 0x958458F6

BASE = "base"
HUGETLB_MEMFD = "hugetlb-memfd"
HUGETLB_FILE = "hugetlb-file"
THP_MEMFD = "thp-memfd"
THP_FILE = "thp-file"
_NAMES = {
    BASE: "base pages",
    HUGETLB_MEMFD: "hugetlb memfd (MFD_HUGETLB)",
    HUGETLB_FILE: "hugetlbfs file",
    THP_MEMFD: "memfd with transparent huge pages",
    THP_FILE: "tmpfs file with transparent huge pages (huge=)",
}


class HugePagesUnavailable(errors.ProducerError):
    """``huge_pages="require"`` and no huge page mechanism is available for the segment's kind;
    the message names each mechanism considered and what to enable. Nothing is left behind."""


@dataclass(frozen=True)
class Candidate:
    """One mechanism considered: whether it is available now, and why (or what to enable)."""

    backing: str
    available: bool
    detail: str
    advise_only: bool = False

    def __str__(self):
        return _NAMES[self.backing]


@dataclass(frozen=True)
class Probe:
    """What the system offers a new segment: the huge page size and the candidates in order."""

    page_size: int
    candidates: list = field(default_factory=list)

    def chosen(self):
        return next((c for c in self.candidates if c.available), None)

    def summary(self):
        parts = []
        for c in self.candidates:
            if c.available:
                parts.append(f"using {c} ({c.detail})")
                break
            parts.append(f"not {c}: {c.detail}")
        return "; ".join(parts) or "no huge page mechanism applies"


@dataclass(frozen=True)
class Plan:
    """How a new segment is made: its mechanism and page size."""

    backing: str = BASE
    page_size: int = 4096
    advise_only: bool = False

    @property
    def huge(self):
        return self.backing != BASE

    @property
    def hugetlb(self):
        return self.backing in (HUGETLB_MEMFD, HUGETLB_FILE)

    @property
    def thp(self):
        return self.backing in (THP_MEMFD, THP_FILE)

    @property
    def data_offset(self):
        return self.page_size if self.huge else DATA_OFFSET

    @property
    def memfd_flags(self):
        if self.backing != HUGETLB_MEMFD:
            return 0
        return MFD_HUGETLB | ((self.page_size.bit_length() - 1) << MFD_HUGE_SHIFT)


BASE_PLAN = Plan()


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _selected(text):
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else None


def _meminfo(key):
    text = _read("/proc/meminfo") or ""
    m = re.search(rf"^{re.escape(key)}\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def page_size():
    """The huge page size segments use: the PMD size (2 MiB on x86-64)."""
    for v in (_read(f"{THP}/hpage_pmd_size"),):
        if v and v.isdigit() and int(v) > 4096:
            return int(v)
    kb = _meminfo("Hugepagesize:")
    return kb << 10 if kb else 2 << 20


def hugetlb_available(size):
    """Free hugetlb pages of ``size`` bytes not promised to anyone (free - reserved)."""
    d = f"{HUGETLB}/hugepages-{size >> 10}kB"
    free, resv = _read(f"{d}/free_hugepages"), _read(f"{d}/resv_hugepages")
    if free is not None and resv is not None:
        return max(0, int(free) - int(resv))
    if (_meminfo("Hugepagesize:") or 0) << 10 == size:
        return max(0, (_meminfo("HugePages_Free:") or 0) - (_meminfo("HugePages_Rsvd:") or 0))
    return None


def shmem_mode():
    """The global ``shmem_enabled`` mode (memfds follow it)."""
    return _selected(_read(f"{THP}/shmem_enabled"))


def _unescape(b):
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]), b)


def mount_of(path):
    """(mount point, fs type, super options) of the mount holding ``path``. mountinfo is read
    as bytes: a mount point anywhere on the system may have a name that is not UTF-8 (any user
    can make one with FUSE); the mount point comes back as ``os.fsdecode`` gives it."""
    path = os.fsencode(os.path.realpath(path))
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read()
    except OSError:
        return None
    best = None
    for line in text.splitlines():
        left, sep, right = line.partition(b" - ")
        if not sep:
            continue
        fields, rest = left.split(b" "), right.split(b" ")
        if len(fields) < 5 or len(rest) < 3:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip(b"/") + b"/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, rest[0], rest[2])
    if best is None:
        return None
    point, fstype, opts = best
    return os.fsdecode(point), fstype.decode("ascii", "replace"), opts.decode("utf-8", "replace")


def _option(opts, key):
    return next((o[len(key):] for o in opts.split(",") if o.startswith(key)), None)


def _mib(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"


def _hugetlb_candidate(size, file_len, backing=HUGETLB_MEMFD):
    need = -(-file_len // size)
    free = hugetlb_available(size)
    if free is None:
        return Candidate(backing, False, f"no {_mib(size)} hugetlb pool in this kernel")
    if free >= need:
        return Candidate(backing, True, f"{free} free {_mib(size)} pages")
    return Candidate(backing, False,
                     f"{free} free {_mib(size)} hugetlb pages, {need} needed (reserve more: "
                     f"sysctl vm.nr_hugepages=N, or {HUGETLB}/hugepages-{size >> 10}kB/"
                     "nr_hugepages)")


def _thp_memfd_candidate(size):
    mode = shmem_mode()
    if mode in ("advise", "within_size", "always", "force"):
        return Candidate(THP_MEMFD, True, f"shmem_enabled is {mode}", mode == "advise")
    if mode is None:
        return Candidate(THP_MEMFD, False,
                         "this kernel has no transparent huge pages for shared memory")
    per_size = _selected(_read(f"{THP}/hugepages-{size >> 10}kB/shmem_enabled"))
    note = ""
    if per_size not in (None, "inherit", "never"):
        note = (f" (hugepages-{size >> 10}kB/shmem_enabled is {per_size}, but it applies to "
                "anonymous shared memory only, not to memfds)")
    return Candidate(THP_MEMFD, False, f"{THP}/shmem_enabled is {mode}{note}; enable with: "
                     f"echo advise > {THP}/shmem_enabled")


def _file_candidates(folder, size, file_len):
    m = mount_of(folder)
    if m is None:
        return [Candidate(THP_FILE, False, f"cannot find the mount of {folder}")]
    point, fstype, opts = m
    enable = ("mount a tmpfs with huge=within_size (mount -t tmpfs -o huge=within_size,size=8g "
              "tmpfs /mnt/stridemap) and set STRIDEMAP_TEMP_FOLDER=/mnt/stridemap; "
              f"{folder} is on {point} ({fstype})")
    if fstype == "hugetlbfs":
        c = _hugetlb_candidate(size, file_len, HUGETLB_FILE)
        return [Candidate(c.backing, c.available, f"{point} is hugetlbfs: {c.detail}")]
    if fstype != "tmpfs":
        return [Candidate(THP_FILE, False, f"{point} is {fstype}, not tmpfs; {enable}")]
    glob, huge = shmem_mode(), _option(opts, "huge=") or "never"
    if glob == "deny":
        return [Candidate(THP_FILE, False, f"{THP}/shmem_enabled is deny, which turns huge= "
                          f"mounts off ({point} has huge={huge})")]
    if glob == "force":
        return [Candidate(THP_FILE, True, f"{THP}/shmem_enabled is force (all tmpfs mounts)")]
    if huge in ("within_size", "always"):
        return [Candidate(THP_FILE, True, f"{point} is mounted huge={huge}")]
    if huge == "advise":
        return [Candidate(THP_FILE, True, f"{point} is mounted huge=advise", True)]
    return [Candidate(THP_FILE, False, f"{point} is mounted huge={huge}; {enable}")]


def probe(kind, folder, capacity):
    """What the system offers a new segment of ``kind`` ("memfd" or "file", then in
    ``folder``, default the temp root) with ``capacity`` data bytes."""
    size = page_size()
    file_len = capacity + size
    if kind == "memfd":
        return Probe(size, [_hugetlb_candidate(size, file_len), _thp_memfd_candidate(size)])
    if folder is None:
        folder = os.environ.get("STRIDEMAP_TEMP_FOLDER") or "/dev/shm"
    return Probe(size, _file_candidates(folder, size, file_len))


def hugetlbfs_page(path):
    """The page size of the hugetlbfs holding ``path``, when it is one."""
    try:
        m = mount_of(path)
    except OSError:
        return None
    if m is None or m[1] != "hugetlbfs":
        return None
    ps = _option(m[2], "pagesize=")
    if ps:
        units = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}
        try:
            return int(ps[:-1]) * units[ps[-1]] if ps[-1] in units else int(ps)
        except ValueError:
            return None
    kb = _meminfo("Hugepagesize:")
    return kb << 10 if kb else None


def check_mode(mode):
    """Raises ValueError unless ``mode`` is a ``huge_pages`` value."""
    if mode not in MODES:
        raise ValueError(f"huge_pages must be one of {MODES}, not {mode!r}")


def page_size_for(mode, kind, nbytes, temp_folder=None):
    """The huge page size a new segment of ``nbytes`` asks for, or None: never for "never",
    always for "require", from one huge page on for "auto"; always for a hugetlbfs root."""
    check_mode(mode)
    if kind == "file":
        root = temp_folder or os.environ.get("STRIDEMAP_TEMP_FOLDER")
        if root and hugetlbfs_page(root):
            return hugetlbfs_page(root)
    if mode == "never":
        return None
    size = page_size()
    if mode == "require":
        return size
    if nbytes < size:
        return None
    # auto: the huge layout only when a mechanism is there (else the segment is as ever).
    rounded = -(-nbytes // size) * size
    return size if probe(kind, temp_folder, rounded).chosen() is not None else None


def choose(mode, kind, capacity, folder):
    """The plan for a new segment (``capacity`` already whole huge pages)."""
    p = probe(kind, folder, capacity)
    c = p.chosen()
    if c is not None:
        return Plan(c.backing, p.page_size, c.advise_only)
    if kind == "file" and folder and hugetlbfs_page(folder):
        raise roots.no_space(folder, capacity + p.page_size, 0)
    if mode == "require":
        raise HugePagesUnavailable(
            f"huge pages are required but none are available for a {kind} segment: "
            f"{p.summary()}; or use huge_pages='auto' to fall back to base pages")
    return Plan(BASE, p.page_size)  # base pages, with the huge layout already decided


def prepare(fd, plan, header, file_len, where, reserve=False):
    """Sizes a huge segment, writes its header and reserves its space, without a pass over
    its memory where possible: hugetlb pages are reserved by a shared mapping (mmap fails
    when too few are free), a named tmpfs file is fallocated (or prefaulted through an
    advised map for ``huge=advise``). A THP memfd has no size limit; one to be filled in
    place (``reserve``: :func:`~stridemap.empty`) is prefaulted through an advised map
    (fallocate would give it base pages), so that no hole is left for a consumer to fault in
    (readers refuse a shared-memory file with fewer bytes allocated than its buffer, SPEC §6
    O12)."""
    off = plan.data_offset
    try:
        if not plan.hugetlb:
            os.pwrite(fd, header, 0)  # the header page stays small (within_size)
        os.ftruncate(fd, file_len)
        if plan.backing == THP_FILE and not plan.advise_only and file_len > off:
            os.posix_fallocate(fd, off, file_len - off)
        if (plan.hugetlb or (plan.backing == THP_FILE and plan.advise_only)
                or (plan.backing == THP_MEMFD and reserve)):
            mm = mmap.mmap(fd, file_len)
            try:
                if plan.hugetlb:
                    mm[:len(header)] = header
                else:
                    mm.madvise(MADV_HUGEPAGE)
                    mm.madvise(MADV_POPULATE_WRITE, off, file_len - off)
            finally:
                mm.close()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFAULT):
            raise roots.no_space(where, file_len, 0) from None
        raise


def advise(mm, plan):
    """``MADV_HUGEPAGE`` on a mapping of a THP segment (what makes ``advise`` mode allocate
    huge pages when this mapping faults them in)."""
    if plan.thp and len(mm):
        try:
            mm.madvise(MADV_HUGEPAGE)
        except (OSError, ValueError):
            pass


def advise_consumer(mm, fd):
    """A consumer's shared map of 2 MiB or more of a tmpfs or memfd file asks for transparent
    huge pages, so that pages it faults in itself may be huge under ``shmem_enabled=advise``
    (pages the producer made huge are mapped whole without it). A hint: failures are ignored."""
    if len(mm) < (2 << 20):
        return
    try:
        if _is_tmpfs(fd):
            mm.madvise(MADV_HUGEPAGE)
    except (OSError, ValueError):
        pass


def _is_tmpfs(fd):
    """Whether ``fd`` is on a tmpfs (memfds are): its mount in /proc/self/mountinfo, through
    the fd's link in /proc/self/fd (a memfd's is ``/memfd:… (deleted)``)."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    if target.startswith("/memfd:"):
        return True  # (a hugetlb memfd refuses the advice, which changes nothing)
    m = mount_of(target.removesuffix(" (deleted)"))
    return m is not None and m[1] == "tmpfs"


def page_backing(array):
    """What backs the segment of ``array`` (a SharedArray or any view of one): "base",
    "hugetlb-memfd", "hugetlb-file", "thp-memfd" or "thp-file"; None without a segment this
    process made."""
    seg = segment_of(array)
    plan = getattr(seg, "huge_plan", None)
    return plan.backing if plan is not None else None


def huge_page_bytes(buffer):
    """Bytes of the mappings overlapping ``buffer`` (an array or anything with a buffer) that
    the kernel maps with huge pages now (``/proc/self/smaps``: ShmemPmdMapped, FilePmdMapped,
    hugetlb)."""
    import numpy as np

    a = np.asarray(buffer)
    ptr = a.__array_interface__["data"][0]
    start = ptr + sum(min(0, (n - 1) * st) for n, st in zip(a.shape, a.strides) if n)
    end = ptr + sum(max(0, (n - 1) * st) for n, st in zip(a.shape, a.strides) if n)
    end += a.itemsize
    total, inside = 0, False
    for line in (_read("/proc/self/smaps") or "").splitlines():
        head = line.split(None, 1)[0] if line else ""
        m = re.fullmatch(r"([0-9a-f]+)-([0-9a-f]+)", head)
        if m:
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            inside = lo < end and start < hi
            continue
        if inside and head in ("ShmemPmdMapped:", "FilePmdMapped:", "Shared_Hugetlb:",
                               "Private_Hugetlb:"):
            total += int(line.split()[1]) << 10
    return total
