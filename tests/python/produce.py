"""A Python producer for the Rust interop tests (tests/tests/python_interop.rs).

    produce.py ROOT

Makes two memory-mapped files below ROOT — vec.f8, 1000 doubles with m[i] = i, and mat.i4, a
6x4 C-ordered int32 matrix with m[i, j] = 10 * i + j — and describes, with the Python reader's
``describe`` and without copying, the views joblib's reducer gets wrong: m[::-1], m[::-3],
m[500:490:-1] and the transpose of the matrix. Prints one JSON line {"event": "described",
"cases": {name: {"record": hex, "shape", "strides", "values" (C order)}}}.

Then opens what stdin sends back, one "NAME HEX" line per descriptor (a Rust sub-view of a
case), and prints {"event": "opened", "name", "shape", "strides", "values"} for each, or
{"event": "error", "name", "rule", "message"}. Exits at EOF.
"""

import json
import os
import signal
import sys

import numpy as np

import stridemap

signal.alarm(120)  # never outlive a test that lost track of us


def say(**fields):
    print(json.dumps(fields), flush=True)


def summary(a):
    return dict(shape=list(a.shape), strides=list(a.strides), values=a.ravel().tolist())


def main():
    root = sys.argv[1]
    vec = np.memmap(os.path.join(root, "vec.f8"), dtype="<f8", mode="w+", shape=(1000,))
    vec[:] = np.arange(1000)
    mat = np.memmap(os.path.join(root, "mat.i4"), dtype="<i4", mode="w+", shape=(6, 4))
    mat[:] = 10 * np.arange(6)[:, None] + np.arange(4)
    cases = {"rev": vec[::-1], "rev3": vec[::-3], "slice": vec[500:490:-1], "transpose": mat.T}
    say(event="described", cases={
        name: dict(record=stridemap.describe(view).hex(), **summary(view))
        for name, view in cases.items()
    })
    for line in sys.stdin:
        name, hex_record = line.split()
        try:
            a = stridemap.open(bytes.fromhex(hex_record), allowed_roots=[root])
        except stridemap.errors.StridemapError as e:
            say(event="error", name=name, rule=e.rule, message=str(e))
            continue
        say(event="opened", name=name, **summary(a))


if __name__ == "__main__":
    main()
