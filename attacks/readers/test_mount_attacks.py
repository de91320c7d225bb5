"""Attacks through the mount table on the Python package: any user can add a mount point
with any name (FUSE). attacks/tests/mounts.rs makes the same attack on Rust's.

Run by `bash scripts/test.sh attacks` with the repository's .venv.
"""

import os
import shutil
import subprocess
import sys

CHILD = """
import sys, numpy as np, stridemap
from stridemap.segments import huge
folder = sys.argv[1]
s = stridemap.share(np.zeros(1 << 19), kind="file", temp_folder=folder)
e = stridemap.empty((1 << 19,), "f8", kind="file", temp_folder=folder)
m = stridemap.share(np.zeros(1 << 19))
print("in the namespace:", huge.page_backing(s), huge.page_backing(e), huge.page_backing(m))
assert huge.page_backing(s) == "thp-file", huge.page_backing(s)
"""


def test_a_non_utf8_mount_point_breaks_nothing(tmp_path):
    """Issue 19 item 2: a mount point whose name is not UTF-8, anywhere on the system, made
    share() and empty() raise UnicodeDecodeError (mountinfo was read as text). In a private
    mount namespace (unshare -m, root) a tmpfs mounted huge=within_size and another on a
    folder named b'\\xff'; a child shares into the first: it works, in huge pages."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"]).returncode != 0:
        print("variant: NOT RUN: needs root and unshare -m to mount in a private namespace")
        return
    print("variant: a private mount namespace (unshare -m)")
    thp = tmp_path / "thp"
    thp.mkdir()
    script = """set -e
        mount -t tmpfs -o size=64m,huge=within_size stridemap-thp "$1"
        odd="$2/$(printf '\\377')"
        mkdir "$odd"
        mount -t tmpfs -o size=1m stridemap-odd "$odd"
        exec "$0" -c "$3" "$1"
    """
    out = subprocess.run(["unshare", "-m", "bash", "-c", script, sys.executable, str(thp),
                          str(tmp_path), CHILD], capture_output=True, text=True, timeout=60)
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "in the namespace" in out.stdout, out.stderr
