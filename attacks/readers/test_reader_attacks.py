"""Attacks on the Python and C readers' open paths (issue 10 items 5 and 8): both must give
the verdict the Rust reader gives (attacks/tests/open.rs, attacks/tests/cli.rs).

Run by `bash scripts/test.sh attacks` with the repository's .venv; the C reader's test
program is built by readers/c/build.sh first.
"""

import fcntl
import json
import os
import pathlib
import stat
import subprocess

import pytest

import stridemap
from stridemap import Descriptor, encode

REPO = pathlib.Path(__file__).resolve().parents[2]
SMOPEN = REPO / "readers" / "c" / "build" / "smopen"


def describe(path):
    st = os.stat(path)
    return encode(Descriptor(dtype="|u1", shape=(st.st_size,), strides=(1,),
                             buffer_len=st.st_size, file_len=st.st_size, path=str(path)))


def py_verdict(record, **kw):
    try:
        stridemap.open(record, **kw)
        return "ok"
    except stridemap.errors.StridemapError as e:
        return getattr(e, "rule", type(e).__name__)


def c_verdict(record, roots=(), fd=None, env=None):
    assert SMOPEN.exists(), "build the C reader first: bash readers/c/build.sh"
    args = [str(SMOPEN)] + [a for r in roots for a in ("--root", str(r))]
    if fd is not None:
        args += ["--fd", str(fd)]
    out = subprocess.run(args, input=record.hex() + "\n", capture_output=True, text=True,
                         env=env, pass_fds=() if fd is None else (fd,), timeout=30)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return "ok" if got["ok"] else got["rule"]


@pytest.fixture
def base(tmp_path, monkeypatch):
    """A temp base standing for /dev/shm: $STRIDEMAP_TEMP_FOLDER points at it."""
    monkeypatch.setenv("STRIDEMAP_TEMP_FOLDER", str(tmp_path))
    return tmp_path


def plant(base, name, mode):
    entry = base / name
    entry.mkdir()
    (entry / "x").write_bytes(b"planted data")
    entry.chmod(mode)
    return entry / "x"


def plants(base):
    """(what, path, verdict the readers must give)."""
    cases = [("own private folder", plant(base, "stridemap-mine", 0o700), "ok"),
             ("0755 folder", plant(base, "stridemap-wide", 0o755), "O2")]
    (base / "stridemap-file").write_bytes(b"planted data")
    cases.append(("plain file", base / "stridemap-file", "O2"))
    (base / "stridemap-link").symlink_to(base / "stridemap-mine")
    cases.append(("link to a folder", base / "stridemap-link" / "x", "O2"))
    if os.geteuid() == 0:
        theirs = plant(base, "stridemap-theirs", 0o700)
        os.chown(theirs.parent, 65534, 65534)
        cases.append(("another user's folder", theirs, "O2"))
    else:
        print("variant: not root; the foreign-uid folder is not planted")
    return cases


def test_python_default_roots_take_only_private_folders(base):
    for what, path, want in plants(base):
        assert py_verdict(describe(path)) == want, what


def test_c_default_roots_take_only_private_folders(base):
    env = dict(os.environ, STRIDEMAP_TEMP_FOLDER=str(base))
    for what, path, want in plants(base):
        assert c_verdict(describe(path), env=env) == want, what


def test_a_root_given_through_a_symbolic_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x").write_bytes(b"abc")
    link = tmp_path / "link"
    link.symlink_to(real)
    (real / "y").symlink_to(real / "x")
    for path, want in [(real / "x", "ok"), (link / "x", "ok"), (link / "y", "O3")]:
        rec = describe(path) if want == "ok" else describe(real / "x")
        if want != "ok":
            d = stridemap.decode(rec)
            rec = encode(Descriptor(**{**d.__dict__, "path": str(path)}))
        assert py_verdict(rec, allowed_roots=[link]) == want, path
        assert c_verdict(rec, roots=[link]) == want, path


def test_an_o_path_fd_is_o9(tmp_path):
    f = tmp_path / "plain"
    f.write_bytes(b"0123456789")
    fd = os.open(f, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        rec = encode(Descriptor(dtype="|u1", shape=(10,), strides=(1,), buffer_len=10,
                                file_len=10, source="fd", device=st.st_dev, inode=st.st_ino))
        assert stat.S_ISREG(st.st_mode)
        assert py_verdict(rec, fd=fd) == "O9"
        assert c_verdict(rec, fd=fd) == "O9"
    finally:
        os.close(fd)


def sparse_memfd(length):
    """A peer's memfd of ``length`` bytes made by ftruncate alone, sealed: no page yet."""
    fd = os.memfd_create("peer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, length)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    assert os.fstat(fd).st_blocks == 0
    return fd


def test_a_sparse_memfd_is_refused_before_anything_is_read():
    """Issue 19 item 1: a sealed 512 MiB memfd made by ftruncate alone made every reader
    allocate 512 MiB reading a view striding 4 KiB through it: O12 refuses it at open. Nothing
    here reads it. The C reader's test program prints every element it maps, so it gets a
    one-element view of the same buffer (on a reader without O12 that reads one page)."""
    length = 512 << 20
    fd = sparse_memfd(length)
    try:
        st = os.fstat(fd)
        common = dict(dtype="|u1", buffer_len=length, file_len=length, source="fd",
                      device=st.st_dev, inode=st.st_ino)
        striding = encode(Descriptor(shape=(length // 4096,), strides=(4096,), **common))
        try:
            stridemap.open(striding, fd=fd)  # the array is dropped unread
            verdict = "ok"
        except stridemap.errors.StridemapError as e:
            verdict = e.rule
            print(f"Python: {e}")
            assert isinstance(e, stridemap.Sparse)
        assert verdict == "O12", "Python mapped a sparse 512 MiB memfd"
        one = encode(Descriptor(shape=(1,), strides=(1,), **common))
        assert c_verdict(one, fd=fd) == "O12", "C mapped a sparse 512 MiB memfd"
        assert os.fstat(fd).st_blocks <= 8
    finally:
        os.close(fd)
    dense = os.memfd_create("peer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(dense, bytes(1 << 20))
        fcntl.fcntl(dense, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        st = os.fstat(dense)
        rec = encode(Descriptor(dtype="|u1", shape=(256,), strides=(4096,), buffer_len=1 << 20,
                                file_len=1 << 20, source="fd", device=st.st_dev,
                                inode=st.st_ino))
        assert py_verdict(rec, fd=dense) == "ok"
        assert c_verdict(rec, fd=dense) == "ok"
    finally:
        os.close(dense)
