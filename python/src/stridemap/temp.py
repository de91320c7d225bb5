"""Where named segments live: the temp-root policy, this process's pool folders, and the sweep.

A producer's named segments (``kind="file"``) live in a private folder
``stridemap-<pid>-<start>-<uuid>`` (mode 0700) below a temp root chosen as the Rust producer
chooses it: an explicit folder, else ``$STRIDEMAP_TEMP_FOLDER``, else ``/dev/shm`` when it is
writable and has room for the segment plus a margin, else ``$TMPDIR`` (or ``/tmp``).

Liveness is a lock, not a pid (SPEC §7.5): for its whole life the producer holds
``flock(LOCK_SH)`` on an fd of the folder itself, taken before it creates anything in it. A
sweep takes ``LOCK_EX | LOCK_NB`` on the folder; if that fails the owner is alive. If it
succeeds the owner is gone; then if every entry is a regular file (not a mount point) that can
be locked exclusively (readers hold ``LOCK_SH`` while they map one, SPEC §7), the files are
unlinked under those locks and the folder removed; otherwise the folder is kept, with the
reason. Every step is relative to a directory fd (``O_NOFOLLOW``, ``fstatat``, ``unlinkat``),
and only folders of the caller's effective uid are touched. Rust's ``stridemap gc`` follows the
same rules, so each cleans up the other's orphans.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> folder = PoolFolder.create(root)
>>> sweep(root).alive == [folder.path]       # locked by this process: left alone
True
>>> folder.remove()
>>> sweep(root).removed
[]
"""

import errno
import fcntl
import logging
import os
import re
import stat
import threading
import uuid
from dataclasses import dataclass, field

log = logging.getLogger("stridemap")

TEMP_FOLDER_ENV = "STRIDEMAP_TEMP_FOLDER"
FOLDER_PREFIX = "stridemap-"
SHM = "/dev/shm"
_FOLDER_NAME = re.compile(r"stridemap-([0-9]+)-([0-9]+)-([0-9a-fA-F]{32})\Z")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def space(folder):
    """``(free, total)`` bytes of the filesystem holding ``folder`` (what an unprivileged
    process may use)."""
    st = os.statvfs(folder)
    unit = max(st.f_frsize, 1)
    if st.f_blocks == 0:  # no limit reported (hugetlbfs without size=): the kernel decides
        return 1 << 62, 1 << 62
    return st.f_bavail * unit, st.f_blocks * unit


def _margin(total):
    """Room kept free on a shared temp folder beyond the segment: 4 MiB and 1% of its size."""
    return (4 << 20) + total // 100


def temp_dir():
    """The system temp dir as Rust and SPEC §6 take it: ``$TMPDIR`` if set, else ``/tmp``."""
    return os.environ.get("TMPDIR") or "/tmp"


def segment_bases():
    """The bases of SPEC §6, where producers put their folders and sweeps look by default:
    ``$STRIDEMAP_TEMP_FOLDER`` (when set), ``/dev/shm`` and :func:`temp_dir`; only absolute
    ones."""
    bases = []
    env = os.environ.get(TEMP_FOLDER_ENV)
    if env:
        bases.append(env)
    bases += [SHM, temp_dir()]
    out = []
    for b in bases:
        if os.path.isabs(b) and b not in out:
            out.append(b)
    return out


def choose_root(explicit, needed, *, shm=SHM):
    """The temp root for a segment of ``needed`` bytes (the policy above).

    An explicit folder (the argument, then ``$STRIDEMAP_TEMP_FOLDER``) without room is an
    error, not a fallback: :class:`~stridemap.errors.NoSpace`.
    """
    from .errors import NoSpace

    chosen = explicit if explicit is not None else os.environ.get(TEMP_FOLDER_ENV) or None
    if chosen is not None:
        chosen = os.fspath(chosen)
        free, _ = space(chosen)
        if free < needed:
            raise NoSpace.make(chosen, needed, free)
        return chosen
    why = None
    if not os.access(shm, os.W_OK):
        why = "is not writable"
    else:
        try:
            free, total = space(shm)
        except OSError:
            why = "has no statvfs"
        else:
            if free < needed + _margin(total):
                why = f"has {free >> 20} MiB free, {(needed + _margin(total)) >> 20} MiB needed"
    if why is None:
        return shm
    tmp = temp_dir()
    free, _ = space(tmp)
    if free < needed:
        raise NoSpace.make(tmp, needed, free)
    log.info("stridemap: %s %s; this %d MiB segment goes to %s (set %s to choose)",
             shm, why, needed >> 20, tmp, TEMP_FOLDER_ENV)
    return tmp


