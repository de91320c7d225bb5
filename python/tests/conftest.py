"""Shared by the tests: a tiny real tmpfs, and the pool matrix's counts, printed at the end of
the run."""

import os
import subprocess
import tempfile

import pytest

from stridemap.segments import lifetime


@pytest.fixture
def tiny_tmpfs():
    """A real 2 MiB tmpfs (we run as root in CI), or None when mounting is not possible."""
    d = tempfile.mkdtemp(prefix="stridemap-tiny-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"note: cannot mount a tmpfs ({r.stderr.strip() or r.returncode}): the full-shm "
              "cases run against a simulated ENOSPC instead")
        os.rmdir(d)
        yield None
        return
    try:
        yield d
    finally:
        try:
            # Forget this process's folder there before the mount goes.
            for root, folder in list(lifetime._state.folders.items()):
                if root == os.path.realpath(d):
                    folder.remove()
                    del lifetime._state.folders[root]
        finally:  # the mount goes whatever happened above
            subprocess.run(["umount", "-l", d], check=False)  # lazy: an array may live on
            os.rmdir(d)



def pytest_terminal_summary(terminalreporter):
    import sys

    pw = sys.modules.get("poolwork")
    matrix = getattr(pw, "MATRIX", None)
    if not matrix:
        return
    w = terminalreporter.write_line
    total = matrix["passed"] + len(matrix["failed"]) + len(matrix["not run"])
    w(f"stridemap.pools matrix: {total} cases, {matrix['passed']} passed (byte for byte and "
      f"zero-copy), {len(matrix['failed'])} failed, {len(matrix['not run'])} not run; "
      f"{len(matrix['vacuous'])} of the passed have no bytes (empty arrays: zero-copy is vacuous)")
    for line in matrix["failed"]:
        w(f"  FAILED {line}")
    for line in matrix["not run"][:1]:
        w(f"  not run: {line} (and {len(matrix['not run']) - 1} more of that pool)")


@pytest.fixture(scope="module", autouse=True)
def nothing_waiting_between_modules():
    """The segments a module's own process made and let go of wait for reuse
    (segments.recycle) in no later module: ``empty()``'s contents are unspecified, and a test
    of new segments must not get one a module before left."""
    yield
    from stridemap.segments import recycle

    recycle.clear()


@pytest.fixture
def new_segments_only(monkeypatch):
    """For tests about new segments: empty() recycles none while it is in force
    (segments.recycle)."""
    from stridemap.segments import recycle

    recycle.clear()
    monkeypatch.setattr(recycle, "MAX_BYTES", 0)
    yield
    recycle.clear()

