"""joblib's memmapping handoff of a large array, for `stridemap bench` (our model is the
yardstick). Prints one JSON object: per size, the first dispatch (dump to a memmap + pickle the
reducer + the worker maps it) and a repeated dispatch of the same array (file reused).
"""
import json
import sys
import time

import numpy as np
from joblib import Parallel, delayed


def first(a):
    return float(a[0])


def main():
    sizes = [int(s) for s in sys.argv[1:]]
    out = {"joblib": __import__("joblib").__version__, "numpy": np.__version__, "sizes": {}}
    with Parallel(n_jobs=2, max_nbytes="1M", mmap_mode="r") as par:
        par(delayed(first)(np.zeros(4)) for _ in range(2))  # start the workers
        for size in sizes:
            a = np.arange(size // 8, dtype=np.float64)
            t0 = time.perf_counter()
            par([delayed(first)(a)])
            fresh = time.perf_counter() - t0
            reps = []
            for _ in range(15):
                t0 = time.perf_counter()
                par([delayed(first)(a)])
                reps.append(time.perf_counter() - t0)
            reps.sort()
            out["sizes"][str(size)] = {"first": fresh, "repeat": reps[len(reps) // 2]}
            del a
    print(json.dumps(out))


if __name__ == "__main__":
    main()
