"""Zero-copy process pools: ``multiprocessing``, ``concurrent.futures`` and joblib.

Two lines make a pool pass arrays as a descriptor plus an fd instead of pickling their bytes::

    import stridemap.pools
    stridemap.pools.install()            # or install(numpy=True) to share every large ndarray

Then ``multiprocessing.Pool``, ``Queue``, ``Process`` arguments and
``concurrent.futures.ProcessPoolExecutor`` hand over shared arrays (``stridemap.share``,
``stridemap.empty``, what ``stridemap.open`` returned, and any view of them, reversed or
transposed) without copying, as task arguments and as results. A worker registers the reducers
itself when it unpickles its first descriptor, so results come back the same way; a worker that
returns shared arrays before it has received one needs ``initializer=stridemap.pools.install``
(or fork). With ``numpy=True``, plain ndarrays of at least ``max_nbytes`` bytes are copied once
into a sealed memfd (``stridemap.share``, which reuses the segment while the same array object
lives) and views of an ``np.memmap`` are described in place. Smaller arrays, object and
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

from ..transport import handoff as _handoff
from ..transport.handoff import Policy

__all__ = ["Policy", "StridemapBackend", "install", "installed", "shutdown_backend", "uninstall"]


def install(*, numpy=False, max_nbytes=1 << 20):
    """Register stridemap's reducers with ``multiprocessing.reduction.ForkingPickler``.

    Call it in the parent before the pool pickles anything; calling it again replaces the
    policy. Usable as a pool ``initializer`` (no arguments: the default policy). Returns None.
    """
    _handoff.install(Policy(numpy=numpy, max_nbytes=max_nbytes))


def installed():
    """The :class:`Policy` in force in this process, or None before :func:`install`."""
    return _handoff.installed()


def uninstall():
    """Undo :func:`install`: arrays are pickled as ``multiprocessing`` always did."""
    _handoff.uninstall()


# joblib's backend, registered with joblib where it is installed (imported last: it uses the
# reducers above).
from .joblib_backend import StridemapBackend, shutdown_backend  # noqa: E402
