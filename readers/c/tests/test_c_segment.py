"""stridemap_open() on segments (SPEC §7, §8, rule O10): the same verdicts as the Python reader
on valid, stale and broken segments; the lock lasts exactly as long as the view (held by the
mapping alone, once every fd is closed); a producer's exclusive lock is waited for, then EBUSY.
"""

import dataclasses
import json
import os
import subprocess
import time

import pytest
from segments import (
    CAPACITY, EXPECTED, SEG_ID, Producer, exclusive_free, segment_desc, segment_memfd,
    write_segment,
)
from test_c_open import c_open

import stridemap
from stridemap import encode
from stridemap.segments.header import DATA_OFFSET, encode_header


def py_verdict(desc, **kw):
    try:
        return "OK", stridemap.open(desc, **kw)
    except stridemap.errors.OpenError as e:
        return e.rule or type(e).__name__, None


def bad_crc(path):
    h = bytearray(encode_header(SEG_ID, 2, CAPACITY))
    h[61] ^= 1
    return write_segment(path, header=bytes(h))


# (name, header written (None: a valid one of generation 2), descriptor changes, expected)
CASES = [
    ("valid", None, {}, "OK"),
    ("stale-generation", None, {"generation": 1}, "O10"),
    ("newer-generation", None, {"generation": 3}, "O10"),
    ("other-id", None, {"segment_id": bytes(range(2, 18))}, "O10"),
    ("zero-id", None, {"segment_id": bytes(16)}, "O10"),
    ("over-the-header", None, {"buffer_offset": 0}, "O10"),
    ("past-capacity", encode_header(SEG_ID, 2, 95), {}, "O10"),
    ("bad-magic", b"\x88" + encode_header(SEG_ID, 2, CAPACITY)[1:], {}, "O10"),
    ("bad-crc", "crc", {}, "O10"),
    ("data-offset-32", encode_header(SEG_ID, 2, CAPACITY, data_offset=32), {}, "O10"),
    ("generation-0-header", encode_header(SEG_ID, 0, CAPACITY), {}, "O10"),
    ("no-header", bytes(64), {}, "O10"),
    ("not-a-segment", bytes(64), {"generation": 0}, "OK"),
]


@pytest.mark.parametrize("name,header,change,rule", CASES, ids=[c[0] for c in CASES])
def test_segment_checks_agree_with_python(c_build, tmp_path, name, header, change, rule):
    path = str(tmp_path / "seg")
    if header == "crc":
        bad_crc(path)
    else:
        write_segment(path, header=header)
    desc = segment_desc(path, **change)
    [got] = c_open(c_build, [encode(desc)], roots=[tmp_path])
    py_rule, arr = py_verdict(desc, allowed_roots=[tmp_path])
    assert got.get("rule", "OK") == py_rule == rule
    if rule == "OK":
        assert got["bytes"] == arr.tobytes().hex() == EXPECTED.tobytes().hex()


