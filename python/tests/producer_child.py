"""A producer process for the lifetime tests (test_lifetime.py).

    producer_child.py ROOT MODE

Shares arrays of both kinds (named segments below ROOT), prints one JSON line
{"folder", "paths", "records": [hex], "pid"} and then, by MODE:
  exit   returns normally (the pool folder must be gone afterwards);
  pending  also opens one of its own named segments as a consumer would, drops the producer's
           array (the segment is pending: mapped), and exits normally;
  sleep  sleeps until killed (kill -9: the folder is left for a sweep);
  fork   forks a child that shares too and exits normally, then exits normally itself.
"""

import json
import os
import sys
import time

import numpy as np

import stridemap


def main():
    root, mode = sys.argv[1], sys.argv[2]
    keep = [
        stridemap.share(np.arange(1000.0)[::-1], kind="file", temp_folder=root),
        stridemap.share(np.arange(12, dtype="<i4").reshape(3, 4).T, kind="file",
                        temp_folder=root),
        stridemap.share(np.arange(10.0)),
        stridemap.empty((4, 4), "<f8", kind="file", temp_folder=root),
    ]
    folder = keep[0].segment.folder
    held = None
    if mode == "pending":
        held = stridemap.open(stridemap.describe(keep[0]), allowed_roots=[folder])
        keep[0] = None
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            child = stridemap.share(np.arange(5.0), kind="file", temp_folder=root)
            assert child.segment.folder != folder
            # The parent's arrays are readable, and their segments are not the child's to drop.
            assert keep[1].sum() == 66
            keep.clear()
            sys.exit(0)  # runs atexit handlers: they must not touch the parent's folder
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        assert os.path.isdir(folder), "the forked child removed its parent's folder"
    print(json.dumps({
        "folder": folder,
        "pid": os.getpid(),
        "paths": [a.segment.path for a in keep if a is not None and a.segment.path],
        "records": [stridemap.describe(a).hex() for a in keep if a is not None],
    }), flush=True)
    if mode == "sleep":
        time.sleep(120)
    del held


if __name__ == "__main__":
    main()
