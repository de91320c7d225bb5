"""Issue #19, fds: a live array costs no fd of its mapping, so thousands of them fit in the
common soft limit of 1,024 fds (before, each held two and 700 of them ended in EMFILE).

Each case runs in a child process with ``RLIMIT_NOFILE`` lowered to 1,024, through a real
``multiprocessing.Pool`` (forkserver: the workers start from a clean process, as spawn does).
"""

import os
import subprocess
import sys
import textwrap

import pytest

import fdlimit

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

PRELUDE = fdlimit.prelude() + textwrap.dedent("""
    import sys
    import multiprocessing as mp
    import numpy as np
    import stridemap, stridemap.pools as pools
""")


def run(body, timeout=600):
    """Runs PRELUDE + ``body`` in a child (as a script: the pool's workers import it), and
    returns what it printed; fails the test with its output on a non-zero exit."""
    script = PRELUDE + textwrap.dedent(body)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fd_bounds_{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(script)
    try:
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.run([sys.executable, path], capture_output=True, text=True,
                           timeout=timeout, env=env)
    finally:
        os.unlink(path)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}"
    return p.stdout


def parse(out):
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


def test_ten_thousand_live_received_arrays_at_1024_fds():
    out = run("""
        def make(i):
            a = stridemap.empty((8192,), "f8")  # 64 KiB
            a[:] = i
            return a

        def first(a):
            return float(a[0])

        if __name__ == "__main__":
            ctx = mp.get_context("forkserver")
            pools.install()
            with ctx.Pool(2, initializer=pools.install) as pool:
                out = pool.map(make, range(10_000), chunksize=50)
                wrong = sum(1 for i, a in enumerate(out) if not (a[0] == i and a[-1] == i))
                shared = sum(1 for a in out if stridemap.segment_of(a) is not None)
                live_fds = fds()
                # Every one of them handed back to a worker: those whose fd was kept go as
                # they are, the rest as copies (shared all the same): all arrive exact.
                back = pool.map(first, out[::10], chunksize=50)
                wrong_back = sum(1 for i, v in zip(range(0, 10_000, 10), back) if v != i)
            print(f"live={len(out)} wrong={wrong} shared={shared} fds={live_fds} "
                  f"wrong_back={wrong_back} maps={maps()}")
    """)
    got = parse(out)
    assert got["live"] == "10000" and got["wrong"] == "0" and got["wrong_back"] == "0", out
    assert got["shared"] == "10000", f"received arrays not zero-copy: {out}"
    assert int(got["maps"]) >= 10_000, out
    # kept fds (at most an eighth of the limit) and the pool's own: far below the limit.
    assert int(got["fds"]) < fdlimit.LIMIT // 8 + 100, out


def test_seven_hundred_shared_megabyte_arrays_at_1024_fds():
    """The issue's case: 700 arrays of 1 MiB made by share() and sent through a Pool."""
    out = run("""
        def total(a):
            return float(a.sum())

        if __name__ == "__main__":
            ctx = mp.get_context("forkserver")
            pools.install()
            arrays = [stridemap.share(np.full(1 << 17, float(i))) for i in range(700)]
            held = fds()
            with ctx.Pool(2, initializer=pools.install) as pool:
                sums = pool.map(total, arrays, chunksize=10)
            wrong = sum(1 for i, s in enumerate(sums) if s != i * (1 << 17))
            print(f"wrong={wrong} held={held}")
    """)
    got = parse(out)
    assert got["wrong"] == "0", out
    # One fd per live segment in the producer (it hands each receiver a new one from it).
    assert 700 <= int(got["held"]) < 700 + 100, out


