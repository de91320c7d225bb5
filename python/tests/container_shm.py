"""What works with a container's 64 MiB /dev/shm (run by test_containers.py inside a private
mount namespace whose /dev/shm is a 64 MiB tmpfs; never run on the host's /dev/shm).

Each way hands a 256 MiB float64 array to a worker of a real pool and checks the sum; prints one
line per way: ``<way>: ok <seconds>`` or ``<way>: FAILED <error>``, then the free space of
/dev/shm at the end (nothing may be left there).
"""

import concurrent.futures
import multiprocessing
import os
import sys
import time
import traceback

import numpy as np

N = (256 << 20) // 8


def total(a):
    return float(np.asarray(a).sum())


def shm_total(name, n):
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(name=name)
    try:
        return float(np.ndarray((n,), np.float64, buffer=block.buf).sum())
    finally:
        block.close()


def way_stridemap_pool(x, want):
    import stridemap
    import stridemap.pools

    stridemap.pools.install(numpy=True)
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(1) as pool:
        assert pool.apply(total, (stridemap.share(x),)) == want


def way_stridemap_executor(x, want):
    import stridemap.pools

    stridemap.pools.install(numpy=True)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        assert ex.submit(total, x).result() == want


def way_stridemap_joblib(x, want):
    import joblib

    import stridemap.pools  # noqa: F401 - registers the backend

    with joblib.parallel_config(backend="stridemap", n_jobs=2):
        got = joblib.Parallel()(joblib.delayed(total)(x) for _ in range(2))
    assert got == [want, want]


def way_stridemap_named(x, want):
    """A named segment: the temp-root policy finds no room in /dev/shm and goes to $TMPDIR."""
    import stridemap
    import stridemap.pools

    stridemap.pools.install(numpy=True)
    s = stridemap.share(x, kind="file")
    assert not s.segment.path.startswith("/dev/shm/"), s.segment.path
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(1) as pool:
        assert pool.apply(total, (s,)) == want


def way_stridemap_named_in_shm(x, want):
    """A named segment required in /dev/shm (STRIDEMAP_TEMP_FOLDER): refused with NoSpace."""
    import stridemap

    try:
        stridemap.share(x, kind="file", temp_folder="/dev/shm")
    except stridemap.NoSpace as e:
        raise RuntimeError(f"NoSpace (as it should): {str(e)[:100]}") from None


def way_joblib_default(x, want):
    import joblib

    got = joblib.Parallel(n_jobs=2)(joblib.delayed(total)(x) for _ in range(2))
    assert got == [want, want]


def way_shared_memory(x, want):
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(create=True, size=x.nbytes)
    try:
        np.ndarray(x.shape, x.dtype, buffer=block.buf)[:] = x  # SIGBUS past 64 MiB
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(1) as pool:
            assert pool.apply(shm_total, (block.name, x.size)) == want
    finally:
        block.close()
        block.unlink()


WAYS = {name[4:]: f for name, f in globals().items() if name.startswith("way_")}


def main(names):
    x = np.arange(N, dtype=np.float64) % 1000
    want = float(x.sum())
    for name in names:
        t = time.perf_counter()
        try:
            WAYS[name](x, want)
        except BaseException as e:  # noqa: BLE001 - reported
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"{name}: FAILED {last[:160]}", flush=True)
        else:
            print(f"{name}: ok {time.perf_counter() - t:.2f}", flush=True)
    st = os.statvfs("/dev/shm")
    print(f"/dev/shm free: {st.f_bavail * st.f_frsize} of {st.f_blocks * st.f_frsize}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(WAYS))
