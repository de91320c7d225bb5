"""stridemap_open() against live files: random layouts, writes, and every open-time check
(SPEC §6), each compared with the Python reader's verdict on the same case."""

import dataclasses
import fcntl
import os

import numpy as np
import pytest
from conftest import run_lines
from layouts import random_layout, reference_view, write_random_file

import stridemap
from stridemap import Descriptor, encode


def c_open(c_build, records, roots=(), fd=None, mode=None, fill=None, allow_unsealed=False):
    args = [a for r in roots for a in ("--root", str(r))]
    if fd is not None:
        args += ["--fd", str(fd)]
    if mode is not None:
        args += ["--mode", mode]
    if fill is not None:
        args += ["--fill", str(fill)]
    if allow_unsealed:
        args.append("--allow-unsealed")
    return run_lines(c_build / "smopen", [r.hex() for r in records], args,
                     pass_fds=() if fd is None else (fd,))


def test_random_layouts_equal_as_strided(c_build, tmp_path):
    rng = np.random.default_rng(99)
    descs = []
    for i in range(300):
        path = str(tmp_path / f"a{i}.bin")
        desc = random_layout(rng, path)
        write_random_file(rng, path, desc.file_len)
        descs.append(desc)
    results = c_open(c_build, [encode(d) for d in descs], roots=[tmp_path])
    for desc, got in zip(descs, results):
        assert got == {"ok": True, "bytes": reference_view(desc.path, desc).tobytes().hex()}


@pytest.fixture
def live(tmp_path):
    """A 3x4 <f8 file (0..11) with its identity recorded, mode r+."""
    path = tmp_path / "a.bin"
    path.write_bytes(np.arange(12, dtype="<f8").tobytes())
    st = os.stat(path)
    return tmp_path, Descriptor(
        dtype="<f8", shape=(3, 4), strides=(-32, 8), offset=64, buffer_len=96, file_len=96,
        path=str(path), device=st.st_dev, inode=st.st_ino, mode="r+")


def test_reads_a_live_file(c_build, live):
    root, desc = live
    [got] = c_open(c_build, [encode(desc)], roots=[root])
    want = np.arange(12, dtype="<f8").reshape(3, 4)[::-1]
    assert got == {"ok": True, "bytes": want.tobytes().hex()}


def test_r_plus_writes_reach_the_file_and_c_writes_do_not(c_build, live):
    root, desc = live
    c_open(c_build, [encode(desc)], roots=[root], mode="c", fill=0xAB)
    assert np.fromfile(desc.path, "<f8").tolist() == list(range(12))
    c_open(c_build, [encode(desc)], roots=[root], mode="r+", fill=0xAB)
    assert open(desc.path, "rb").read() == b"\xab" * 96


