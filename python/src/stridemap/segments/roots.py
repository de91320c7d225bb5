"""Where named segments live: the temp-root policy and this process's pool folders.

A producer's named segments (``kind="file"``) live in a private folder
``stridemap-<pid>-<start>-<uuid>`` (mode 0700) below a temp root chosen as the Rust producer
chooses it: an explicit folder, else ``$STRIDEMAP_TEMP_FOLDER``, else ``/dev/shm`` when it is
writable and has room for the segment plus a margin, else ``$TMPDIR`` (or ``/tmp``).

Liveness is a lock, not a pid (SPEC §7.5): for its whole life the producer holds
``flock(LOCK_SH)`` on an fd of the folder itself, taken before it creates anything in it
(:class:`PoolFolder`); :mod:`.sweep` removes the folders of dead producers.
"""

import errno
import fcntl
import logging
import os
import re
import time
import uuid

from .. import forksafe

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


def no_space(folder, needed, available):
    """:class:`~stridemap.NoSpace` for a segment of ``needed`` bytes in ``folder`` (a path, or
    "memfd"), its hint chosen by the filesystem that holds the folder."""
    from ..codec.errors import NoSpace
    from .huge import mount_of  # huge imports modules that import this one

    filesystem = None
    if folder != "memfd":
        try:
            mount = mount_of(folder)
            if mount is not None:
                filesystem = (mount[0], mount[1], space(mount[0])[1])
        except OSError:
            pass
    return NoSpace.make(folder, needed, available, filesystem)


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
    error, not a fallback: :class:`~stridemap.NoSpace`.
    """
    chosen = explicit if explicit is not None else os.environ.get(TEMP_FOLDER_ENV) or None
    if chosen is not None:
        chosen = os.fspath(chosen)
        free, _ = space(chosen)
        if free < needed:
            raise no_space(chosen, needed, free)
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
        raise no_space(tmp, needed, free)
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
        self.lock = forksafe.Lock()  # held while fd is used to unlink, and to close it

    @classmethod
    def create(cls, root):
        """Makes a new folder below ``root`` (mode 0700) and takes its shared lock.

        A sweep that finds the folder between its ``mkdir`` and the lock may remove it (it is
        empty and unlocked): then the lock is not taken on the linked folder, and another name
        is tried. A sweep holds its exclusive lock only while it empties a folder, so the lock
        is waited for at most :data:`LOCK_PATIENCE` seconds; a folder that stays locked (some
        process of this user locks every new folder) is removed again and another name tried,
        up to :data:`LOCKED_OUT_ATTEMPTS` folders; then :class:`OSError` (``EAGAIN``), and
        nothing is left behind.
        """
        root = os.path.realpath(os.fspath(root))
        pid = os.getpid()
        start = start_time(pid) or 0
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            locked_out = 0
            for _ in range(16):
                name = folder_name(pid, start)
                os.mkdir(name, 0o700, dir_fd=root_fd)
                try:
                    fd = os.open(name, _DIR, dir_fd=root_fd)
                except FileNotFoundError:
                    continue
                try:
                    if not _lock_shared_within(fd, LOCK_PATIENCE):
                        locked_out += 1
                        os.close(fd)
                        _rmdir_quietly(name, root_fd)
                        if locked_out == LOCKED_OUT_ATTEMPTS:
                            break
                        continue
                    st = os.fstat(fd)
                    now = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                        raise FileNotFoundError(name)
                    os.fchmod(fd, 0o700)  # whatever the umask
                except FileNotFoundError:
                    os.close(fd)
                    continue
                except BaseException:
                    os.close(fd)
                    _rmdir_quietly(name, root_fd)
                    raise
                path = os.path.join(root, name)
                log.debug("stridemap: created pool folder %s", path)
                return cls(root, path, fd)
            why = (f"{locked_out} new folder(s) stayed locked by another process for "
                   f"{LOCK_PATIENCE} s" if locked_out else "a sweep kept removing it")
            raise OSError(errno.EAGAIN, f"cannot make a pool folder in {root}: {why}")
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


# How long a new pool folder's shared lock is waited for (a sweep holds the exclusive lock only
# while it empties a folder), and how many new folders may stay locked before giving up.
LOCK_PATIENCE = 0.5
LOCKED_OUT_ATTEMPTS = 4


def _lock_shared_within(fd, seconds):
    """``LOCK_SH | LOCK_NB`` on ``fd``, retried with a growing pause for up to ``seconds``:
    whether it was taken."""
    deadline = time.monotonic() + seconds
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


def _rmdir_quietly(name, dir_fd):
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass
