"""joblib's ``"stridemap"`` backend: registered when :mod:`stridemap.pools` is imported.

It runs its own loky workers (never loky's process-wide reusable executor, which joblib's
default backend keeps using) and passes every ndarray argument and result of at least joblib's
``max_nbytes`` through stridemap (:mod:`stridemap.transport.handoff`), and every view of an
``np.memmap`` in place whatever its strides.

Where joblib's default (loky) backend lets workers write, so does this one: arguments are
mapped as joblib's ``mmap_mode`` says ("r", the default: read-only; "r+" and "w+": a writable
copy, shared; "c": copy-on-write, private to the worker; None: plain ndarrays are pickled, as
joblib copies them into the worker), and results come back writable, mapped copy-on-write (no
copy until the caller writes). A view of an ``np.memmap`` goes as the memmap allows, as joblib
sends it.

The backend is known in every worker that runs a joblib task, also one of joblib's own loky
backend: while this module is loaded, loky pickles joblib's tasks (``BatchedCalls``) so that
unpickling one imports it first, and a nested ``Parallel(backend="stridemap")`` finds it.
"""

import os
import signal
import sys
from typing import Any

from .. import forksafe
from ..transport import handoff as _handoff
from ..transport.handoff import Policy

try:
    import joblib
    import joblib.externals.loky.backend.reduction  # noqa: F401 - registered with below
    from joblib._parallel_backends import FallbackToBackend, LokyBackend, SequentialBackend
    from joblib.parallel import BatchedCalls
except ImportError:  # joblib is optional: the backend exists only where joblib does
    joblib = None

_executors_lock = forksafe.Lock()
_executor = None  # (key, loky executor): the backend's own, reused across Parallel calls
_retired = []  # executors shut down whose workers may still run (see _stop_orphans)


def _nbytes(value):
    """joblib's ``max_nbytes`` (an int, or a string such as "1M") in bytes; None stays None."""
    if value is None or isinstance(value, int):
        return value
    from joblib.disk import memstr_to_bytes

    return memstr_to_bytes(value)


def _get_executor(n_jobs, start_method, timeout, env, initializer, initargs, policy, mmap_mode):
    """The backend's loky executor for these settings: the running one when they match and it
    is healthy, else a new one (the old is shut down without killing running tasks)."""
    global _executor
    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.backend.context import get_context

    key = (n_jobs, start_method, timeout, tuple(sorted((env or {}).items())), initializer,
           tuple(initargs), policy, mmap_mode)
    with _executors_lock:
        if _executor is not None:
            old_key, ex = _executor
            flags = ex._flags
            if old_key == key and not flags.shutdown and flags.broken is None \
                    and not _orphaned(ex):
                return ex
            thread, queue = _internals(ex)
            ex.shutdown(wait=False)
            _retire(ex, thread, queue)
            _executor = None
        jobs = _handoff.Reducer(policy, "r+" if mmap_mode == "w+" else mmap_mode)
        results = _handoff.Reducer(policy, "c")  # joblib's results are writable
        ex = ProcessPoolExecutor(
            n_jobs,
            job_reducers={t: jobs for t in _handoff.array_types()},
            result_reducers={t: results for t in _handoff.array_types()},
            timeout=timeout,
            context=get_context(start_method) if start_method else None,
            initializer=initializer,
            initargs=initargs,
            env=env if start_method in (None, "loky", "loky_init_main") else None,
        )
        # joblib tells a LokyBackend's executor which Parallel call pickles (for its temporary
        # folders); stridemap has none.
        ex._temp_folder_manager = _NoTemporaryFolders()
        # Every worker it starts is remembered, also once loky's manager thread took it out of
        # the map to kill it: see _stop_orphans.
        ex._processes = _Workers(ex._processes)
        _executor = (key, ex)
        return ex


class _Workers(dict):
    """loky's map of an executor's worker processes (pid -> process), which also remembers
    every process ever put in it (``started``)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.started = list(self.values())

    def __setitem__(self, pid, process):
        super().__setitem__(pid, process)
        self.started.append(process)


class _NoTemporaryFolders:
    """What joblib's Parallel calls on a LokyBackend's executor, for its memmapping folders."""

    def set_current_context(self, context_id):
        pass


def _rebuild_batched_calls(rebuild, args):
    """A joblib task, in the worker that unpickles it (this module is imported by then)."""
    return rebuild(*args)


def shutdown_backend(*, kill_workers: bool = False) -> None:
    """Stop the ``"stridemap"`` backend's worker processes (a later call starts new ones)."""
    global _executor
    with _executors_lock:
        if _executor is not None:
            ex = _executor[1]
            _executor = None
            thread, queue = _internals(ex)
            ex.shutdown(wait=True, kill_workers=kill_workers)
            _retire(ex, thread, queue)
        _stop_orphans()


def _orphaned(ex):
    """Whether loky's manager thread of ``ex``, which alone joins its workers, has died
    (an ``EMFILE`` in psutil while it killed them, for one): nothing would ever stop them, and
    the interpreter's exit would wait on them for good."""
    thread = getattr(ex, "_executor_manager_thread", None)
    if thread is None or thread.is_alive():
        return False
    return any(_running(p) for p in getattr(getattr(ex, "_processes", None), "started", ()))


