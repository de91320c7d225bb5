"""A Python producer of segments for the Rust interop tests (tests/tests/python_interop.rs).

    share.py SOCKET ROOT

Shares, with ``stridemap.share``, the views joblib's reducer gets wrong and a broadcast: m[::-1],
m[::-3], m[500:490:-1] of 1000 doubles m[i] = i, the transpose of a 6x4 int32 matrix
mat[i, j] = 10 * i + j, and a row of 3 doubles broadcast to 4 rows; each as a sealed memfd
and as a named segment below ROOT. Prints one JSON line {"event": "shared", "folder",
"cases": [{"name", "kind", "shape", "strides", "values" (C order)}]}, then connects to the
Unix stream socket SOCKET and sends each case's descriptor, in that order, with a new fd for
the receiver beside the memfd ones (``stridemap.export``). Keeps the arrays until stdin
closes, then exits normally (which removes its pool folder).
"""

import json
import signal
import socket
import sys

import numpy as np

import stridemap

signal.alarm(120)  # never outlive a test that lost track of us


def main():
    sock_path, root = sys.argv[1], sys.argv[2]
    vec = np.arange(1000, dtype="<f8")
    mat = (10 * np.arange(6)[:, None] + np.arange(4)).astype("<i4")
    views = {"rev": vec[::-1], "rev3": vec[::-3], "slice": vec[500:490:-1], "transpose": mat.T,
             "broadcast": np.broadcast_to(np.arange(3, dtype="<f8"), (4, 3))}
    shared, cases = [], []
    for kind in ("memfd", "file"):
        for name, view in views.items():
            s = stridemap.share(view, kind=kind, temp_folder=root)
            shared.append(s)
            cases.append(dict(name=name, kind=kind, shape=list(s.shape), strides=list(s.strides),
                              values=s.ravel().tolist()))
    folder = next(s.segment.folder for s in shared if s.segment.folder)
    print(json.dumps(dict(event="shared", folder=folder, cases=cases)), flush=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        for s in shared:
            with stridemap.export(s) as e:
                stridemap.send(sock, e.record, e.fd)
        sys.stdin.read()  # hold the arrays (and the named segments) until told


if __name__ == "__main__":
    main()
