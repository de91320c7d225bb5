"""joblib's ``"stridemap"`` backend: registered when :mod:`stridemap.pools` is imported.

It runs its own loky workers (never loky's process-wide reusable executor, which joblib's
default backend keeps using) and passes every ndarray argument and result of at least joblib's
``max_nbytes`` through stridemap (:mod:`stridemap.transport.handoff`), and every view of an
``np.memmap`` in place whatever its strides.
"""

import sys

from .. import forksafe
from ..transport import handoff as _handoff
from ..transport.handoff import Policy

try:
    import joblib
    import joblib.externals.loky.backend.reduction  # noqa: F401 - registered with below
    from joblib._parallel_backends import FallbackToBackend, LokyBackend, SequentialBackend
except ImportError:  # joblib is optional: the backend exists only where joblib does
    joblib = None

_executors_lock = forksafe.Lock()
_executor = None  # (key, loky executor): the backend's own, reused across Parallel calls


def _nbytes(value):
    """joblib's ``max_nbytes`` (an int, or a string such as "1M") in bytes; None stays None."""
    if value is None or isinstance(value, int):
        return value
    from joblib.disk import memstr_to_bytes

    return memstr_to_bytes(value)


def _get_executor(n_jobs, start_method, timeout, env, initializer, initargs, policy):
    """The backend's loky executor for these settings: the running one when they match and it
    is healthy, else a new one (the old is shut down without killing running tasks)."""
    global _executor
    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.backend.context import get_context

    key = (n_jobs, start_method, timeout, tuple(sorted((env or {}).items())), initializer,
           tuple(initargs), policy)
    with _executors_lock:
        if _executor is not None:
            old_key, ex = _executor
            flags = ex._flags
            if old_key == key and not flags.shutdown and flags.broken is None:
                return ex
            ex.shutdown(wait=False)
            _executor = None
        reducer = _handoff.Reducer(policy)
        reducers = {t: reducer for t in _handoff.array_types()}
        ex = ProcessPoolExecutor(
            n_jobs,
            job_reducers=reducers,
            result_reducers=reducers,
            timeout=timeout,
            context=get_context(start_method) if start_method else None,
            initializer=initializer,
            initargs=initargs,
            env=env if start_method in (None, "loky", "loky_init_main") else None,
        )
        # joblib tells a LokyBackend's executor which Parallel call pickles (for its temporary
        # folders); stridemap has none.
        ex._temp_folder_manager = _NoTemporaryFolders()
        _executor = (key, ex)
        return ex


class _NoTemporaryFolders:
    """What joblib's Parallel calls on a LokyBackend's executor, for its memmapping folders."""

    def set_current_context(self, context_id):
        pass


def shutdown_backend(*, kill_workers=False):
    """Stop the ``"stridemap"`` backend's worker processes (a later call starts new ones)."""
    global _executor
    with _executors_lock:
        if _executor is not None:
            _executor[1].shutdown(wait=True, kill_workers=kill_workers)
            _executor = None


if joblib is not None:

    class StridemapBackend(LokyBackend):
        """joblib's loky backend with stridemap instead of joblib's memmapping reducers.

        Backend parameters (``joblib.parallel_config(backend="stridemap", ...)``):
        ``start_method`` of the workers ("loky", the default, "spawn", "forkserver" or
        "fork"); ``idle_worker_timeout`` (seconds, default 300);
        ``initializer``/``initargs``. ``max_nbytes`` (joblib's, default "1M") is the size from
        which plain ndarrays are shared; ``None`` shares only stridemap arrays and memmap views.
        """

        def configure(self, n_jobs=1, parallel=None, prefer=None, require=None,
                      idle_worker_timeout=None, **kwargs):
            n_jobs = self.effective_n_jobs(n_jobs)
            if n_jobs == 1:
                raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
            kwargs = {**self.backend_kwargs, **kwargs}
            if idle_worker_timeout is None:
                idle_worker_timeout = kwargs.get("idle_worker_timeout", 300)
            max_nbytes = _nbytes(kwargs.get("max_nbytes", "1M"))
            policy = Policy(numpy=True, max_nbytes=max_nbytes if max_nbytes is not None
                            else sys.maxsize)
            self._workers = _get_executor(
                n_jobs,
                kwargs.get("start_method"),
                idle_worker_timeout,
                self._prepare_worker_env(n_jobs=n_jobs),
                kwargs.get("initializer"),
                tuple(kwargs.get("initargs", ())),
                policy,
            )
            self.parallel = parallel
            return n_jobs

        def terminate(self):
            # The workers stay for the next call; there are no temporary files to clean.
            self._workers = None
            self.reset_batch_stats()

        def abort_everything(self, ensure_ready=True):
            shutdown_backend(kill_workers=True)
            self._workers = None
            if ensure_ready:
                self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    joblib.register_parallel_backend("stridemap", StridemapBackend)
    _handoff.register_with_loky()
else:  # pragma: no cover - joblib is pinned in the test requirements

    class StridemapBackend:
        """Needs joblib (``pip install joblib``)."""

        def __init__(self, *args, **kwargs):
            raise ImportError("the 'stridemap' joblib backend needs joblib installed")
