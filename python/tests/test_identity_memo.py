"""Records that differ only in their identity (device, inode, generation, segment id: bytes
64-103, which no rule of SPEC §3 reads) are described and decoded from one another (issue #21:
a worker's results in new segments of one layout): the sender patches a record of the same
layout (``segments.backing.record_of_view``), the receiver checks the patched checksum against
a record it decoded (``codec.record``). Both must give what encoding or decoding in full gives,
and a wrong checksum must still be refused (R4)."""

import random

import numpy as np
import pytest

import stridemap
from stridemap import Descriptor
from stridemap.codec import errors, record
from stridemap.segments import backing


def _identities(rng, n):
    for _ in range(n):
        yield (rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64),
               bytes(rng.getrandbits(8) for _ in range(16)))


LAYOUTS = [
    Descriptor(dtype="<f8", shape=(1000,), strides=(8,), buffer_offset=4096, buffer_len=8000,
               file_len=12096, source="fd", generation=1, segment_id=b"a" * 16),
    Descriptor(dtype=">i2", shape=(10, 7), strides=(-2, 20), offset=18, buffer_len=200,
               file_len=200, path="/dev/shm/stridemap-x/a", mode="r+"),
    Descriptor(dtype="|u1", shape=(), strides=(), buffer_len=1, file_len=1, source="fd",
               mode="c"),
]


@pytest.mark.parametrize("desc", LAYOUTS, ids=["f8", "i2-path", "scalar"])
def test_a_record_patched_to_another_identity_is_what_encoding_gives(desc):
    rng = random.Random(21)
    rec = record.encode(desc)
    for ident in _identities(rng, 200):
        assert record.with_identity(rec, *ident) == record.encode(desc.with_identity(*ident))


def test_a_record_of_another_identity_decodes_from_the_memo_as_in_full(monkeypatch):
    rng = random.Random(22)
    full = record._decode_fixed
    calls = []
    monkeypatch.setattr(record, "_decode_fixed",
                        lambda rec, checksummed=False: calls.append(1) or full(rec, checksummed))
    for desc in LAYOUTS:
        rec = record.encode(desc)
        record.decode_fixed(rec)
        calls.clear()
        for ident in _identities(rng, 50):
            other = record.with_identity(rec, *ident)
            assert record.decode_fixed(other) == full(other)
        assert calls == []  # the memo served all 50: none decoded in full


def test_a_wrong_checksum_is_refused_whatever_the_memo_knows():
    rng = random.Random(23)
    desc = LAYOUTS[0]
    rec = record.encode(desc)
    record.decode_fixed(rec)
    for ident in _identities(rng, 50):
        other = bytearray(record.with_identity(rec, *ident))
        other[1020 + rng.randrange(4)] ^= 1 << rng.randrange(8)
        with pytest.raises(errors.BadChecksum):
            record.decode_fixed(bytes(other))
    # Another byte than the identity's changed too: no memo serves it, every rule is checked.
    other = bytearray(record.with_identity(rec, 1, 2, 3, b"z" * 16))
    other[20] = 3  # itemsize 3 for a float: R9, checksum fixed up
    other[1020:] = record.crc32c(bytes(other[:1020])).to_bytes(4, "little")
    with pytest.raises(errors.BadItemsize):
        record.decode_fixed(bytes(other))


def test_views_of_new_segments_of_one_layout_are_described_as_in_full(monkeypatch):
    """stridemap.empty() twice, each a new segment: the second's records are the first's
    patched, byte for byte what describing them in full gives."""
    monkeypatch.setattr(stridemap.segments.recycle, "MAX_BYTES", 0)  # new segments only
    a, b = stridemap.empty((30, 40), "<f4"), stridemap.empty((30, 40), "<f4")
    assert a.segment is not b.segment
    views = lambda x: [x, x[::-1], x.T, x[3:7, ::-3], x[5]]  # noqa: E731
    for v in views(a):
        a.segment.describe(v)
    encodes = []
    full = backing.encode
    monkeypatch.setattr(backing, "encode", lambda d: encodes.append(1) or full(d))
    got = [b.segment.describe(v) for v in views(b)]
    assert encodes == []  # every one patched
    backing._layouts.clear()
    assert got == [b.segment.describe(v) for v in views(b)]  # as encoded in full
    assert len(encodes) == 5
    for v, rec in zip(views(b), got):
        assert np.array_equal(stridemap.open(rec, fd=b.segment.fd), v)


def test_a_segment_header_of_another_identity_decodes_from_the_memo_as_in_full(monkeypatch):
    """The header (SPEC §8) likewise: another segment id and generation, checksum patched;
    a wrong checksum and generation 0 (with a right checksum) are still not a header."""
    from stridemap.segments import header

    rng = random.Random(24)
    full = header._decode_header
    calls = []
    monkeypatch.setattr(header, "_decode_header",
                        lambda buf: calls.append(1) or full(buf))
    first = header.encode_header(b"s" * 16, 3, 1 << 20, owner_pid=77)
    assert header.decode_header(first) == full(first)
    calls.clear()
    for _ in range(50):
        seg_id = bytes(rng.getrandbits(8) for _ in range(16))
        h = header.encode_header(seg_id, rng.getrandbits(64) or 1, 1 << 20, owner_pid=77)
        assert header.decode_header(h) == full(h)
        bad = bytearray(h)
        bad[60 + rng.randrange(4)] ^= 1 << rng.randrange(8)
        assert header.decode_header(bytes(bad)) is None
    assert calls == [1] * 50  # only the wrong checksums, which the memo does not serve
    zero = header.encode_header(b"z" * 16, 0, 1 << 20, owner_pid=77)  # checksum right
    assert header.decode_header(zero) is None
