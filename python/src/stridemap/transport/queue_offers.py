"""Offers pickled into a process pool's call queue belong to that queue.

``concurrent.futures.ProcessPoolExecutor`` and loky (joblib's backends) send tasks to their
workers through a call queue whose feeder thread pickles them; only that pool's workers read it.
When the pool breaks (a worker killed), the tasks already pickled into the queue are never read,
and the fds offered for their arrays would never be fetched: the parent kept them, and the
arrays they hold, until it exited. So the offers made on a call queue's feeder thread are owned
by the queue (:func:`owner_of_current_thread`), and those never fetched are withdrawn as soon as
no process can read the queue any more: when the pool's manager thread has joined its workers
(``join_executor_internals``, after a shutdown, and after ``terminate_broken`` killed them on a
break), or when the queue object is collected, whichever comes first.

Why that is late enough: only the pool's workers read its call queue. Why the first is needed:
the feeder thread of a broken loky pool can stay blocked for good writing into the queue's full
pipe (the parent holds its read end, the workers are dead), and it holds the queue.

>>> import concurrent.futures.process as p
>>> watch_call_queues()
>>> getattr(p._ExecutorManagerThread.join_executor_internals, "_stridemap_watch", False)
True
>>> owner_of_current_thread() is None  # not a call queue's feeder
True
"""

import sys
import threading
import weakref

from . import channel

# Call queue types: the standard library's, loky's vendored in joblib, standalone loky.
_CALL_QUEUES = ("concurrent.futures.process", "joblib.externals.loky.process_executor",
                "loky.process_executor")


_owned = weakref.WeakKeyDictionary()  # call queue -> channel.Owned
_types = ()  # the call queue types watched


_seen_modules = -1  # len(sys.modules) when the modules were last looked for


def watch_call_queues():
    """Watch the call queues of the standard library's pool and of the loky modules already
    imported (idempotent; cheap when no module was imported since the last call)."""
    global _types, _seen_modules
    if len(sys.modules) == _seen_modules:
        return
    import concurrent.futures.process  # noqa: F401 - the standard library's, always

    _seen_modules = len(sys.modules)
    types = []
    for name in _CALL_QUEUES:
        module = sys.modules.get(name)
        cls = getattr(module, "_SafeQueue", None)
        if cls is not None:
            types.append(cls)
        manager = getattr(module, "_ExecutorManagerThread", None)
        if manager is not None:
            _watch_manager(manager)
    _types = tuple(types)
    channel.owner_of_thread = owner_of_current_thread


_known = threading.local()  # this thread's (_types, its owner or None), found the last time


def owner_of_current_thread():
    """The offers' owner when this thread is a watched call queue's feeder, else None. A feeder
    is known by its own arguments (``Queue._start_thread`` passes it the queue's
    ``_on_queue_feeder_error``), so nothing of the queue is patched. A thread's arguments never
    change: what was found is kept per thread (a feeder ends with its queue), and looked for
    again only when the watched types changed."""
    if not _types:
        return None
    known = getattr(_known, "owner", None)
    if known is None or known[0] is not _types:
        known = _known.owner = (_types, _find_owner())
    return known[1]


def _find_owner():
    args = getattr(threading.current_thread(), "_args", None)
    if type(args) is not tuple:
        return None
    for arg in args:
        queue = getattr(arg, "__self__", None)
        if queue is not None and isinstance(queue, _types):
            try:
                return _owned[queue]
            except KeyError:
                owned = _owned[queue] = channel.Owned()
                weakref.finalize(queue, channel.withdraw_owned_later, owned)
                return owned
    return None


def release_queue(queue):
    """No process reads ``queue`` any more (its pool's workers are joined): withdraw the offers
    its feeder made that were never fetched. A feeder blocked on the full pipe of a broken
    pool would hold the queue, and the tasks still in its buffer (their arrays), for good:
    closing the read end fails its write (EPIPE), and it goes on to the close's sentinel (what
    CPython's own terminate_broken does since gh-94777; loky does not). Only for a queue that
    carried stridemap's offers."""
    owned = _owned.get(queue) if queue is not None else None
    if owned is None:
        return
    channel.withdraw_owned(owned)
    reader = getattr(queue, "_reader", None)
    if reader is not None:
        try:
            reader.close()
        except OSError:
            pass


def _watch_manager(cls):
    join = getattr(cls, "join_executor_internals", None)
    if join is None or getattr(join, "_stridemap_watch", False):
        return

    def join_executor_internals(self, *args, **kwargs):
        out = join(self, *args, **kwargs)
        # The workers are joined: nothing reads the call queue any more.
        release_queue(getattr(self, "call_queue", None))
        return out

    join_executor_internals._stridemap_watch = True
    join_executor_internals.__doc__ = join.__doc__
    cls.join_executor_internals = join_executor_internals
