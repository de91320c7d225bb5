"""Fixtures for the C reader's tests: the test programs, built once with the sanitizers.

The Python reader's test helpers (vectors, random layouts) are shared from python/tests.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

C_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(C_DIR.parent.parent / "python" / "tests"))


@pytest.fixture(scope="session")
def c_build():
    """readers/c/build, built by build.sh unless the caller (scripts/test.sh) just did."""
    if os.environ.get("STRIDEMAP_C_BUILT") != "1":
        subprocess.run(["bash", str(C_DIR / "build.sh")], check=True)
    return C_DIR / "build"


def run_lines(program, lines, args=(), **kw):
    """Runs a test program with one input per line; returns its output lines as JSON objects."""
    out = subprocess.run(
        [str(program), *args], input="".join(line + "\n" for line in lines),
        capture_output=True, text=True, timeout=120, **kw,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(lines)
    return results