def memfd(data, seals=0):
    fd = os.memfd_create("stridemap-c-test", os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def fd_desc(fd, **kw):
    st = os.fstat(fd)
    return Descriptor(dtype="<f8", shape=(12,), strides=(8,), buffer_len=96, file_len=96,
                      source="fd", device=st.st_dev, inode=st.st_ino, **kw)


def replaced(root, desc):
    new = root / "new.bin"
    new.write_bytes(bytes(96))
    os.replace(new, desc.path)
    return desc


def symlinked_file(root, desc):
    os.symlink(desc.path, root / "link.bin")
    return dataclasses.replace(desc, path=str(root / "link.bin"))


def symlinked_folder(root, desc):
    (root / "real").mkdir()
    os.replace(desc.path, root / "real" / "a.bin")
    os.symlink(root / "real", root / "dir")
    return dataclasses.replace(desc, path=str(root / "dir" / "a.bin"))


def fifo(root, desc):
    os.mkfifo(root / "fifo")
    return dataclasses.replace(desc, path=str(root / "fifo"), inode=0)


def folder(root, desc):
    (root / "sub").mkdir()
    return dataclasses.replace(desc, path=str(root / "sub"), inode=0)


def truncated(root, desc):
    os.truncate(desc.path, 95)
    return desc


# (rule, how to change the live file and its descriptor, mode asked for)
PATH_CASES = [
    ("O1", lambda root, d: dataclasses.replace(d, path="a.bin"), None),
    ("O1", lambda root, d: dataclasses.replace(d, path=f"{root}/../{root.name}/a.bin"), None),
    ("O1", lambda root, d: dataclasses.replace(d, path=f"{root}//a.bin"), None),
    ("O1", lambda root, d: dataclasses.replace(d, path=f"{root}/a.bin/"), None),
    ("O2", lambda root, d: dataclasses.replace(d, path="/etc/hostname"), None),
    ("O3", symlinked_file, None),
    ("O3", symlinked_folder, None),
    ("O4", lambda root, d: dataclasses.replace(d, path=f"{root}/missing.bin"), None),
    ("O5", lambda root, d: dataclasses.replace(d, mode="r"), "r+"),
    ("O6", fifo, None),
    ("O6", folder, None),
    ("O7", truncated, None),
    ("O8", replaced, None),
    ("O10", lambda root, d: dataclasses.replace(d, generation=3), None),
    ("OK", lambda root, d: d, "r+"),
]


@pytest.mark.parametrize("rule,change,mode", PATH_CASES)
def test_path_checks_agree_with_python(c_build, live, rule, change, mode):
    root, desc = live
    desc = change(root, desc)
    [got] = c_open(c_build, [encode(desc)], roots=[root], mode=mode)
    assert got["rule" if rule != "OK" else "ok"] == (rule if rule != "OK" else True)
    try:
        stridemap.open(desc, allowed_roots=[root], mode=mode)
        py_rule = "OK"
    except stridemap.errors.OpenError as e:
        py_rule = e.rule
    assert py_rule == rule
    if rule == "O4":
        assert got["errno"] == 2 and not os.path.exists(desc.path)  # never created


def python_rule(desc, **kw):
    """What the Python reader says of ``desc``: "OK" or the rule it refuses it by."""
    try:
        stridemap.open(desc, **kw)
    except stridemap.errors.OpenError as e:
        return e.rule
    return "OK"


FD_CASES = [
    ("O9", 0, None, False),                                          # a memfd without seals
    ("OK", fcntl.F_SEAL_SHRINK, None, False),
    ("OK", fcntl.F_SEAL_SHRINK, "r+", False),
    ("O11", fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_WRITE, "r+", False),  # no shared writes
    ("OK", fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_WRITE, "c", False),    # private ones are fine
]


@pytest.mark.parametrize("rule,seals,mode,allow", FD_CASES)
def test_fd_checks_agree_with_python(c_build, rule, seals, mode, allow):
    fd = memfd(np.arange(12, dtype="<f8").tobytes(), seals)
    try:
        desc = fd_desc(fd, mode="r+")
        [got] = c_open(c_build, [encode(desc)], fd=fd, mode=mode, allow_unsealed=allow)
        py_rule = python_rule(desc, fd=fd, mode=mode, allow_unsealed=allow)
    finally:
        os.close(fd)
    assert got.get("rule", "OK") == py_rule == rule
    if rule == "OK":
        assert got["bytes"] == np.arange(12, dtype="<f8").tobytes().hex()


@pytest.mark.parametrize("written,rule", [(0, "O12"), (4096, "O12"), (8192, "OK")])
def test_allocation_checks_agree_with_python(c_build, written, rule):
    """O12: a memfd of two pages (ftruncate) viewed whole is taken only once both are
    written; a one-element view reads one byte, however the verdict goes."""
    fd = os.memfd_create("stridemap-c-test", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 8192)
        os.pwrite(fd, bytes(written), 0)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        st = os.fstat(fd)
        desc = Descriptor(dtype="|u1", shape=(1,), strides=(1,), buffer_len=8192,
                          file_len=8192, source="fd", device=st.st_dev, inode=st.st_ino)
        [got] = c_open(c_build, [encode(desc)], fd=fd)
        py_rule = python_rule(desc, fd=fd)
    finally:
        os.close(fd)
    assert got.get("rule", "OK") == py_rule == rule


def test_an_unsealable_fd_is_refused_unless_allowed(c_build, live):
    _, desc = live
    fd = os.open(desc.path, os.O_RDONLY)
    try:
        rec = encode(fd_desc(fd))
        assert c_open(c_build, [rec], fd=fd)[0]["rule"] == "O9"
        assert c_open(c_build, [rec], fd=fd, allow_unsealed=True)[0]["ok"]
    finally:
        os.close(fd)


def test_a_missing_fd_is_a_usage_error(c_build):
    fd = memfd(bytes(96), fcntl.F_SEAL_SHRINK)
    rec = encode(fd_desc(fd))
    os.close(fd)
    assert c_open(c_build, [rec])[0]["rule"] == "EINVAL"