def _internals(ex):
    """``ex``'s manager thread and call queue, taken before a shutdown (which drops both)."""
    return getattr(ex, "_executor_manager_thread", None), getattr(ex, "_call_queue", None)


def _retire(ex, thread, queue):
    """Keep ``ex`` (its manager ``thread`` and call ``queue`` as they were before its shutdown)
    until its workers are gone (called with _executors_lock held)."""
    _retired.append((ex, thread, queue))
    _stop_orphans()


def _stop_orphans():
    """Kill and join the workers of the retired executors whose manager thread died, and let
    go of what their call queue carried; forget the retired executors that are done (called
    with _executors_lock held, and at exit)."""
    from ..transport import queue_offers

    for entry in list(_retired):
        ex, thread, queue = entry
        if thread is not None and thread.is_alive():
            continue  # loky's own shutdown is under way (after shutdown(wait=False) too)
        workers = getattr(ex, "_processes", None)
        processes = [p for p in getattr(workers, "started", ()) if _running(p)]
        for p in processes:
            try:
                os.kill(p.pid, signal.SIGKILL)  # loky's Popen has no kill()
            except (OSError, TypeError):
                pass
        for p in processes:
            try:
                p.join(5)
            except (OSError, ValueError, AttributeError):
                pass
        if processes:
            queue_offers.release_queue(queue)
        _retired.remove(entry)


def _running(process):
    try:
        return process.is_alive()
    except (OSError, ValueError, AssertionError):
        return False


def _stop_orphans_at_exit():
    with _executors_lock:
        if _executor is not None and _orphaned(_executor[1]):
            _retire(_executor[1], *_internals(_executor[1]))
        _stop_orphans()


# Before multiprocessing's exit function joins the children (its finalizers of priority >= 0
# run first): workers no manager thread will stop must not hold up the exit.
def _register_exit_stop():
    from multiprocessing import util

    util.Finalize(None, _stop_orphans_at_exit, exitpriority=1)


_register_exit_stop()


if joblib is not None:

    class StridemapBackend(LokyBackend):
        """joblib's loky backend with stridemap instead of joblib's memmapping reducers.

        Backend parameters (``joblib.parallel_config(backend="stridemap", ...)``):
        ``start_method`` of the workers ("loky", the default, "spawn", "forkserver" or
        "fork"); ``idle_worker_timeout`` (seconds, default 300);
        ``initializer``/``initargs``. ``max_nbytes`` (joblib's, default "1M") is the size from
        which plain ndarrays are shared; ``None`` shares only stridemap arrays and memmap views,
        as does ``mmap_mode=None``. ``mmap_mode`` (joblib's, default "r") is how workers map
        the plain ndarrays they receive (see the module's documentation).
        """

        def configure(self, n_jobs: int = 1, parallel: "joblib.Parallel | None" = None,
                      prefer: str | None = None, require: str | None = None,
                      idle_worker_timeout: float | None = None, **kwargs: Any) -> int:
            n_jobs = self.effective_n_jobs(n_jobs)
            if n_jobs == 1:
                raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
            kwargs = {**self.backend_kwargs, **kwargs}
            if idle_worker_timeout is None:
                idle_worker_timeout = kwargs.get("idle_worker_timeout", 300)
            max_nbytes = _nbytes(kwargs.get("max_nbytes", "1M"))
            mmap_mode = kwargs.get("mmap_mode", "r")
            if mmap_mode not in _handoff.MMAP_MODES:
                raise ValueError(f"mmap_mode must be one of {_handoff.MMAP_MODES}, not "
                                 f"{mmap_mode!r}")
            if mmap_mode is None:  # joblib then loads its dumps in memory: copies
                max_nbytes = None
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
                mmap_mode,
            )
            self.parallel = parallel
            if not getattr(self, "_reuse_scope", False):
                # The call's arguments are read once, as joblib reads them: an array passed to
                # many of its tasks is copied once (handoff.open_reuse_scope).
                _handoff.open_reuse_scope()
                self._reuse_scope = True
            return n_jobs

        def _close_reuse_scope(self) -> None:
            if getattr(self, "_reuse_scope", False):
                self._reuse_scope = False
                _handoff.close_reuse_scope()

        def terminate(self) -> None:
            # The workers stay for the next call; there are no temporary files to clean.
            self._workers = None
            self._close_reuse_scope()
            self.reset_batch_stats()

        def abort_everything(self, ensure_ready: bool = True) -> None:
            shutdown_backend(kill_workers=True)
            self._workers = None
            self._close_reuse_scope()
            if ensure_ready:
                self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def _reduce_batched_calls(batch):
        """loky's reduction of a joblib task while this module is loaded: the task's own,
        rebuilt by :func:`_rebuild_batched_calls`, whose import in the worker registers the
        backend there."""
        rebuild, args = batch.__reduce__()[:2]  # also tells joblib which call pickles it
        return _rebuild_batched_calls, (rebuild, args)

    joblib.register_parallel_backend("stridemap", StridemapBackend)
    _handoff.register_with_loky()
    joblib.externals.loky.backend.reduction.register(BatchedCalls, _reduce_batched_calls)
else:  # pragma: no cover - joblib is pinned in the test requirements

    class StridemapBackend:
        """Needs joblib (``pip install joblib``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("the 'stridemap' joblib backend needs joblib installed")
