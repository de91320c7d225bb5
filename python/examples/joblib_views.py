"""Reversed and transposed views of an np.memmap, handed to joblib workers.

    python joblib_views.py            # the "stridemap" backend: every view arrives exactly
    python joblib_views.py loky       # joblib's default backend, for comparison

With joblib 1.6's default backend these views arrive with wrong values or kill the worker with
SIGSEGV (joblib #1019): here m.T is wrong and the four others crash.
"""
import os, sys, tempfile
import numpy as np, joblib
import stridemap.pools                          # registers the joblib backend "stridemap"


def first_rows(a):
    return np.array(a[:3])


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "stridemap"
    path = os.path.join(tempfile.mkdtemp(), "m.bin")
    m = np.memmap(path, dtype="<f8", mode="w+", shape=(1000, 300))
    m[:] = np.arange(m.size).reshape(m.shape)
    views = {"m[::-1]": m[::-1], "m[8::-2]": m[8::-2], "m[500:490:-1]": m[500:490:-1],
             "m.T": m.T, "m.T[::-1]": m.T[::-1]}
    with joblib.parallel_config(backend=backend, n_jobs=2):
        for name, view in views.items():
            try:
                [got] = joblib.Parallel()([joblib.delayed(first_rows)(view)])
                print(name, "exact" if np.array_equal(got, view[:3]) else "WRONG VALUES")
            except Exception as e:                # joblib's worker died
                print(name, "crashed:", type(e).__name__)
    os.remove(path), os.rmdir(os.path.dirname(path))
