"""The admission check (SPEC §7, rule 6, stridemap.segments.admit): a segment the machine cannot hold
is refused with NoSpace naming the limit, within a second and with nothing allocated, in
share(), empty() and the Dask plugin (which then takes Dask's normal path).

Every oversized request runs in a child process with RLIMIT_FSIZE of 64 MiB and SIGXFSZ
ignored, so that a missing check cannot take the machine: the unchecked fallocate or pwrite
fails with EFBIG instead of filling RAM. The cgroup case runs in a memory cgroup of 256 MiB made
for it (v2 where the memory controller is there, else v1; skipped, saying why, elsewhere).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import stridemap
from stridemap.segments import admit

GUARD = """
import resource, signal, time, numpy as np, stridemap
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))

def refused(call, limit):
    t = time.monotonic()
    try:
        call()
    except stridemap.NoSpace as e:
        took = time.monotonic() - t
        assert e.limit is not None and e.limit.startswith(limit), (e.limit, str(e))
        assert took < 1.0, took
        assert e.needed + (64 << 20) > e.available, (e.needed, e.available)  # with the margin
        assert limit in str(e) and "kept free" in str(e), str(e)
        return
    raise AssertionError("admitted")
"""


def run_guarded(body, *, cgroup=None, timeout=60):
    code = GUARD + textwrap.dedent(body)
    pre = None
    if cgroup is not None:
        def pre():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout, preexec_fn=pre)
    assert r.returncode == 0, r.stdout + r.stderr


def test_oversized_memfds_are_refused_naming_mem_available():
    run_guarded("""
        refused(lambda: stridemap.empty((1 << 47,), "f8"), "MemAvailable")
        refused(lambda: stridemap.empty((1 << 47,), "f8", huge_pages="never"), "MemAvailable")
        stridemap.empty((1 << 17,), "f8")  # 1 MiB still fits
    """)


def test_an_oversized_share_is_refused_before_the_copy(tmp_path):
    """A 1 TiB sparse file on disk as an np.memmap: share() would copy it into a memfd."""
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(1 << 40)
    run_guarded(f"""
        m = np.memmap({str(path)!r}, dtype="f8", mode="r")
        refused(lambda: stridemap.share(m), "MemAvailable")
        refused(lambda: stridemap.share(m[::-1]), "MemAvailable")
    """)


@pytest.fixture
def huge_tmpfs(tmp_path):
    """A tmpfs of 64 TiB (more than RAM, as `mount -o size=` allows), or a skip."""
    d = tmp_path / "big"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64T,mode=0700", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({r.stderr.strip()}): the named-file case is not run")
    try:
        yield str(d)
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_named_files_in_a_tmpfs_larger_than_ram_are_refused(huge_tmpfs):
    run_guarded(f"""
        refused(lambda: stridemap.empty((1 << 44,), "u1", kind="file",
                                        temp_folder={huge_tmpfs!r}), "MemAvailable")
        import os
        left = [f for _, _, fs in os.walk({huge_tmpfs!r}) for f in fs]
        assert left == [], left
    """)


def test_the_dask_plugin_takes_the_normal_path_when_refused(huge_tmpfs, tmp_path):
    pytest.importorskip("distributed")
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(1 << 40)
    run_guarded(f"""
        import os
        from stridemap.integrations import dask as sd
        def allocated(*args):
            raise AssertionError("the segment was sized or filled: no admission check")
        os.ftruncate = os.posix_fallocate = os.pwrite = allocated
        state = sd._State({huge_tmpfs!r}, 1, None)
        m = np.memmap({str(path)!r}, dtype="f8", mode="r")
        ends = ["127.0.0.1:1", "127.0.0.1:2"]  # a connection, with the peer's proof for it
        context = {{"sender": {{sd.ENDS_KEY: ends}},
                    "recipient": {{sd.TOKEN_KEY: state.proof(ends[1], ends[0])}}}}
        t = time.monotonic()
        assert state.dumps(m, context) is None
        assert time.monotonic() - t < 1.0
        assert sd.STATS.snapshot()["fallbacks"].get("no-space") == 1, sd.STATS.snapshot()
    """)


def _memory_cgroup(limit):
    """A memory cgroup of ``limit`` bytes below this process's own: its path, or why not."""
    name = f"stridemap-admission-{os.getpid()}"
    for v2 in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            with open(f"{v2}/cgroup.controllers") as f:
                if "memory" in f.read().split():
                    d = f"{v2}/{name}"
                    os.mkdir(d)
                    with open(f"{d}/memory.max", "w") as f:
                        f.write(str(limit))
                    return d
        except OSError:
            continue
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                d = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"), name)
                try:
                    os.mkdir(d)
                    with open(f"{d}/memory.limit_in_bytes", "w") as f:
                        f.write(str(limit))
                except OSError as e:
                    return f"cannot make {d}: {e}"
                return d
    return "no memory cgroup on this machine"


def test_a_request_beyond_the_cgroup_is_refused_naming_it():
    d = _memory_cgroup(256 << 20)
    if not d.startswith("/"):
        pytest.skip(d)
    try:
        run_guarded(f"""
            refused(lambda: stridemap.empty((200 << 20,), "u1"), "cgroup")
            try:
                stridemap.empty((200 << 20,), "u1")
            except stridemap.NoSpace as e:
                assert {d!r} in str(e), str(e)
            stridemap.empty((16 << 20,), "u1")  # within the cgroup's room
        """, cgroup=d)
    finally:
        os.rmdir(d)


def test_the_margin_is_kept_below_every_limit(monkeypatch):
    lim = admit.Limit("test limit", available=1 << 30, size=1 << 30)
    assert lim.margin() == (64 << 20) + (32 << 20)
    monkeypatch.setattr(admit, "limits", lambda: [lim])
    monkeypatch.setattr(admit, "_reading", None)
    fits = (1 << 30) - lim.margin()
    admit.check(fits, "memfd")
    monkeypatch.setattr(admit, "_reading", None)
    with pytest.raises(stridemap.NoSpace) as e:
        admit.check(fits + 1, "memfd")
    assert e.value.limit == "test limit" and e.value.available == 1 << 30
    # A smaller request weighs what was admitted since the last reading.
    monkeypatch.setattr(admit, "_reading", None)
    admit.check(fits - 4096, "memfd")
    with pytest.raises(stridemap.NoSpace):
        admit.check(8192, "memfd")


def test_cgroup_limits_are_found_from_proc_self_cgroup():
    """On this machine: every limit found names a file that exists and says how much is left."""
    for lim in admit.limits()[1:]:
        assert lim.name.startswith("cgroup v") and os.path.exists(lim.name.split(" ", 2)[2])
        assert 0 <= lim.available <= lim.size


def test_the_file_size_limit_is_named_when_it_refuses():
    """Below the memory limits but above RLIMIT_FSIZE (64 MiB here): the refusal names the
    file size limit, not a full filesystem."""
    run_guarded("""
        for kind in ("memfd", "file"):
            try:
                stridemap.empty((16 << 20,), "f8", kind=kind)  # 128 MiB
            except stridemap.NoSpace as e:
                assert e.limit == "RLIMIT_FSIZE" and "ulimit -f" in str(e), str(e)
            else:
                raise AssertionError(kind + ": admitted past RLIMIT_FSIZE")
    """)
