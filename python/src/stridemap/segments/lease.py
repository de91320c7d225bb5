"""One use of a mapping, whose end is seen: arrays whose base is a :class:`Lease`.

A segment that is recycled in place (:mod:`.recycle`, :mod:`stridemap.transport.mapcache`) is
mapped once and used again and again, so the end of a use cannot be the end of the mapping. An
array made by :func:`view` has a fresh ``Lease`` as its base, and every view of that array
keeps the array, hence the lease, alive (numpy stops collapsing a view's base at an object
that is not an ndarray); the lease keeps the mapping. When the last array of a use goes, the
lease goes, and its ``on_gone`` callback runs (a weak reference's callback: at once under
CPython's reference counting, in whatever thread dropped the last reference, or in the cyclic collector;
so a callback takes no lock it may already hold: see :func:`try_locked`).

:func:`stridemap.segments.backing.backing` walks ``base`` attributes, so an array of a lease is
found to be of the lease's mapping like any other.

A fork copies the leases a process holds into its child, where they also end some day. So a
lease remembers the fork epoch it was made in (:func:`epoch`, counted in the parent and the
child) and the process: ``on_gone`` is called with ``forked=True`` when a fork happened since
(the child may still hold arrays of the use: the use never ends for the callback's purpose),
and never in another process.

>>> import mmap
>>> mm = mmap.mmap(-1, 4096)
>>> gone = []
>>> at = address(np.frombuffer(mm, dtype=np.uint8))
>>> a = view(mm, at, (4,), "<f8", (8,), writable=True, on_gone=gone.append)
>>> b = a[::2]
>>> del a
>>> gone
[]
>>> del b
>>> gone
[False]
"""

import functools
import os
import weakref

import numpy as np

from .backing import address

_fork = {"epoch": 0}


def epoch():
    """How many forks this process and its ancestors made (since this module was imported)."""
    return _fork["epoch"]


def _forked():
    _fork["epoch"] += 1


os.register_at_fork(after_in_parent=_forked, after_in_child=_forked)


class Lease:
    """The base of the arrays of one use of ``base`` (a mapping): see the module."""

    __slots__ = ("base", "__array_interface__", "__weakref__")


def view(mm, at, shape, dtype, strides, *, writable, on_gone):
    """An array over ``mm`` (an ``mmap.mmap``) whose first element is at address ``at``, of
    ``shape``, ``dtype`` (a ``numpy.dtype``, or a typestr such as a descriptor's) and byte
    ``strides``, whose last view's end calls ``on_gone(forked)``
    (see the module). The caller has checked that the array lies inside ``mm``."""
    lease = Lease()
    lease.base = mm
    lease.__array_interface__ = {
        "data": (at, not writable), "shape": tuple(shape), "strides": tuple(strides),
        "typestr": dtype if type(dtype) is str else np.dtype(dtype).str, "version": 3,
    }
    array = np.asarray(lease)
    # A weak reference with a callback, kept here until it fires: lighter than a finalizer.
    _refs.add(weakref.ref(lease, functools.partial(_gone, os.getpid(), epoch(), on_gone)))
    return array


_refs = set()


def _gone(pid, made_in, on_gone, ref):
    _refs.discard(ref)
    if os.getpid() != pid:
        return
    on_gone(epoch() != made_in)
