"""What a pool process gets in place of an array it could not receive: a stand-in that raises.

A receive fails inside an unpickle (the sender is gone, this process is out of fds, or the fd
fails a rule of SPEC §6 against its descriptor: a segment resized, replaced or recycled), and
no exception raised there reaches the task. ``multiprocessing.pool.worker`` takes an
``OSError`` from its queue's ``get()`` (every ``OpenError`` is one) for the end of its input:
the worker exits, the task is lost and ``map`` waits forever; any other exception kills the
worker all the same. ``concurrent.futures``' and loky's workers die on it too, and their
executors then fail every task as broken. So the unpickle never raises: it returns an
:class:`Unreceived` in the array's place, and every use of that raises the receive's error
(its rule, and what to do, in the message). In a task that is where the pool reports it, as
that task's exception; a result the parent could not receive raises where the parent uses it.
"""

import copy
import errno
import logging

from ..codec import errors

log = logging.getLogger("stridemap.pools")

# What to do, by the rule that refused the fd.
_FIXES = {
    "O6": "the sender handed something that is not a regular file: share the array with "
          "stridemap.share",
    "O7": "the shared file was resized or replaced after it was sent: leave an array's file "
          "alone until the tasks it is sent to have started, or share the array again",
    "O9": "a memfd must be sealed against shrinking: share the array with stridemap.share, "
          "whose memfds are",
    "O10": "the segment was recycled or is not a stridemap segment: the sender must keep the "
           "array alive until the tasks it is sent to have started",
    "O11": "the mapping failed: this process may be out of address space or mappings "
           "(ulimit -v, vm.max_map_count)",
    "": "the producer held the segment locked (it was recycling or deleting it): send the "
        "array again",
}
_FIXES["O8"] = _FIXES["O7"]


def error_of(e):
    """The error an :class:`Unreceived` raises for a receive that failed with ``e``: for
    stridemap's errors the same class with the rule's fix in its message; others as they are.
    Its ``__cause__`` is ``e``."""
    if not isinstance(e, errors.StridemapError):
        return e
    message = f"stridemap.pools: a shared array sent to this process could not be received: {e}"
    fix = _FIXES.get(e.rule) if isinstance(e, errors.OpenError) else None
    if getattr(e, "errno", None) in (errno.EMFILE, errno.ENFILE):
        fix = ("this process is out of file descriptors (a receive needs one while it maps; "
               "a received array holds none, except, before Python 3.13, a mapping of 2 MiB "
               "or more; the segments this process made hold one each): raise the limit "
               "(`ulimit -n`, resource.setrlimit(RLIMIT_NOFILE)) or let go of arrays and files")
    if fix is None and isinstance(e, errors.DescriptorError):
        fix = ("the descriptor did not survive the trip (rule " + e.rule + "): the sender and "
               "this process must run the same stridemap")
    if fix is not None:
        message = f"{message}; {fix}"
    return _same(e, message, cause=e)


def _same(e, message, cause):
    """A new exception of ``e``'s class, with ``message`` and ``e``'s fields; ``e`` itself when
    its class takes other arguments."""
    try:
        if isinstance(e, errors.StaleSegment):
            new = type(e)(message, e.errno, e.found)
        elif isinstance(e, (errors.OpenError, errors.ProducerError)):
            new = type(e)(message, e.errno)
        elif isinstance(e, errors.StridemapError):
            new = type(e)(message)
        else:
            new = copy.copy(e)
    except (TypeError, copy.Error):
        return e
    new.__cause__ = cause
    return new


def stand_in(e):
    """An :class:`Unreceived` for a receive that failed with ``e``, said in the log."""
    error = error_of(_without_tracebacks(e))
    log.warning("%s (the array's place holds a stand-in that raises this where it is used)",
                error)
    return Unreceived(error)


def _without_tracebacks(e, depth=8):
    """``e``, and the exceptions it chains to, without their tracebacks: their frames lead, by
    their callers, to the frame that unpickled the stand-in and holds it, a cycle that would
    keep those frames (and what they hold) until a collection."""
    if e is not None and depth:
        e.__traceback__ = None
        _without_tracebacks(e.__cause__, depth - 1)
        _without_tracebacks(e.__context__, depth - 1)
    return e


class Unreceived:
    """An array that was sent but could not be received: every use raises :attr:`error`.

    Its ``repr`` says so; pickling it (returning it from a task) raises too.
    """

    __slots__ = ("error",)

    def __init__(self, error):
        object.__setattr__(self, "error", error)

    def _fail(self, *args, **kwargs):
        # A new exception each time: raised, the stored one would get a traceback whose frames
        # hold this stand-in, a cycle that keeps them (and what they hold) until a collection.
        error = self.error
        raise _same(error, str(error), cause=error.__cause__)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            # Protocol probes (copy, pickle, numpy, inspect) look for what is not here.
            raise AttributeError(name)
        self._fail()

    def __repr__(self):
        return f"<stridemap array not received: {self.error}>"

    __str__ = __repr__

    __setattr__ = __delattr__ = __reduce_ex__ = __reduce__ = _fail
    __array__ = __array_ufunc__ = __array_function__ = __buffer__ = _fail
    __getitem__ = __setitem__ = __delitem__ = __len__ = __iter__ = __contains__ = _fail
    __bool__ = __int__ = __float__ = __complex__ = __index__ = _fail
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _fail
    __neg__ = __pos__ = __abs__ = __invert__ = _fail


for _op in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow",
            "lshift", "rshift", "and", "xor", "or"):
    for _name in (f"__{_op}__", f"__r{_op}__", f"__i{_op}__"):
        setattr(Unreceived, _name, Unreceived._fail)
del _op, _name
