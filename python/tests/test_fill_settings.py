"""The environment variables that turn off the fill's helpers (python/README.md, "Fresh
pages"): ``STRIDEMAP_FILL_THREADS=1`` (no helper thread: ``share`` writes with ``pwrite``
alone, ``empty`` does not fault its pages in ahead) and ``STRIDEMAP_USERFAULTFD=0`` (the helper
never places pages with userfaultfd). Observed from outside: the threads started during the
call (``threading.Thread.start``) and the ioctls made on a userfaultfd (``fcntl.ioctl`` with
``UFFDIO_COPY``, the kernel's request code)."""

import fcntl
import os
import threading

import numpy as np
import pytest

import stridemap

BIG = 32 << 20  # above the size from which a fill uses its helper (16 MiB)
UFFDIO_COPY = 0xC028AA03
# New segments' fills (a recycled one has none), and no other thread counted: recycling's own
# (segments.recycle) starts with the first recyclable use.
pytestmark = pytest.mark.usefixtures("new_segments_only")


def _two_cpus():
    return len(os.sched_getaffinity(0)) >= 2


@pytest.fixture
def seen(monkeypatch):
    """Counts of the threads started and the UFFDIO_COPY ioctls made, from now on."""
    counts = {"threads": 0, "uffd copies": 0}
    start, ioctl = threading.Thread.start, fcntl.ioctl

    def counting_start(self):
        counts["threads"] += 1
        return start(self)

    def counting_ioctl(fd, request, *args):
        if request == UFFDIO_COPY:
            counts["uffd copies"] += 1
        return ioctl(fd, request, *args)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    monkeypatch.setattr(fcntl, "ioctl", counting_ioctl)
    for name in ("STRIDEMAP_FILL_THREADS", "STRIDEMAP_USERFAULTFD"):
        monkeypatch.delenv(name, raising=False)
    return counts


def _share_big():
    a = np.arange(BIG // 8, dtype=np.float64)
    s = stridemap.share(a, reuse=False)
    np.testing.assert_array_equal(s[-1000:], a[-1000:])


def test_by_default_a_big_share_has_a_helper_thread(seen):
    if not _two_cpus():
        pytest.skip("this process may use one CPU: the fill never has a helper")
    _share_big()
    assert seen["threads"] >= 1


def test_fill_threads_1_means_no_helper_thread(seen, monkeypatch):
    monkeypatch.setenv("STRIDEMAP_FILL_THREADS", "1")
    _share_big()
    s = stridemap.empty((BIG // 8,), "<f8")
    s[:] = 1.0
    assert seen["threads"] == 0


def test_userfaultfd_0_means_the_helper_places_no_pages_with_it(seen, monkeypatch):
    if not _two_cpus():
        pytest.skip("this process may use one CPU: the fill never has a helper")
    _share_big()
    if seen["uffd copies"] == 0:
        pytest.skip("the helper does not use userfaultfd here (kernel, seccomp, architecture)")
    seen["uffd copies"] = 0
    monkeypatch.setenv("STRIDEMAP_USERFAULTFD", "0")
    _share_big()
    assert seen["uffd copies"] == 0 and seen["threads"] >= 2  # the helper ran, without it


@pytest.mark.parametrize("name, value", [("STRIDEMAP_FILL_THREADS", "many"),
                                         ("STRIDEMAP_FILL_THREADS", "0"),
                                         ("STRIDEMAP_USERFAULTFD", "no")])
def test_a_value_that_means_nothing_is_an_error_naming_the_variable(seen, monkeypatch, name,
                                                                    value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        stridemap.share(np.ones(16), reuse=False)
