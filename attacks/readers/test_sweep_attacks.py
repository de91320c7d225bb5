"""Attacks on the Python sweep (stridemap.sweep, SPEC §7.5), as attacks/tests/gc.rs makes
them on Rust's: the two sweeps follow the same rules.

Run by `bash scripts/test.sh attacks` with the repository's .venv.
"""

import os
import subprocess
import sys

ORPHAN = "stridemap-1-0-0123456789abcdef0123456789abcdef"


def test_a_folder_of_300_files_is_swept_at_an_fd_limit_of_256(tmp_path):
    """Issue 19 item 5: the sweep held a locked fd per file, so at RLIMIT_NOFILE 256 a dead
    producer's folder of 300 files failed with EMFILE and was kept forever. It locks and
    unlinks in bounded batches now. The sweep runs in a child with the limit set."""
    folder = tmp_path / ORPHAN
    folder.mkdir()
    for i in range(300):
        (folder / f"seg-{i}").write_bytes(b"segment")
    code = ("import resource, sys, stridemap\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
            "r = stridemap.sweep(sys.argv[1])\n"
            "print(r)\n"
            "sys.exit(0 if r.succeeded() else 1)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    print(out.stdout, out.stderr)
    assert not folder.exists(), f"the folder of 300 files was kept: {out.stdout}{out.stderr}"
    assert out.returncode == 0