def start_time(pid):
    """A process's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 1:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def folder_name(pid, start):
    """``stridemap-<pid>-<start>-<uuid>``, the name Rust's producer gives its folders too."""
    return f"{FOLDER_PREFIX}{pid}-{start}-{uuid.uuid4().hex}"


def parse_folder_name(name):
    """``(pid, start)`` from a pool folder's name, or None when it is not one."""
    m = _FOLDER_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


class PoolFolder:
    """This process's private folder below one temp root, locked shared while it lives.

    ``path`` is its canonical absolute path (pass it to a consumer as an allowed root), ``fd``
    an ``O_DIRECTORY`` fd of it: segments are created and unlinked relative to it.
    """

    def __init__(self, root, path, fd):
        self.root = root
        self.path = path
        self.name = os.path.basename(path)
        self.fd = fd
        self.pid = os.getpid()
        self.lock = threading.Lock()  # held while fd is used to unlink, and to close it

    @classmethod
    def create(cls, root):
        """Makes a new folder below ``root`` (mode 0700) and takes its shared lock.

        A sweep that finds the folder between its ``mkdir`` and the lock may remove it (it is
        empty and unlocked): then the lock is not taken on the linked folder, and another name
        is tried.
        """
        root = os.path.realpath(os.fspath(root))
        pid = os.getpid()
        start = start_time(pid) or 0
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for _ in range(16):
                name = folder_name(pid, start)
                os.mkdir(name, 0o700, dir_fd=root_fd)
                try:
                    fd = os.open(name, _DIR, dir_fd=root_fd)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    st = os.fstat(fd)
                    now = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                        raise FileNotFoundError(name)
                    os.fchmod(fd, 0o700)  # whatever the umask
                except (BlockingIOError, FileNotFoundError):
                    os.close(fd)
                    continue
                except BaseException:
                    os.close(fd)
                    _rmdir_quietly(name, root_fd)
                    raise
                path = os.path.join(root, name)
                log.debug("stridemap: created pool folder %s", path)
                return cls(root, path, fd)
            raise OSError(errno.EAGAIN, f"cannot make a pool folder in {root}: a sweep kept "
                                        "removing it")
        finally:
            os.close(root_fd)

    def remove(self):
        """Deletes the folder and everything in it (at exit: readers that map a segment keep
        reading it; nobody can open one any more), then drops the lock. Idempotent."""
        with self.lock:
            self._remove()

    def _remove(self):
        if self.fd is None:
            return
        if self.pid != os.getpid():  # a forked child: the parent's folder is not ours
            self._close()
            return
        try:
            with os.scandir(self.fd) as it:
                names = [e.name for e in it]
            for name in names:
                try:
                    os.unlink(name, dir_fd=self.fd)
                except FileNotFoundError:
                    pass
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.rmdir(self.name, dir_fd=root_fd)
            finally:
                os.close(root_fd)
            log.debug("stridemap: removed pool folder %s", self.path)
        except FileNotFoundError:
            log.debug("stridemap: pool folder %s was already gone", self.path)
        except OSError as e:
            log.warning("stridemap: cannot remove pool folder %s: %s", self.path, e)
        finally:
            self._close()

    def close(self):
        """Closes the folder's fd (its lock goes with the last fd of it)."""
        with self.lock:
            self._close()

    def _close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _rmdir_quietly(name, dir_fd):
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


@dataclass
class SweepReport:
    """What a sweep found, as Rust's ``stridemap gc`` reports it: folders ``removed`` (or, with
    ``dry_run``, that would be); folders whose owner is ``alive`` (it holds the folder's lock);
    folders of a dead owner ``in_use`` (a reader maps one of its files); folders of a dead
    owner ``kept`` for another reason, as ``(path, reason)`` (an entry stridemap never makes);
    folders of ``other_users``; and ``failed`` roots, folders or files, as ``(path, message)``
    (the sweep goes on after each)."""

    removed: list = field(default_factory=list)
    alive: list = field(default_factory=list)
    in_use: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    other_users: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def succeeded(self):
        """Whether every folder looked at was handled (nothing ``failed``)."""
        return not self.failed


