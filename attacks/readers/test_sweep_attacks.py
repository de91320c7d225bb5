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


def test_the_sweep_symlink_swap_never_deletes_outside_the_root(tmp_path):
    """Issue 19 item 6 (issue 10 item 1 for the Python sweep, as attacks/tests/gc.rs makes it
    on Rust's): a folder swapped for a symbolic link to a victim folder while the sweep works
    through it (renameat2 RENAME_EXCHANGE, atomic) must never make the sweep delete a file
    outside its root; and some sweeps must have removed the real folder meanwhile, or the
    race proved nothing."""
    import ctypes
    import threading
    import time

    import stridemap

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    victim = outside / "seg-0"
    victim.write_bytes(b"victim")
    name, link = root / ORPHAN, root / "link"
    name.mkdir()
    link.symlink_to(outside)
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    at_fdcwd, exchange = -100, 2

    def swap():
        return renameat2(at_fdcwd, bytes(name), at_fdcwd, bytes(link), exchange) == 0

    stop, swaps = threading.Event(), [0]

    def swapper():
        while not stop.is_set():
            try:  # the real folder has the name here: give it its file back
                name.mkdir(exist_ok=True)
                (name / "seg-0").write_bytes(b"segment")
            except OSError:
                pass
            time.sleep((swaps[0] % 50) / 1e6)
            if swap():  # now the link has the name, for a while
                time.sleep((swaps[0] % 70) / 1e6)
                while not swap():
                    pass
            swaps[0] += 1

    t = threading.Thread(target=swapper)
    t.start()
    sweeps = removed = deleted = 0
    try:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            removed += len(stridemap.sweep(root).removed)
            sweeps += 1
            if not victim.exists():
                deleted += 1
                victim.write_bytes(b"victim")
    finally:
        stop.set()
        t.join()
    print(f"{sweeps} sweeps against {swaps[0]} swaps: {removed} folders removed, "
          f"{deleted} deletions outside the root")
    assert sweeps > 100 and swaps[0] > 100, "the race did not run"
    assert removed > 0, "no sweep removed the folder: the race proved nothing"
    assert deleted == 0, "the sweep deleted a file outside its root"
