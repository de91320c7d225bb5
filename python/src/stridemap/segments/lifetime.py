"""A producer's segments over the life of its process: the per-process state, letting go of a
segment (a memfd closed, a named file unlinked once no consumer maps it, retried by a reaper
thread), the pool folders below each temp root, forks and exit (SPEC §7).
"""

import atexit
import fcntl
import logging
import os
import threading
import time

from .. import forksafe
from . import roots, sweep
from .backing import system_error
from .header import DATA_OFFSET

log = logging.getLogger("stridemap")


class _State:
    """The producer's per-process state (made again in a forked child)."""

    def __init__(self):
        self.pid = os.getpid()
        self.lock = forksafe.RLock()
        self.folders = {}  # temp root -> PoolFolder
        self.swept = set()  # roots swept by this process
        self.pending = []  # FileState of named segments a consumer still maps
        self.reaper = None
        self.wake = threading.Event()
        self.reused = {}  # (id(source), kind, temp_folder) -> (weakref(source), weakref(SharedArray))


_state = _State()


def state():
    """This process's state (a forked child's own, made on first use after the fork)."""
    check_fork()
    return _state


class FileState:
    """The part of a segment its finalizer needs (never the Segment itself)."""

    __slots__ = ("fd", "name", "folder", "pid", "kind")

    def __init__(self, fd, kind, name=None, folder=None):
        self.fd = fd
        self.kind = kind
        self.name = name
        self.folder = folder
        self.pid = os.getpid()


def release(fs):
    """A segment nobody in this process uses any more: a memfd's fd is closed; a named file is
    unlinked if it can be locked exclusively (no consumer maps it), else retried later."""
    if fs.fd is None:
        return
    if fs.pid != os.getpid() or fs.kind != "file":
        close(fs)
        return
    if not _try_unlink(fs):
        with _state.lock:
            if _state.pid == fs.pid:
                _state.pending.append(fs)
                _start_reaper()
                return
        close(fs)


def close(fs):
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
    close(fs)
    return True


def reap() -> int:
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


def folder_for(needed, temp_folder):
    """This process's pool folder below the temp root chosen for ``needed`` bytes; the first
    time a root is used, its dead producers' folders are swept."""
    st = state()
    root = os.path.realpath(roots.choose_root(temp_folder, needed))
    with st.lock:
        folder = st.folders.get(root)
        if folder is not None and folder.fd is not None:
            return folder
        if root not in st.swept:
            st.swept.add(root)
            try:
                sweep.sweep(root)
            except OSError as e:
                log.warning("stridemap: orphan sweep of %s failed: %s", root, e)
        try:
            folder = roots.PoolFolder.create(root)
        except OSError as e:
            raise system_error(f"creating a pool folder in {root}", e) from None
        st.folders[root] = folder
        if len(st.folders) == 1:
            _remove_folders_at_process_exit()
        return folder


def _remove_folders_at_process_exit():
    """Remove this process's folders when it exits through ``multiprocessing``'s exit function
    too: a worker of a fork or forkserver pool ends with ``os._exit``, which runs no atexit
    handler, after that function. Priority -60: after the pools' wait for receivers (-10) and
    the fd channel's unlink (-50). (A worker killed, as ``Pool.terminate`` does, leaves its
    folder to the next sweep.)"""
    from multiprocessing import util

    util.Finalize(None, _at_exit, exitpriority=-60)


def producer_root(needed: int = 0, *,
                  temp_folder: str | os.PathLike[str] | None = None) -> str:
    """This process's pool folder for a named segment of ``needed`` bytes (made, and its temp
    root swept, if it is the first): the allowed root a consumer needs for named segments."""
    check_fork()
    return folder_for(DATA_OFFSET + needed, temp_folder).path


def producer_folders() -> list[str]:
    """The pool folders this process has made so far."""
    check_fork()
    with _state.lock:
        return [f.path for f in _state.folders.values() if f.fd is not None]


def check_fork():
    if _state.pid != os.getpid():
        _after_fork_in_child()


def _after_fork_in_child():
    """A forked child starts with no folders and no reuse cache of its own; the parent's
    segments it inherited are never unlinked or unlocked by it."""
    global _state
    old = _state
    _state = _State()
    for folder in old.folders.values():
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
        close(fs)
    for folder in folders:
        folder.remove()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
