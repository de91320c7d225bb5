"""joblib end to end, for `stridemap bench`: a fresh array filled, handed to 2 workers that each
sum half of its `a[::-3]`, the sums back. Prints one JSON object with the seconds of each round.
"""
import json
import sys
import time

import numpy as np
from joblib import Parallel, delayed


def half_sum(a, k):
    v = a[::-3]
    h = len(v) // 2
    return float((v[:h] if k == 0 else v[h:]).sum())


def main():
    size, rounds = int(sys.argv[1]), int(sys.argv[2])
    src = (np.arange(size // 8) % 4096).astype(np.float64)
    times = []
    with Parallel(n_jobs=2, max_nbytes="1M", mmap_mode="r") as par:
        par(delayed(half_sum)(np.zeros(8), k) for k in range(2))  # start the workers
        for _ in range(rounds):
            t0 = time.perf_counter()
            a = np.empty(size // 8)
            a[:] = src
            total = sum(par(delayed(half_sum)(a, k) for k in range(2)))
            times.append(time.perf_counter() - t0)
            del a
    print(json.dumps({"times": times, "sum": total}))


if __name__ == "__main__":
    main()