def test_a_received_array_keeps_no_fd_of_its_mapping():
    """What the two tests above rest on, in one process: open() of a passed fd keeps only the
    duplicate for handing views on, and none at all beyond kept_fds_cap()."""
    out = run("""
        from stridemap.segments.backing import kept_fds_cap
        a = stridemap.share(np.arange(1000.0))
        ex = stridemap.export(a)
        before = fds()
        views = []
        for _ in range(kept_fds_cap() + 50):
            views.append(stridemap.open(ex.record, fd=ex.fd))
        grown = fds() - before
        print(f"cap={kept_fds_cap()} grown={grown} same={all(v[7] == 7.0 for v in views)}")
        del views
        import gc; gc.collect()
        print(f"after={fds() - before}")
    """)
    got = parse(out)
    assert got["cap"] == str(fdlimit.LIMIT // 8), out
    assert got["grown"] == got["cap"] and got["same"] == "True", out
    assert got["after"] == "0", out


@pytest.mark.parametrize("tag", ["trackfd", "fixed"])
def test_map_fd_keeps_no_fd_and_maps_the_file(tag, monkeypatch):
    """segments.mapfd both ways (trackfd=False where Python has it, MAP_FIXED over an anonymous
    region everywhere): the bytes are the file's, writes reach it, read-only maps refuse."""
    import mmap

    from stridemap.segments import mapfd

    if tag == "trackfd" and not mapfd.TRACKFD:
        pytest.skip("trackfd=False needs Python 3.13")
    if tag == "fixed":
        if mapfd._libc_mmap() is None:
            pytest.skip("no libc mmap through ctypes")
        monkeypatch.setattr(mapfd, "TRACKFD", False)
        monkeypatch.setattr(mapfd, "_mmap", mapfd._libc_mmap())
    fd = os.memfd_create("map_fd_test")
    try:
        os.ftruncate(fd, 1 << 20)
        os.pwrite(fd, b"hello", 8192)
        before = len(os.listdir("/proc/self/fd"))
        ro = [mapfd.map_fd(fd, 65536, offset=8192) for _ in range(50)]
        rw = mapfd.map_fd(fd, 1 << 20, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        cow = mapfd.map_fd(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                           flags=mmap.MAP_PRIVATE)
        assert len(os.listdir("/proc/self/fd")) == before
        assert all(bytes(m[:5]) == b"hello" for m in ro)
        rw[8192:8195] = b"HEL"
        assert bytes(ro[0][:5]) == b"HELlo" and os.pread(fd, 5, 8192) == b"HELlo"
        cow[:3] = b"xyz"
        assert os.pread(fd, 3, 0) == b"\0\0\0"
        with pytest.raises(TypeError):
            ro[0][0:1] = b"x"
        for m in ro + [rw, cow]:
            m.close()
    finally:
        os.close(fd)


def test_the_reuse_cache_keeps_no_copy_alive():
    """share(a) again while the first SharedArray lives reuses it; once that is dropped, its
    segment (fd and memory) goes, though ``a`` lives on (before, the cache held every copy)."""
    import gc

    import numpy as np

    import stridemap

    a = np.arange(100_000.0)
    before = len(os.listdir("/proc/self/fd"))
    s = stridemap.share(a)
    assert stridemap.share(a) is s
    assert len(os.listdir("/proc/self/fd")) == before + 1  # the segment's one fd
    del s
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
    t = stridemap.share(a)  # a new copy, exact
    assert np.array_equal(t, a) and len(os.listdir("/proc/self/fd")) == before + 1


def test_thousands_of_plain_arrays_in_one_map_at_1024_fds():
    """install(numpy=True): Pool.map pickles a whole chunk at once (here 6,000 arrays in chunks
    of 750), two fds each until received. Past half the limit, plain arrays are pickled
    (copied) instead: every result exact, no EMFILE, as arguments and as results."""
    out = run("""
        def first(a):
            return float(a[0])

        def make(i):
            return np.full(8192, float(i))

        if __name__ == "__main__":
            pools.install(numpy=True, max_nbytes=0)
            for method in ("fork", "spawn"):
                with mp.get_context(method).Pool(2, initializer=pools.install) as pool:
                    got = pool.map(first, [np.full(8192, float(i)) for i in range(6000)])
                    wrong = sum(1 for i, v in enumerate(got) if v != i)
                    back = pool.map(make, range(6000))
                    wrong += sum(1 for i, a in enumerate(back) if a[0] != i or a[-1] != i)
                    print(f"{method}_wrong={wrong}")
    """)
    got = parse(out)
    assert got["fork_wrong"] == "0" and got["spawn_wrong"] == "0", out


class Unpicklable:
    def __reduce__(self):
        raise TypeError("not this one")


def test_a_pickle_that_fails_withdraws_the_fds_it_offered():
    """The arrays pickled before the failure were offered (an fd each); no receiver can ever
    ask for them: they are withdrawn at once, not kept until the process exits."""
    from multiprocessing import reduction

    import numpy as np

    import stridemap
    import stridemap.pools
    from stridemap.transport import channel

    stridemap.pools.install()
    arrays = [stridemap.share(np.arange(100.0) + i) for i in range(5)]
    import pickle

    pickle.loads(reduction.ForkingPickler.dumps(arrays[0]))  # the listener, made once
    before = channel.pending()
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(TypeError, match="not this one"):
        reduction.ForkingPickler.dumps([*arrays, Unpicklable()])
    assert channel.pending() == before
    assert len(os.listdir("/proc/self/fd")) == fds
    # A pickle that succeeds keeps its offers for its receiver.
    data = reduction.ForkingPickler.dumps(arrays)
    assert channel.pending() == before + 5
    assert [a[1] for a in pickle.loads(data)] == [1.0 + i for i in range(5)]


def test_joblib_hands_on_a_thousand_received_megabyte_arrays_at_1024_fds():
    """A new user's finding: results received from one Parallel call, handed on as views in
    the next (most of them as copies: only so many received fds are kept). The copies a call
    remembers were all kept alive, an fd each, until EMFILE (then loky's manager died and the
    process hung at exit). Now beyond a share of the limit they are remembered weakly."""
    out = run("""
        import joblib

        def make(i):
            return np.full(1 << 17, float(i))

        def back(a):
            return a[::-1]

        if __name__ == "__main__":
            with joblib.parallel_config(backend="stridemap", n_jobs=2):
                res = joblib.Parallel()(joblib.delayed(make)(i) for i in range(1000))
                rev = joblib.Parallel()(joblib.delayed(back)(r) for r in res)
            wrong = sum(1 for i, r in enumerate(rev) if r[0] != i or r.shape != (1 << 17,))
            print(f"wrong={wrong} fds={fds()}")
    """, timeout=120)
    got = parse(out)
    assert got["wrong"] == "0", out


def test_a_plain_array_with_no_room_for_its_copy_travels_pickled(monkeypatch, caplog):
    """install(numpy=True): a copy refused with NoSpace is pickled instead, with a warning
    (as the Dask plugin falls back), not a failed task."""
    import logging
    import pickle
    from multiprocessing import reduction

    import numpy as np

    import stridemap
    import stridemap.pools
    from stridemap.transport import handoff

    def no_room(*args, **kwargs):
        raise stridemap.NoSpace("no room here (test)", "memfd", 1, 0, "test")

    stridemap.pools.install(numpy=True, max_nbytes=0)
    try:
        monkeypatch.setattr(handoff, "share", no_room)
        a = np.arange(1000.0)
        with caplog.at_level(logging.WARNING, logger="stridemap.pools"):
            got = pickle.loads(reduction.ForkingPickler.dumps(a))
        assert got.tolist() == a.tolist() and stridemap.segment_of(got) is None
        assert "pickled (copied), not shared" in caplog.text
    finally:
        stridemap.pools.uninstall()
