"""Attacks on the Python producer's pool folders (stridemap.segments.roots), as
attacks/tests/pool.rs makes them on Rust's.

Run by `bash scripts/test.sh attacks` with the repository's .venv.
"""

import ctypes
import fcntl
import os
import struct
import subprocess
import sys
import threading

IN_CREATE = 0x100


class Locker:
    """A process of the same user that takes LOCK_EX on every new stridemap-* folder of
    ``root`` as soon as inotify shows it, and holds it until :meth:`stop`."""

    def __init__(self, root):
        self.root, self.wins, self.held, self.done = root, 0, [], False
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0 and libc.inotify_add_watch(self.fd, os.fsencode(root), IN_CREATE) >= 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            data, at = os.read(self.fd, 4096), 0
            while at < len(data):
                _, _, _, n = struct.unpack_from("iIII", data, at)
                name = data[at + 16:at + 16 + n].rstrip(b"\0")
                at += 16 + n
                if not name.startswith(b"stridemap-"):
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.root_fd)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self.wins += 1
                    self.held.append(fd)
                except OSError:
                    os.close(fd)

    def stop(self):
        self.done = True
        os.mkdir(os.path.join(self.root, "wake"))
        self.thread.join(10)
        os.rmdir(os.path.join(self.root, "wake"))
        for fd in self.held + [self.fd, self.root_fd]:
            os.close(fd)
        return self.wins


CHILD = """
import sys, numpy as np, stridemap
stridemap.share(np.zeros(1 << 10), kind="file", temp_folder=sys.argv[1])
"""


def test_a_locker_of_new_pool_folders_makes_no_hang_and_leaves_nothing(tmp_path):
    """Issue 19 item 7: a same-user process that locks every new pool folder first made
    share(kind="file") fail after 16 names, leaving 16 empty folders. The lock is waited for a
    little now, and a folder that stays locked is removed before another is tried: each of 16
    producers ends within 20 s, and nothing is left in the root."""
    root = str(tmp_path)
    locker = Locker(root)
    outcomes = []
    try:
        # 16 producers, and more (up to 200) until the locker has won a race at least once: on a
        # busy machine its thread may lose the first 16 (then nothing would have been shown).
        for i in range(200):
            if i >= 16 and locker.wins > 0:
                break
            out = subprocess.run([sys.executable, "-c", CHILD, root], capture_output=True,
                                 text=True, timeout=20)
            outcomes.append("ok" if out.returncode == 0 else out.stderr.strip().splitlines()[-1])
            assert out.returncode == 0 or "stayed locked" in out.stderr, out.stderr
    finally:
        wins = locker.stop()
    left = sorted(os.listdir(root))
    print(f"{outcomes.count('ok')} shared, {len(outcomes) - outcomes.count('ok')} refused; "
          f"the locker locked {wins} folders first")
    assert not left, f"left behind: {left}"
    if wins == 0:  # said, not failed: no hang and nothing left is what this test holds to
        print("NOT SHOWN: the locker never won a race in 200 producers here, so the refusal "
              "path was not exercised (attacks/tests/pool.rs races it from Rust)")