def sweep(root=None, *, dry_run=False, all_users=False):
    """Removes the pool folders of dead producers directly below ``root`` (default: every
    base of :func:`segment_bases`) by SPEC §7.5, the rules of the module docstring: a folder
    nobody holds locked whose entries are all segment files nobody maps is removed with them;
    anything else is left and reported. Only folders of this process's effective uid, unless
    ``all_users``. Returns a :class:`SweepReport`; never raises for one folder's failure."""
    roots = segment_bases() if root is None else [os.fspath(root)]
    report = SweepReport()
    me = os.geteuid()
    for r in roots:
        try:  # the root is the caller's configuration: it may be reached through a link
            root_fd = os.open(r, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            report.failed.append((r, f"cannot open: {e.strerror or e}"))
            continue
        try:
            try:
                with os.scandir(root_fd) as it:
                    names = sorted(e.name for e in it if parse_folder_name(e.name) is not None)
            except OSError as e:
                report.failed.append((r, f"cannot list: {e.strerror or e}"))
                continue
            for name in names:
                _sweep_folder(root_fd, name, os.path.join(r, name), me, all_users, dry_run,
                              report)
        finally:
            os.close(root_fd)
    if report.removed:
        log.info("stridemap: swept %d orphaned folder(s)", len(report.removed))
    return report


_KINDS = {stat.S_IFDIR: "folder", stat.S_IFLNK: "symbolic link", stat.S_IFIFO: "FIFO",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}


def _sweep_folder(root_fd, name, path, me, all_users, dry_run, report):
    """One candidate folder: opened relative to the root without following a link, checked,
    locked, emptied and removed, or the reason it was not in ``report``."""
    try:
        fd = os.open(name, _DIR | os.O_NONBLOCK, dir_fd=root_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return  # a symlink or a file named like a folder (not ours to follow), or gone
        report.failed.append((path, f"cannot open: {e.strerror or e}"))
        return
    locked = []
    try:
        st = os.fstat(fd)
        if st.st_uid != me and not all_users:
            report.other_users.append(path)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.alive.append(path)
            return
        # The owner is gone. Removing needs write access to the folder and to the root (a dry
        # run says so too, rather than promising a removal that would fail).
        for dfd, what in ((fd, "the folder"), (root_fd, "the root")):
            if not os.access(".", os.W_OK | os.X_OK, dir_fd=dfd, effective_ids=True):
                report.failed.append((path, f"cannot remove: {what} is not writable"))
                return
        with os.scandir(fd) as it:
            entries = [e.name for e in it]
        for entry in entries:  # every entry must be a segment file nobody maps
            try:
                est = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = stat.S_IFMT(est.st_mode)
            if kind != stat.S_IFREG:
                what = _KINDS.get(kind, "file of unknown type")
                report.kept.append((path, f"owner dead, holds a {what} ({entry}) stridemap "
                                          "did not make; remove it by hand"))
                return
            if est.st_dev != st.st_dev:
                report.failed.append((os.path.join(path, entry),
                                      "a mount point: cannot be removed (unmount it first)"))
                return
            try:
                efd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                              | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                continue
            locked.append(efd)
            now = os.fstat(efd)
            if (now.st_dev, now.st_ino) != (est.st_dev, est.st_ino):
                report.failed.append((os.path.join(path, entry),
                                      "replaced while being checked"))
                return
            try:
                fcntl.flock(efd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.in_use.append(path)
                report.kept.append((path, f"owner dead, {entry} still mapped by a reader"))
                return
        if not dry_run:
            # Unlinked while the locks are held: no reader can start on a file being removed.
            for entry in entries:
                try:
                    os.unlink(entry, dir_fd=fd)
                except FileNotFoundError:
                    pass
            now = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                report.failed.append((path, "replaced while being swept"))
                return
            os.rmdir(name, dir_fd=root_fd)
            log.debug("stridemap: swept orphaned folder %s", path)
        report.removed.append(path)
    except OSError as e:
        report.failed.append((path, f"{e.strerror or e}"))
        log.warning("stridemap: sweep: %s: %s", path, e)
    finally:
        for efd in locked:
            os.close(efd)
        os.close(fd)