def test_a_short_file_has_no_header(c_build, tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x89SMS")
    desc = stridemap.Descriptor(dtype="|u1", shape=(4,), strides=(1,), buffer_len=4,
                                file_len=4, path=str(path), generation=1, segment_id=SEG_ID)
    [got] = c_open(c_build, [encode(desc)], roots=[tmp_path])
    assert got["rule"] == py_verdict(desc, allowed_roots=[tmp_path])[0] == "O10"


@pytest.mark.parametrize("generation,rule", [(2, "OK"), (1, "O10")])
def test_a_memfd_segment_by_fd(c_build, generation, rule):
    fd = segment_memfd()
    try:
        desc = segment_desc(fd, generation=generation)
        [got] = c_open(c_build, [encode(desc)], fd=fd)
        assert got.get("rule", "OK") == py_verdict(desc, fd=fd)[0] == rule
    finally:
        os.close(fd)


class Held:
    """smopen --hold on one record: the view stays open until release()."""

    def __init__(self, c_build, rec, args=(), pass_fds=()):
        self.proc = subprocess.Popen(
            [str(c_build / "smopen"), "--hold", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, pass_fds=pass_fds)
        self.proc.stdin.write(rec.hex() + "\n")
        self.proc.stdin.flush()
        self.result = json.loads(self.proc.stdout.readline())

    def fds_on(self, path):
        fd_dir = f"/proc/{self.proc.pid}/fd"
        return [n for n in os.listdir(fd_dir) if os.readlink(f"{fd_dir}/{n}") == path]

    def release(self):
        out, _ = self.proc.communicate("\n", timeout=30)
        assert self.proc.returncode == 0 and out == ""


def test_the_mapping_alone_holds_the_lock_by_path(c_build, tmp_path):
    path = write_segment(str(tmp_path / "seg"))
    held = Held(c_build, encode(segment_desc(path)), ["--root", str(tmp_path)])
    assert held.result == {"ok": True, "bytes": EXPECTED.tobytes().hex()}
    # The reader closed the file; only its mapping keeps the open file description, and the lock.
    assert held.fds_on(path) == []
    assert not exclusive_free(path)
    held.release()
    assert exclusive_free(path)


def test_the_mapping_alone_holds_the_lock_by_fd(c_build):
    fd = segment_memfd()
    probe = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)  # another description
    try:
        held = Held(c_build, encode(segment_desc(fd)), ["--fd", str(fd)], pass_fds=(fd,))
        os.close(fd)  # now only smopen's fd (closed after the open) and its mapping remain
        assert held.result["ok"]
        assert not exclusive_free(probe)
        held.release()
        assert exclusive_free(probe)
    finally:
        os.close(probe)


def test_busy_after_two_seconds(c_build, tmp_path):
    path = write_segment(str(tmp_path / "seg"))
    producer = Producer(path)
    try:
        start = time.monotonic()
        [got] = c_open(c_build, [encode(segment_desc(path))], roots=[tmp_path])
        assert 2.0 <= time.monotonic() - start < 10
        assert got == {"ok": False, "rule": "EBUSY", "errno": 11}
    finally:
        producer.close()


def test_waits_for_a_recycling_producer_then_refuses_the_old_generation(c_build, tmp_path):
    path = write_segment(str(tmp_path / "seg"))
    producer = Producer(path)
    producer.release_after(0.2, lambda fd: os.pwrite(fd, encode_header(SEG_ID, 3, CAPACITY), 0))
    try:
        old, new = segment_desc(path), segment_desc(path, generation=3)
        got = c_open(c_build, [encode(old), encode(new)], roots=[tmp_path])
    finally:
        producer.close()
    assert got[0]["rule"] == "O10" and got[1]["ok"]


def test_a_file_that_is_not_a_segment_is_never_waited_for(c_build, tmp_path):
    path = write_segment(str(tmp_path / "plain"))
    producer = Producer(path)
    try:
        start = time.monotonic()
        desc = dataclasses.replace(segment_desc(path), generation=0)
        [got] = c_open(c_build, [encode(desc)], roots=[tmp_path])
        assert got["ok"] and time.monotonic() - start < 1.5
    finally:
        producer.close()
    held = Held(c_build, encode(desc), ["--root", str(tmp_path)])
    assert not exclusive_free(path)  # a free lock is taken, and held while mapped
    held.release()


def test_header_decoding_matches_the_python_reader(c_build, tmp_path):
    # One more cross-check of the header layout: a header with every field non-trivial.
    sid = bytes(range(200, 216))
    path = write_segment(str(tmp_path / "seg"), segment_id=sid, generation=2**40 + 3)
    desc = segment_desc(path, segment_id=sid, generation=2**40 + 3,
                        buffer_offset=DATA_OFFSET, buffer_len=CAPACITY, offset=64)
    [got] = c_open(c_build, [encode(desc)], roots=[tmp_path])
    assert got["ok"] and py_verdict(desc, allowed_roots=[tmp_path])[0] == "OK"


def vm_flags(pid, name_part, min_bytes):
    """The VmFlags of each mapping of process ``pid`` whose name holds ``name_part`` and whose
    size is at least ``min_bytes``."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not line.startswith("VmFlags"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                cur = hi - lo >= min_bytes and name_part in line
            elif line.startswith("VmFlags:") and cur:
                out.append(set(line.split()[1:]))
    return out


@pytest.mark.parametrize("nbytes,asks", [(3 << 20, True), (1 << 20, False)])
def test_a_large_tmpfs_map_asks_for_huge_pages(c_build, nbytes, asks):
    """A map of 2 MiB or more of a memfd gets MADV_HUGEPAGE (``hg`` in its VmFlags), as in the
    Rust and Python readers; a smaller one does not."""
    import numpy as np

    a = stridemap.share(np.zeros(nbytes, dtype="|u1"))
    ex = stridemap.export(a)
    try:
        held = Held(c_build, ex.record, ["--fd", str(ex.fd)], pass_fds=(ex.fd,))
        try:
            assert held.result["ok"]
            flags = vm_flags(held.proc.pid, "memfd:stridemap-", nbytes)
            assert len(flags) == 1, flags
            assert ("hg" in flags[0]) == asks, flags
        finally:
            held.release()
    finally:
        ex.close()
