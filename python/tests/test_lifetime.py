"""Segment and folder lifetime (SPEC §7): normal exit, kill -9 and the sweep, forks, and no
growth over many share/free cycles."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import stridemap
from stridemap.segments import roots as temp
from producer_util import open_fds

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(root, mode):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "producer_child.py"), str(root),
                          mode], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line, "the producer child printed nothing"
    return p, json.loads(line)


def entries(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


@pytest.mark.parametrize("mode", ["exit", "pending", "fork"])
def test_nothing_is_left_after_a_normal_exit(tmp_path, mode):
    p, info = run_child(tmp_path, mode)
    assert len(info["paths"]) >= 2
    assert p.wait(timeout=60) == 0
    assert entries(tmp_path) == [], entries(tmp_path)


def test_kill_9_then_sweep_leaves_nothing(tmp_path):
    p, info = run_child(tmp_path, "sleep")
    folder = info["folder"]
    assert stridemap.sweep(tmp_path).alive == [folder]  # locked by a live producer
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert os.path.isdir(folder) and all(os.path.exists(x) for x in info["paths"])
    dry = stridemap.sweep(tmp_path, dry_run=True)
    assert dry.removed == [folder] and os.path.isdir(folder)
    report = stridemap.sweep(tmp_path)
    assert report.removed == [folder] and not report.failed
    assert entries(tmp_path) == []


def test_a_sweep_keeps_a_folder_whose_file_a_reader_maps_until_it_unmaps(tmp_path):
    p, info = run_child(tmp_path, "sleep")
    folder = info["folder"]
    held = stridemap.open(bytes.fromhex(info["records"][0]), allowed_roots=[folder])
    p.kill()
    p.wait(timeout=30)
    before = entries(tmp_path)
    report = stridemap.sweep(tmp_path)
    assert report.in_use == [folder] and report.removed == []
    assert report.kept == [(folder, f"owner dead, {os.path.basename(info['paths'][0])} still "
                                    "mapped by a reader")]
    assert entries(tmp_path) == before  # all or nothing: every file stays
    assert held[0] == 999.0  # still readable
    del held
    assert stridemap.sweep(tmp_path).removed == [folder]
    assert entries(tmp_path) == []


def test_the_first_folder_sweeps_its_root(tmp_path):
    p, info = run_child(tmp_path, "sleep")
    p.kill()
    p.wait(timeout=30)
    root = tmp_path.resolve()
    producer_state = stridemap.segments.lifetime._state
    producer_state.swept.discard(str(root))
    producer_state.folders.pop(str(root), None)
    s = stridemap.share(np.arange(3.0), kind="file", temp_folder=tmp_path)
    assert not os.path.exists(info["folder"])
    assert entries(tmp_path) == [s.segment.folder, s.segment.path]


def test_the_sweep_touches_only_dead_folders_of_its_own_user(tmp_path):
    dead = tmp_path / "stridemap-999999-1-0123456789abcdef0123456789abcdef"
    dead.mkdir()
    (dead / "seg-x").write_bytes(b"x")
    # Not ours: another user's folder, a symlink named like a folder, a plain file, and names
    # that are not pool folders.
    other = tmp_path / "stridemap-999998-1-0123456789abcdef0123456789abcdee"
    other.mkdir()
    (other / "seg-y").write_bytes(b"y")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_bytes(b"k")
    link = tmp_path / "stridemap-999997-1-0123456789abcdef0123456789abcded"
    link.symlink_to(target)
    plain = tmp_path / "stridemap-999996-1-0123456789abcdef0123456789abcdec"
    plain.write_bytes(b"p")
    odd = tmp_path / "stridemap-bench-77"
    odd.mkdir()
    # A dead folder holding something no producer makes (a folder, a symlink): left to a human.
    weird = tmp_path / "stridemap-999995-1-0123456789abcdef0123456789abcdeb"
    weird.mkdir()
    (weird / "sub").mkdir()
    (weird / "ln").symlink_to(target / "keep")
    (weird / "seg-z").write_bytes(b"z")
    chowned = os.getuid() == 0
    if chowned:
        os.chown(other, 4242, 4242)
    else:
        print("note: not root: the other-user folder is this user's; its case is not exercised")
    report = stridemap.sweep(tmp_path)
    assert report.removed == [str(dead)]
    assert [k for k, _ in report.kept] == [str(weird)] and "remove it by hand" in report.kept[0][1]
    assert (weird / "seg-z").exists()  # all or nothing
    assert (weird / "sub").is_dir() and (weird / "ln").is_symlink()
    assert (target / "keep").exists() and link.is_symlink() and plain.exists() and odd.is_dir()
    if chowned:
        assert report.other_users == [str(other)]
        assert (other / "seg-y").exists()
        assert stridemap.sweep(tmp_path, all_users=True).removed == [str(other)]


def test_liveness_is_the_folder_lock_not_the_pid(tmp_path):
    """A folder named after this very process, but not locked, belongs to nobody (SPEC §7.5:
    pids mean nothing across PID namespaces)."""
    me = os.getpid()
    name = f"stridemap-{me}-{temp.start_time(me)}-{'ab' * 16}"
    (tmp_path / name).mkdir()
    assert stridemap.sweep(tmp_path).removed == [str(tmp_path / name)]


def test_a_sweep_needs_write_access_and_says_so(tmp_path):
    if os.geteuid() == 0:
        print("note: root may write anywhere: the unwritable-folder case is not exercised")
        return
    dead = tmp_path / "stridemap-999999-1-0123456789abcdef0123456789abcdef"
    dead.mkdir()
    (dead / "seg-x").write_bytes(b"x")
    dead.chmod(0o500)
    try:
        report = stridemap.sweep(tmp_path, dry_run=True)
        assert report.removed == [] and "not writable" in report.failed[0][1]
    finally:
        dead.chmod(0o700)


def test_folder_names_round_trip():
    name = temp.folder_name(42, 1234)
    assert temp.parse_folder_name(name) == (42, 1234)
    for bad in ["stridemap-42-1234", "stridemap-x-1-" + "0" * 32, "stridemap-bench-77",
                "other-1-2-" + "0" * 32, "stridemap-1-2-" + "0" * 31 + "g"]:
        assert temp.parse_folder_name(bad) is None, bad


def test_temp_root_policy(tmp_path, monkeypatch):
    monkeypatch.delenv(temp.TEMP_FOLDER_ENV, raising=False)
    assert temp.choose_root(tmp_path, 10) == str(tmp_path)
    with pytest.raises(stridemap.NoSpace) as e:
        temp.choose_root(tmp_path, 1 << 62)
    assert e.value.folder == str(tmp_path) and e.value.needed == 1 << 62
    monkeypatch.setenv(temp.TEMP_FOLDER_ENV, str(tmp_path))
    assert temp.choose_root(None, 10) == str(tmp_path)
    assert temp.segment_bases()[0] == str(tmp_path)
    monkeypatch.delenv(temp.TEMP_FOLDER_ENV)
    import tempfile

    assert temp.choose_root(None, 10, shm="/nonexistent/shm") == temp.temp_dir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # SPEC §6's bases, as Rust takes them
    assert temp.temp_dir() == str(tmp_path) and temp.segment_bases()[-1] == str(tmp_path)
    monkeypatch.setenv("TMPDIR", "")
    assert temp.temp_dir() == "/tmp"


def settle():
    """Waits until no named segment is pending (consumers here unmap right after)."""
    deadline = time.monotonic() + 5
    while stridemap.reap() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stridemap.reap() == 0


def count_maps():
    """Mappings of files and memfds (malloc's anonymous ones come and go)."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "/" in line or "memfd:" in line)


@pytest.fixture
def shm_path(tmp_path):
    """A fresh folder on /dev/shm (tmpfs, where named segments go), else ``tmp_path``."""
    import shutil
    import tempfile

    if not os.access("/dev/shm", os.W_OK):
        print("note: /dev/shm is not writable: named segments are tested in", tmp_path)
        yield tmp_path
        return
    d = tempfile.mkdtemp(dir="/dev/shm", prefix="pytest-")
    from pathlib import Path

    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("kind", ["memfd", "file"])
def test_ten_thousand_share_free_cycles_leave_no_growth(kind, shm_path):
    tmp_path = shm_path
    a = np.arange(1000.0)
    def cycle(n):
        for i in range(n):
            s = stridemap.share(a[::-1] if i % 2 else a, kind=kind, temp_folder=tmp_path)
            e = stridemap.export(s[::3])
            v = stridemap.open(e.record, fd=e.fd, allowed_roots=[tmp_path.resolve()])
            e.close()
            assert v[0] in (999.0, 0.0)
            del s, e, v
    cycle(100)  # warm up: the folder, numpy's caches
    settle()
    fds, maps, files = open_fds(), count_maps(), entries(tmp_path)
    t = time.perf_counter()
    cycle(10_000)
    dt = time.perf_counter() - t
    print(f"{kind}: 10000 share+export+open+free cycles in {dt:.2f} s")
    settle()
    assert len(open_fds()) <= len(fds), (fds, open_fds())
    assert count_maps() <= maps + 2
    assert entries(tmp_path) == files
