"""python/README.md's code: every ```python block runs as written, each in a fresh process.

The block marked as run by tests/tests/python_interop.rs needs a live Rust producer (its socket
path in argv[1]); that test runs it verbatim, so it is only listed here. A block that makes a
folder for its files names it ``folder``; the runner removes it afterwards.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
RUST_MARKER = "run verbatim by tests/tests/python_interop.rs"

RUNNER = textwrap.dedent("""
    import os, shutil, sys
    code = sys.stdin.read()
    ns = {"__name__": "__main__"}
    try:
        exec(compile(code, "README.md block", "exec"), ns)
    finally:
        folder = ns.get("folder")
        if isinstance(folder, str) and os.path.isdir(folder):
            shutil.rmtree(folder)
""")


def _blocks():
    """(index, code, runs_here) for every ```python block of the README."""
    with open(README) as f:
        text = f.read()
    out = []
    for i, m in enumerate(re.finditer(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```",
                                      text, re.S)):
        out.append((i, m["code"], RUST_MARKER not in m["before"]))
    return out


BLOCKS = _blocks()


def test_the_readme_has_blocks_and_one_is_left_to_the_rust_test():
    assert len(BLOCKS) >= 3
    assert [runs for _, _, runs in BLOCKS].count(False) == 1


@pytest.mark.parametrize("code", [code for _, code, runs in BLOCKS if runs],
                         ids=[f"block{i}" for i, _, runs in BLOCKS if runs])
def test_the_block_runs_as_written(code, tmp_path):
    out = subprocess.run([sys.executable, "-c", RUNNER], input=code, capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, f"{code}\n--- stderr:\n{out.stderr[-3000:]}"
