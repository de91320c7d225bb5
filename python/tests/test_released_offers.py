"""An offer its receiver released (it took the fd with pidfd_getfd, or maps the segment
already) holds its fd and the array it keeps until the sender reads its mailboxes. A worker
whose results are ``stridemap.share`` copies (no ``empty()``, whose recycle hook reads them,
no plain-ndarray path, whose fd count reads them) must read them as it offers the next: it
then keeps at most the result in flight, not a pile of released ones (up to 16 times the
result size of memory nobody uses, for up to a second, when only lazy offers read them)."""

import os
import subprocess
import sys
import textwrap

import pytest

from stridemap.transport import channel, fetch

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, os, time
    import numpy as np
    import stridemap, stridemap.pools
    from stridemap.transport import channel

    MB = 1 << 20
    peak = {"offers": 0, "bytes": 0}

    def work(i):
        # what this worker still holds for results its caller released already
        held = [e for e in list(channel._offered.values()) if e[0] is not None]
        pinned = sum(e[1].nbytes for e in held if hasattr(e[1], "nbytes"))
        peak["offers"] = max(peak["offers"], len(held))
        peak["bytes"] = max(peak["bytes"], pinned)
        time.sleep(0.003)
        return stridemap.share(np.full(MB // 8, float(i))), dict(peak)

    if __name__ == "__main__":
        stridemap.pools.install()
        with mp.get_context("fork").Pool(1, initializer=stridemap.pools.install) as pool:
            for i in range(60):
                out, peak_now = pool.apply(work, (i,))  # one at a time: each received, then
                assert (out == i).all()                  # released, before the next task
                del out
        print("offers", peak_now["offers"], "MiB", peak_now["bytes"] // MB)
""")


@pytest.mark.skipif(fetch._pidfd_getfd is None, reason="no pidfd_getfd: results are fetched")
def test_a_worker_pins_no_more_than_a_result_or_two_its_caller_released():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": SRC}, cwd=HERE)
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    offers, mib = int(words[words.index("offers") + 1]), int(words[words.index("MiB") + 1])
    if offers == 0:
        pytest.skip("the results were fetched over the channel (no pidfd_getfd here)")
    # Released results still held (fd + array) when the next task starts: 1 before the change.
    assert offers <= 2 and mib <= 2, out.stdout
