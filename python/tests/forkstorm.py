"""Fork while another thread pickles shared arrays: ``python forkstorm.py FORKS ROOT``.

A fresh process (so that what stridemap builds on first use is built while it forks) starts a
thread that pickles and unpickles views of shared arrays without pause, as a Queue's feeder
thread does, and starts FORKS fork-context Processes meanwhile. Each child pickles and unpickles
the parent's arrays and arrays of its own (a memfd, and a named segment in ROOT), so it takes
every lock the package has on that path. A child still running after ``CHILD_DEADLINE`` seconds
is hung: faulthandler prints where, and it is counted. Prints one line,
``forks F hung H failed X``, and exits 0.
"""

import faulthandler
import multiprocessing
import os
import pickle
import sys
import threading
import traceback
import warnings
from multiprocessing import reduction

import numpy as np

import stridemap
import stridemap.pools

CHILD_DEADLINE = 10


def roundtrip(a):
    """A pickle of ``a`` as a pool sends it, received in this same process."""
    got = pickle.loads(bytes(reduction.ForkingPickler.dumps(a)))
    return float(got[:4].sum())


def child(arrays, root):
    faulthandler.dump_traceback_later(CHILD_DEADLINE, exit=True)  # exit code 1: hung
    try:
        for a in arrays:
            roundtrip(a[1:])
        roundtrip(stridemap.share(np.arange(64.0)))
        roundtrip(stridemap.share(np.arange(64.0), kind="file", temp_folder=root))
        stridemap.pools.install()
    except BaseException:
        traceback.print_exc()
        os._exit(3)  # failed, not hung
    faulthandler.cancel_dump_traceback_later()


def main(forks, root):
    stridemap.pools.install()
    arrays = [stridemap.share(np.arange(512.0)), stridemap.share(np.arange(512.0), kind="file")]
    stop = threading.Event()

    def feeder():
        i = 0
        while not stop.is_set():
            roundtrip(arrays[i % 2][i % 5:])
            i += 1

    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()  # its first pickle builds what stridemap builds on first use
    ctx = multiprocessing.get_context("fork")
    hung = failed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        for _ in range(forks):
            p = ctx.Process(target=child, args=(arrays, root))
            p.start()
            p.join(CHILD_DEADLINE + 20)
            if p.exitcode is None:  # not even faulthandler ran
                p.kill()
                p.join()
                hung += 1
            elif p.exitcode == 1:
                hung += 1
            elif p.exitcode != 0:
                failed += 1
    stop.set()
    thread.join()
    print(f"forks {forks} hung {hung} failed {failed}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
