"""Where named segments live: the temp-root policy, this process's pool folders, and the sweep.

A producer's named segments (``kind="file"``) live in a private folder
``stridemap-<pid>-<start>-<uuid>`` (mode 0700) below a temp root chosen as the Rust producer
chooses it: an explicit folder, else ``$STRIDEMAP_TEMP_FOLDER``, else ``/dev/shm`` when it is
writable and has room for the segment plus a margin, else ``tempfile.gettempdir()``.

Liveness is a lock, not a pid: for its whole life the producer holds ``flock(LOCK_SH)`` on an fd
of the folder itself. A sweep takes ``LOCK_EX | LOCK_NB`` on the folder; if that fails the owner
is alive. If it succeeds the owner is dead, and the sweep removes each file it can lock
exclusively (readers hold ``LOCK_SH`` while they map one, SPEC §7), then the folder if it is
empty. (A folder whose lock is free but whose named owner, pid and start time, still runs is
kept too: an older producer that does not lock its folder.) Every step is relative to a
directory fd (``O_NOFOLLOW``, ``unlinkat``), and only folders of the caller's own uid are
touched. Rust's ``stridemap gc`` follows the same rules, so each cleans up the other's orphans.

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
import tempfile
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
    return st.f_bavail * unit, st.f_blocks * unit


def _margin(total):
    """Room kept free on a shared temp folder beyond the segment: 4 MiB and 1% of its size."""
    return (4 << 20) + total // 100


def segment_bases():
    """The temp roots a producer may use, hence the ones a sweep looks in by default:
    ``$STRIDEMAP_TEMP_FOLDER`` (when set), ``/dev/shm`` and the system temp dir."""
    bases = []
    env = os.environ.get(TEMP_FOLDER_ENV)
    if env:
        bases.append(env)
    bases += [SHM, tempfile.gettempdir()]
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
    tmp = tempfile.gettempdir()
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


def owner_alive(pid, start):
    """Whether the process a folder's name records (pid and start time) still runs (a zombie
    does not). Never decides that an owner is dead: only used to keep the folders of older
    producers that do not lock their folder."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 1:].split()
        return fields[0] not in (b"Z", b"X") and int(fields[19]) == start
    except (OSError, ValueError, IndexError):
        return False


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
    """What a sweep found: folders removed (or, with ``dry_run``, that would be), folders whose
    owner is alive (locked), folders of a dead owner that still hold files some process maps
    (or entries that are not files), and failures (``(path, message)``; the sweep goes on)."""

    removed: list = field(default_factory=list)
    alive: list = field(default_factory=list)
    in_use: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def sweep(root=None, *, dry_run=False, all_users=False):
    """Removes the pool folders of dead producers below ``root`` (default: every temp root of
    :func:`segment_bases`), by the rules of the module docstring. Returns a
    :class:`SweepReport`. Folders of other users are left alone unless ``all_users`` (root
    only can remove them anyway)."""
    roots = segment_bases() if root is None else [os.fspath(root)]
    report = SweepReport()
    uid = os.getuid()
    for r in roots:
        try:
            root_fd = os.open(r, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            with os.scandir(root_fd) as it:
                names = sorted(e.name for e in it if parse_folder_name(e.name) is not None)
            for name in names:
                path = os.path.join(r, name)
                try:
                    verdict = _sweep_folder(root_fd, name, path, uid, all_users, dry_run, report)
                except OSError as e:
                    report.failed.append((path, f"{e.strerror or e}"))
                    log.warning("stridemap: sweep: %s: %s", path, e)
                    continue
                if verdict is not None:
                    getattr(report, verdict).append(path)
        finally:
            os.close(root_fd)
    if report.removed:
        log.info("stridemap: swept %d orphaned folder(s)", len(report.removed))
    return report


def _sweep_folder(root_fd, name, path, uid, all_users, dry_run, report):
    """One folder: 'removed', 'alive', 'in_use' or None (not ours to judge: a link, a file,
    another user's)."""
    try:
        fd = os.open(name, _DIR, dir_fd=root_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return None  # a symlink or a file named like a folder, or already gone
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or (st.st_uid != uid and not all_users):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "alive"
        if owner_alive(*parse_folder_name(name)):
            return "alive"  # a producer that does not lock its folder, and still runs
        held = False
        with os.scandir(fd) as it:
            names = [e.name for e in it]
        for entry in names:
            try:
                if not _sweep_file(fd, entry, dry_run):
                    held = True
            except OSError as e:
                held = True
                report.failed.append((os.path.join(path, entry), f"{e.strerror or e}"))
        if held:
            return "in_use"
        if not dry_run:
            try:
                os.rmdir(name, dir_fd=root_fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return "in_use"  # something appeared meanwhile
                raise
            log.debug("stridemap: swept orphaned folder %s", path)
        return "removed"
    finally:
        os.close(fd)


def _sweep_file(dir_fd, name, dry_run):
    """Unlinks one entry of a dead owner's folder if it is a regular file nobody maps (it can
    be locked exclusively); whether it is (or, in a dry run, would be) gone."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                     | os.O_NOCTTY, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            return False  # not something a producer made: left to a human
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not dry_run:  # unlinked under the lock: no reader can start on it meanwhile
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        return True
    finally:
        os.close(fd)
