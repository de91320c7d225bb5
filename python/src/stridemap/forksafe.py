"""Locks that a forked child finds free: every lock the package keeps beyond one call.

A fork copies a lock in whatever state it is, and only the forking thread goes on in the child:
a lock another thread held at that moment (a Queue's feeder thread pickling a shared array, the
fd channel's listener, the reaper) stays held forever there, and the child's first use of it
hangs. Locks made by :func:`Lock` and :func:`RLock` are made new again in the child, right
after the fork (``_at_fork_reinit``, what ``threading`` itself does for its own locks). What a
lock guards stays as the fork left it: each module's own ``register_at_fork`` hook resets the
state that must not carry over (this process's pid, its listener, its folders...).
"""

import os
import threading
import weakref

_locks = weakref.WeakSet()


def Lock():  # noqa: N802 - named like threading.Lock, which it stands for
    """A ``threading.Lock`` that is free again in a forked child."""
    lock = threading.Lock()
    _locks.add(lock)
    return lock


def RLock():  # noqa: N802
    """A ``threading.RLock`` that is free (and owned by nobody) again in a forked child."""
    lock = threading.RLock()
    _locks.add(lock)
    return lock


def _after_fork_in_child():
    for lock in list(_locks):
        lock._at_fork_reinit()


os.register_at_fork(after_in_child=_after_fork_in_child)
