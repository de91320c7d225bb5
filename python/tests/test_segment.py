"""Segments (SPEC §7, §8, rule O10): the shared lock lives exactly as long as the mapping, the
header must be valid and match, a producer's exclusive lock is waited for (then "busy"), and
files that are not segments are never waited for."""

import dataclasses
import errno
import gc
import os
import time

import numpy as np
import pytest
from segments import (
    CAPACITY, EXPECTED, SEG_ID, Producer, exclusive_free, segment_desc, segment_memfd,
    write_segment,
)

import stridemap
from stridemap import encode, errors
from stridemap.segments import header as segment
from stridemap.segments.header import DATA_OFFSET, decode_header, encode_header


@pytest.fixture
def seg(tmp_path):
    path = write_segment(str(tmp_path / "seg"))
    return tmp_path, path, segment_desc(path)


def fds_of(path):
    """This process's fds open on ``path``."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == path:
                out.append(int(name))
        except OSError:
            pass
    return out


def test_header_round_trip_and_every_validity_condition():
    good = encode_header(SEG_ID, 5, 1 << 20, owner_pid=42)
    h = decode_header(good)
    assert (h.segment_id, h.generation, h.data_offset, h.capacity, h.owner_pid) == (
        SEG_ID, 5, 4096, 1 << 20, 42)
    assert decode_header(good[:63]) is None
    for at in (0, 8, 13, 20, 35, 50, 59, 60, 63):  # any flipped bit breaks magic/version/CRC
        bad = bytearray(good)
        bad[at] ^= 1
        assert decode_header(bytes(bad)) is None, at
    assert decode_header(encode_header(SEG_ID, 0, 4096)) is None  # generation >= 1
    assert decode_header(encode_header(SEG_ID, 1, 4096, data_offset=63)) is None
    assert decode_header(encode_header(SEG_ID, 1, 4096, data_offset=64)) is not None


def test_a_segment_opens_by_path(seg):
    root, _, desc = seg
    a = stridemap.open(encode(desc), allowed_roots=[root])
    assert a.tolist() == EXPECTED.tolist()


def test_the_lock_lives_exactly_as_long_as_the_array(seg):
    root, path, desc = seg
    assert exclusive_free(path)
    a = stridemap.open(encode(desc), allowed_roots=[root])
    view = a[1:, ::-1]
    # The reader's own fd is closed, and the mmap behind the array keeps none (mapfd): the
    # mapping itself holds the open file description, and with it the lock.
    assert fds_of(path) == []
    assert not exclusive_free(path)
    del a
    gc.collect()
    assert not exclusive_free(path), "a view of the array still maps the segment"
    assert view.tolist() == EXPECTED[1:, ::-1].tolist()
    del view
    gc.collect()
    assert fds_of(path) == []
    assert exclusive_free(path)


def test_a_memfd_segment_by_fd_keeps_its_lock_after_the_fd_is_closed():
    fd = segment_memfd()
    probe = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)  # to look at it later
    a = stridemap.open(encode(segment_desc(fd)), fd=fd)
    os.close(fd)
    assert a.tolist() == EXPECTED.tolist()
    assert not exclusive_free(probe)
    del a
    gc.collect()
    assert exclusive_free(probe)
    os.close(probe)


def test_a_refused_segment_is_not_left_locked(seg):
    root, path, desc = seg
    with pytest.raises(errors.StaleSegment):
        stridemap.open(encode(dataclasses.replace(desc, generation=1)), allowed_roots=[root])
    assert exclusive_free(path) and fds_of(path) == []


def test_o10_stale_generation(seg):
    root, _, desc = seg
    with pytest.raises(errors.StaleSegment) as e:
        stridemap.open(encode(dataclasses.replace(desc, generation=1)), allowed_roots=[root])
    assert e.value.rule == "O10" and e.value.found.generation == 2
    assert "stale descriptor" in str(e.value) and "generation 2" in str(e.value)


@pytest.mark.parametrize("change", [
    {"segment_id": bytes(range(2, 18))},                 # another segment
    {"segment_id": bytes(16)},                           # no id: matches no header
    {"buffer_offset": 0, "offset": 64},                  # over the header
    {"buffer_offset": DATA_OFFSET + CAPACITY - 95},      # past the data area's end
], ids=["other-id", "zero-id", "over-header", "past-capacity"])
def test_o10_header_does_not_match(tmp_path, change):
    # The file is longer than the header's data area, so that the last case passes R19 and O7.
    path = str(tmp_path / "seg")
    write_segment(path)
    with open(path, "r+b") as f:
        f.truncate(DATA_OFFSET + CAPACITY + 100)
    desc = segment_desc(path, file_len=DATA_OFFSET + CAPACITY + 100, **change)
    with pytest.raises(errors.StaleSegment) as e:
        stridemap.open(encode(desc), allowed_roots=[tmp_path])
    assert e.value.rule == "O10" and e.value.found is not None


def test_o10_zero_id_in_the_header_too(tmp_path):
    path = write_segment(str(tmp_path / "seg"), segment_id=bytes(16))
    desc = segment_desc(path, segment_id=bytes(16))
    with pytest.raises(errors.StaleSegment) as e:
        stridemap.open(encode(desc), allowed_roots=[tmp_path])
    assert "names no segment" in str(e.value)


def corrupt(at):
    def change(header):
        b = bytearray(header)
        b[at] ^= 0x10
        return bytes(b)
    return change


@pytest.mark.parametrize("header", [
    corrupt(0)(encode_header(SEG_ID, 2, CAPACITY)),                 # magic
    corrupt(33)(encode_header(SEG_ID, 2, CAPACITY)),                # checksum
    encode_header(SEG_ID, 2, CAPACITY)[:60] + bytes(4),             # checksum zeroed
    encode_header(SEG_ID, 2, CAPACITY, data_offset=32),             # data offset < 64
    bytes(64),                                                      # no header at all
], ids=["magic", "crc", "no-crc", "data-offset", "zeros"])
def test_o10_invalid_header(tmp_path, header):
    path = write_segment(str(tmp_path / "seg"), header=header)
    with pytest.raises(errors.StaleSegment) as e:
        stridemap.open(encode(segment_desc(path)), allowed_roots=[tmp_path])
    assert e.value.rule == "O10" and e.value.found is None


def test_o10_major_version_2(tmp_path):
    h = bytearray(encode_header(SEG_ID, 2, CAPACITY))
    h[8] = 2
    h[60:] = stridemap.crc32c(bytes(h[:60])).to_bytes(4, "little")
    path = write_segment(str(tmp_path / "seg"), header=bytes(h))
    with pytest.raises(errors.StaleSegment):
        stridemap.open(encode(segment_desc(path)), allowed_roots=[tmp_path])


def test_o10_file_shorter_than_a_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x89SMS")
    st = os.stat(path)
    desc = stridemap.Descriptor(dtype="|u1", shape=(4,), strides=(1,), buffer_len=4,
                                file_len=4, path=str(path), device=st.st_dev, inode=st.st_ino,
                                generation=1, segment_id=SEG_ID)
    with pytest.raises(errors.StaleSegment):
        stridemap.open(encode(desc), allowed_roots=[tmp_path])


def test_a_plain_file_named_as_a_segment_is_o10(tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(np.arange(12, dtype="<f8").tobytes())
    desc = stridemap.Descriptor(dtype="<f8", shape=(12,), strides=(8,), buffer_len=96,
                                file_len=96, path=str(path), generation=7, segment_id=SEG_ID)
    with pytest.raises(errors.StaleSegment) as e:
        stridemap.open(encode(desc), allowed_roots=[tmp_path])
    assert "no valid segment header" in str(e.value)


def test_earlier_checks_come_first(seg):
    root, path, desc = seg
    os.truncate(path, DATA_OFFSET + CAPACITY - 1)  # O7 before O10 (and before any locking)
    with pytest.raises(errors.LengthMismatch):
        stridemap.open(encode(dataclasses.replace(desc, generation=9)), allowed_roots=[root])


def test_busy_after_the_patience_runs_out(seg, monkeypatch):
    root, path, desc = seg
    monkeypatch.setattr(segment, "LOCK_PATIENCE", 0.3)
    producer = Producer(path)
    try:
        start = time.monotonic()
        with pytest.raises(errors.SegmentBusy) as e:
            stridemap.open(encode(desc), allowed_roots=[root])
        assert 0.3 <= time.monotonic() - start < 2.0
        assert e.value.rule == "" and isinstance(e.value, errors.OpenError)
        assert e.value.errno == errno.EWOULDBLOCK
        assert "fresh descriptor" in str(e.value)
    finally:
        producer.close()
    assert stridemap.open(encode(desc), allowed_roots=[root]).tolist() == EXPECTED.tolist()


def test_the_default_patience_is_two_seconds():
    assert segment.LOCK_PATIENCE == 2.0


def test_waits_for_a_recycling_producer_then_sees_the_new_generation(seg):
    """The producer holds LOCK_EX while it rewrites the header: a reader waits, then reads the
    new header, so its old descriptor is stale and a new one opens."""
    root, path, desc = seg
    producer = Producer(path)

    def recycle(fd):
        os.pwrite(fd, encode_header(SEG_ID, 3, CAPACITY), 0)

    producer.release_after(0.2, recycle)
    try:
        start = time.monotonic()
        with pytest.raises(errors.StaleSegment) as e:
            stridemap.open(encode(desc), allowed_roots=[root])
        assert time.monotonic() - start >= 0.15
        assert e.value.found.generation == 3
    finally:
        producer.close()
    a = stridemap.open(encode(dataclasses.replace(desc, generation=3)), allowed_roots=[root])
    assert a.tolist() == EXPECTED.tolist()


def test_a_file_that_is_not_a_segment_is_never_waited_for(tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(np.arange(12, dtype="<f8").tobytes())
    desc = stridemap.Descriptor(dtype="<f8", shape=(12,), strides=(8,), buffer_len=96,
                                file_len=96, path=str(path))
    producer = Producer(str(path))
    try:
        start = time.monotonic()
        a = stridemap.open(encode(desc), allowed_roots=[tmp_path])
        assert time.monotonic() - start < 0.5 and a[11] == 11.0
    finally:
        producer.close()
    del a
    gc.collect()
    # and when it is free, the lock is taken (and held while mapped)
    b = stridemap.open(encode(desc), allowed_roots=[tmp_path])
    assert not exclusive_free(str(path))
    del b
    gc.collect()
    assert exclusive_free(str(path))


def test_an_empty_buffer_of_a_segment_is_checked_but_holds_nothing(seg):
    root, path, desc = seg
    empty = dataclasses.replace(desc, shape=(0, 4), strides=(0, 0), offset=0, buffer_len=0)
    a = stridemap.open(encode(empty), allowed_roots=[root])
    assert a.shape == (0, 4) and exclusive_free(path)
    with pytest.raises(errors.StaleSegment):
        stridemap.open(encode(dataclasses.replace(empty, generation=1)), allowed_roots=[root])
