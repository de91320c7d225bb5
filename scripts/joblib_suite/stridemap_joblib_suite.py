"""A pytest plugin: joblib's own tests of ``Parallel`` (``test_parallel.py``,
``test_memmapping.py``, as shipped in the pinned joblib wheel) with ``"stridemap"`` as joblib's
default backend, the way joblib's CI switches its default backend. Run by the ``joblib`` step of
``scripts/test.sh``.

It supplies what joblib's repository conftest.py gives those tests and the wheel lacks: the
check after each test that no thread-limiting variable leaked into the environment, the
markers of pytest plugins joblib's CI installs, and a watchdog (joblib's CI has pytest-timeout)
that prints every thread's stack and exits when a test hangs. joblib's ``memory`` fixture is not needed by these two files.

Parametrizations that name only joblib's own backends (``backend="loky"``,
``"multiprocessing"``, ``"threading"``, ``"sequential"``, the test's LokyBackend subclass; half
the run's time) are deselected: they run joblib's backends, which joblib's CI tests, and of
ours only the reduction of joblib's tasks that registers "stridemap" in loky's workers (which
``test_nested_loop[loky-stridemap]`` and python/tests/test_joblib_loky_parity.py cover).
``STRIDEMAP_JOBLIB_SUITE_ALL=1`` runs them too (about 6 min instead of 3 on two busy cores).

Every test that still fails is in ``KNOWN`` with the reason, marked strict xfail: one that
starts passing fails the run, so the list stays true. A listed test that is not collected any
more is an error too.
"""

import faulthandler
import os

import pytest

# A test that hangs (a lost worker, a lock): the stacks of every thread, then exit (the step
# fails). The slowest of these tests takes about 15 s on two busy cores.
HANG_SECONDS = 300
# The terminal's stderr, taken when pytest imports the plugin (-p), before it captures fd 2:
# the watchdog's stacks must reach the log, not a capture file.
_STDERR = os.fdopen(os.dup(2), "w")

_HINTING = ("hard-codes LokyBackend: asserts `type(Parallel(prefer='processes')._backend) is "
            "LokyBackend`, the class of joblib's default process backend, where the default "
            "backend here is StridemapBackend (a LokyBackend subclass)")

# Test id (as pytest prints it, relative to joblib/test/) -> why it fails with "stridemap".
KNOWN = {
    "test_parallel.py::test_backend_hinting_and_constraints[parallel_config]": _HINTING,
    "test_parallel.py::test_backend_hinting_and_constraints[parallel_backend]": _HINTING,
}

# The variables joblib's backends set in their workers to limit thread pools; a test must not
# leave them set in this process.
_THREAD_VARS = None


def pytest_configure(config):
    global _THREAD_VARS
    import joblib.parallel
    from joblib._parallel_backends import ParallelBackendBase

    import stridemap.pools  # registers the "stridemap" backend

    if joblib.parallel.BACKENDS.get("stridemap") is not stridemap.pools.StridemapBackend:
        raise pytest.UsageError("importing stridemap.pools did not register its joblib backend")
    joblib.parallel.DEFAULT_BACKEND = "stridemap"
    _THREAD_VARS = tuple(ParallelBackendBase.MAX_NUM_THREADS_VARS)
    for marker in ("thread_unsafe: pytest-run-parallel's (not installed here)",
                   "no_cover: pytest-cov's (not installed here)"):
        config.addinivalue_line("markers", marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _STDERR.flush()
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=_STDERR)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, config):
    n = config.stash.get(_DESELECTED, 0)
    if n:
        terminalreporter.write_line(
            f"stridemap: {n} parametrizations that run only joblib's own backends were "
            "deselected (STRIDEMAP_JOBLIB_SUITE_ALL=1 runs them)")


def pytest_report_header(config):
    import joblib
    import joblib.parallel

    return (f"joblib {joblib.__version__} from {os.path.dirname(joblib.__file__)}; default "
            f"backend {joblib.parallel.DEFAULT_BACKEND!r}; {len(KNOWN)} known failures (strict "
            "xfail)")


def _short_id(item):
    """The test's id relative to joblib/test/, as KNOWN spells it."""
    path = str(item.path)
    i = path.rfind(os.sep + "test" + os.sep)
    return path[i + 6:] + "::" + item.name


def _runs_only_joblibs_backends(item):
    """Whether the test's parameters name joblib backends (a name or an instance, in a
    parameter called ``*backend``), none of them "stridemap" nor the default (None)."""
    from stridemap.pools import StridemapBackend

    named = [v for k, v in getattr(item, "callspec", None).params.items()
             if k.endswith("backend")] if hasattr(item, "callspec") else []
    if not named:
        return False
    return not any(v is None or v == "stridemap" or isinstance(v, StridemapBackend)
                   for v in named)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("STRIDEMAP_JOBLIB_SUITE_ALL") != "1":
        others = [item for item in items if _runs_only_joblibs_backends(item)]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = [item for item in items if not _runs_only_joblibs_backends(item)]
            config.stash[_DESELECTED] = len(others)
    found = set()
    for item in items:
        reason = KNOWN.get(_short_id(item))
        if reason is not None:
            found.add(_short_id(item))
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    missing = sorted(set(KNOWN) - found)
    if missing:
        raise pytest.UsageError(
            f"tests listed in KNOWN ({__file__}) were not collected: {missing}; a new joblib "
            "renamed or dropped them: update the list")


@pytest.fixture(autouse=True)
def no_thread_limits_leak():
    """joblib's check after each test: its backends set these variables only in workers."""
    before = {k: os.environ.get(k) for k in _THREAD_VARS}
    yield
    after = {k: os.environ.get(k) for k in _THREAD_VARS}
    leaked = {k: v for k, v in after.items() if v != before[k]}
    assert not leaked, f"the test left thread-limiting variables changed: {leaked}"
