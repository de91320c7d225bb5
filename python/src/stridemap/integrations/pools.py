"""Zero-copy process pools: ``multiprocessing``, ``concurrent.futures`` and joblib.

Two lines make a pool pass arrays as a descriptor plus an fd instead of pickling their bytes::

    import stridemap.pools
    stridemap.pools.install()            # or install(numpy=True) to share every large ndarray

Then ``multiprocessing.Pool``, ``Queue``, ``Process`` arguments and
``concurrent.futures.ProcessPoolExecutor`` hand over shared arrays (``stridemap.share``,
``stridemap.empty``, what ``stridemap.open`` returned, and any view of them, reversed or
transposed) without copying, as task arguments and as results. A worker registers the reducers
itself when it unpickles its first descriptor, so results come back the same way; a worker that
returns shared arrays before it has received one needs ``initializer=stridemap.pools.install``,
which takes the parent's policy under every start method (see :func:`install`). With
``numpy=True``, plain ndarrays of at least ``max_nbytes`` bytes are copied into a sealed memfd
each time they are pickled (they may change in place between two tasks; joblib's backend copies
an array once per ``Parallel`` call; ``stridemap.share`` an array that stays as it is to hand it
over any number of times with no copy) and views of an ``np.memmap`` are described in place. Smaller arrays, object and
structured dtypes are pickled as before (a debug log line on the ``stridemap.pools`` logger says
why).

joblib: importing this module registers the backend ``"stridemap"``::

    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        joblib.Parallel()(joblib.delayed(f)(m[::-1]) for _ in range(4))

It runs its own loky workers (never loky's process-wide reusable executor, which joblib's
default backend keeps using) and passes every ndarray argument and result of at least joblib's
``max_nbytes`` through stridemap, and every view of an ``np.memmap`` in place whatever its
strides. Arrays from ``stridemap.share`` also go zero-copy through joblib's default backend.

>>> import concurrent.futures, multiprocessing, numpy as np, stridemap, stridemap.pools
>>> stridemap.pools.install()
>>> a = stridemap.share(np.arange(6.0).reshape(2, 3))
>>> ctx = multiprocessing.get_context("spawn")
>>> with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
...     float(pool.submit(np.sum, a.T[::-1]).result())
15.0
"""

import functools

from ..transport import handoff as _handoff
from ..transport.handoff import Policy

__all__ = ["Policy", "StridemapBackend", "install", "installed", "shutdown_backend", "uninstall"]


def _install(*, numpy: bool | None = None, max_nbytes: int | None = None) -> None:
    """Register stridemap's reducers with ``multiprocessing.reduction.ForkingPickler``.

    Call it in the parent before the pool pickles anything. With arguments it installs the
    :class:`Policy` they make (one left out takes its default: ``numpy=False``,
    ``max_nbytes=1 << 20``), replacing the policy in force. Without arguments it never changes
    a policy already known, so it is the pool initializer that gives every worker the parent's
    policy, whatever the start method (``initializer=stridemap.pools.install``): it installs
    the policy in force in this process (installed here, or inherited by fork), else the one
    the parent had in force when it pickled ``install`` to start this process (spawn,
    forkserver, loky: ``install`` pickles with it), else the default policy, which the first
    array received from a parent then replaces with the parent's. To go back to the defaults,
    pass them, or :func:`uninstall` first.
    """
    if numpy is None and max_nbytes is None:
        _handoff.install_known()
        return
    _handoff.install(Policy(numpy=False if numpy is None else numpy,
                            max_nbytes=1 << 20 if max_nbytes is None else max_nbytes))


class _Install:
    """The type of :func:`install`: a function that pickles with the policy in force, so that
    a worker started with ``initializer=install`` knows its parent's policy."""

    def __call__(self, *, numpy: bool | None = None, max_nbytes: int | None = None) -> None:
        _install(numpy=numpy, max_nbytes=max_nbytes)

    def __reduce__(self):
        policy = _handoff.pass_on()
        return "install" if policy is None else (_install_from_parent, (policy,))

    def __repr__(self):
        return f"<function {__name__}.install>"


def _install_from_parent(policy):
    """Unpickling ``install`` in a child: remember the parent's policy; ``install`` itself."""
    _handoff.note_parents_policy(policy)
    return install


install = functools.update_wrapper(_Install(), _install)
install.__qualname__ = install.__name__ = "install"


def installed() -> Policy | None:
    """The :class:`Policy` in force in this process, or None before :func:`install`."""
    return _handoff.installed()


def uninstall() -> None:
    """Undo :func:`install`: arrays are pickled as ``multiprocessing`` always did, and no
    policy is known (a bare :func:`install` then installs the default)."""
    _handoff.uninstall()


# joblib's backend, registered with joblib where it is installed (imported last: it uses the
# reducers above).
from .joblib_backend import StridemapBackend, shutdown_backend  # noqa: E402
