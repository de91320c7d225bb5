"""A program that holds most of its fds itself: a plain array whose copy cannot get an fd is
pickled, as ``multiprocessing`` alone sends it, with one warning, instead of failing the task.
(``_fds_scarce`` counts only stridemap's own offers; EMFILE while making the copy or its
receiver's fd is what tells the rest.) Found by the second new-user trial of issue #19.
"""

import os
import subprocess
import sys

SCRIPT = r"""
import concurrent.futures, logging, multiprocessing, os, resource
import numpy as np, stridemap, stridemap.pools

logging.basicConfig(level=logging.WARNING, format="%(message)s")

if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    stridemap.pools.install(numpy=True, max_nbytes=1 << 16)
    ex = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    assert ex.submit(int, 1).result(60) == 1  # the worker is up: its pipes are made
    held = []
    try:
        while len(os.listdir("/proc/self/fd")) < 250:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    arrays = [np.full(1 << 15, float(i)) for i in range(40)]  # 256 KiB each
    futures = [ex.submit(np.sum, a) for a in arrays]
    got = [f.result(120) for f in futures]
    print("right", got == [float(i) * (1 << 15) for i in range(40)])
    for fd in held:
        os.close(fd)
    ex.shutdown()
"""


def test_plain_arrays_are_pickled_when_the_program_holds_the_fds(tmp_path):
    script = tmp_path / "held.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "right True" in out.stdout, out.stdout + out.stderr[-3000:]
    warnings = out.stderr.count("pickled (copied), not shared")
    assert warnings == 1, out.stderr[-3000:]  # said once, whatever the count
