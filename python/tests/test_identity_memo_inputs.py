"""The identity memos (record bytes 64-103, segment header bytes 16-39): with a warm memo,
``decode_fixed`` and ``decode_header`` must give exactly what a full decode of the same bytes
gives (the same Descriptor / SegmentHeader, or the same error), whatever the input's
buffer type, its minor version, and which bytes changed. Differential and randomized, cheap
(no pools, no processes)."""

import array
import random
import threading

import numpy as np
import pytest

from stridemap import Descriptor
from stridemap.codec import crc as _crc, record
from stridemap.segments import header

import test_identity_memo

# The layouts of test_identity_memo, and an empty one (no buffer, F order).
LAYOUTS = test_identity_memo.LAYOUTS + [
    Descriptor(dtype="<c16", shape=(3, 0, 5), strides=(0, 0, 0), buffer_len=0, file_len=0,
               source="fd", order="F"),
]


def _resign(rec):
    rec = bytearray(rec)
    rec[1020:] = record.crc32c(bytes(rec[:1020])).to_bytes(4, "little")
    return bytes(rec)


def _minor(rec, minor, flags_hi=0, reserved=b""):
    """``rec`` as a record of a later minor version, with bits a 1.0 reader must not see."""
    rec = bytearray(rec)
    rec[10:12] = minor.to_bytes(2, "little")
    rec[12:16] = (int.from_bytes(rec[12:16], "little") | flags_hi).to_bytes(4, "little")
    rec[104:104 + len(reserved)] = reserved
    return _resign(rec)


def _full(rec):
    """What a full decode gives: ('ok', Descriptor) or ('err', type, message)."""
    try:
        return ("ok", record._decode_fixed(bytes(rec)))
    except Exception as e:  # noqa: BLE001
        return ("err", type(e), str(e))


def _memoized(buf):
    try:
        return ("ok", record.decode_fixed(buf))
    except Exception as e:  # noqa: BLE001
        return ("err", type(e), str(e))


def _variants(rng, rec):
    """Records near ``rec``: its identity changed (checksum right or wrong), a byte beside it
    changed, checksum bits flipped, a byte elsewhere changed and re-signed."""
    for _ in range(60):
        new = bytearray(rec)
        what = rng.randrange(6)
        for _ in range(rng.randrange(1, 5)):
            new[rng.randrange(64, 104)] = rng.randrange(256)
        if what == 0:
            new = bytearray(_resign(new))
        elif what == 1:
            new = bytearray(_resign(new))
            new[1020 + rng.randrange(4)] ^= 1 << rng.randrange(8)
        elif what == 2:  # the byte just outside the identity (reserved2 / file_len)
            new[rng.choice((63, 104))] ^= 1 << rng.randrange(8)
            new = bytearray(_resign(new))
        elif what == 3:  # anywhere, re-signed
            new[rng.randrange(1020)] ^= 1 << rng.randrange(8)
            new = bytearray(_resign(new))
        elif what == 4:  # identity changed, checksum of the old record kept
            pass
        else:  # the old checksum patched for only part of the change
            new = bytearray(_resign(new))
            new[64 + rng.randrange(40)] ^= 1 << rng.randrange(8)
        yield bytes(new)


def _as(kind, rec):
    if kind == "bytes":
        return rec
    if kind == "bytearray":
        return bytearray(rec)
    if kind == "memoryview":
        return memoryview(bytearray(rec))
    if kind == "numpy":
        return np.frombuffer(rec, dtype=np.uint8)
    if kind == "longer":
        return rec + b"\xff" * 100
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy", "longer"])
@pytest.mark.parametrize("minor", [0, 1])
def test_a_warm_memo_decodes_every_nearby_record_as_a_full_decode(kind, minor):
    rng = random.Random(27 + minor)
    for desc in LAYOUTS:
        rec = record.encode(desc)
        if minor:
            rec = _minor(rec, 3, flags_hi=1 << 20, reserved=b"\x07" * 24)
        assert _memoized(rec)[0] == "ok"  # the memo knows it now
        for new in _variants(rng, rec):
            expect = _full(new)
            got = _memoized(_as(kind, new))
            assert got == expect, (kind, new[64:104].hex(), new[1020:].hex())
            if got[0] == "ok":  # and the memo path gives it again, now warm from itself
                assert _memoized(_as(kind, new)) == expect


def test_a_buffer_of_wider_items_is_read_byte_by_byte():
    """A buffer of 2-byte items (array('H'), a uint16 array) holds the record in its first 1024
    bytes, as SPEC §3 counts (R1): it decodes as those bytes do, memo or not (it was read item
    by item: 2048 bytes, then a wrong checksum)."""
    from stridemap.codec.decode import decode

    rng = random.Random(271)
    rec = record.encode(LAYOUTS[0])
    record.decode_fixed(rec)
    for tail in (b"", bytes(1024), b"\x01" + bytes(1023)):
        for new in list(_variants(rng, rec))[:20]:
            buf = new + tail
            expect = _full(new)
            for wide in (array.array("H", buf), np.frombuffer(buf, dtype=np.uint16),
                         np.frombuffer(buf, dtype=">u2")[::1]):
                assert _memoized(wide) == expect
                if expect[0] == "ok":
                    assert decode(wide) == expect[1]
    with pytest.raises(record.errors.Truncated, match="got 1022"):
        record.decode_fixed(array.array("H", bytes(1022)))


def test_the_memo_cleared_by_another_thread_meanwhile_never_gives_a_wrong_descriptor():
    rng = random.Random(272)
    recs = []
    for desc in LAYOUTS:
        rec = record.encode(desc)
        recs += [rec] + list(_variants(rng, rec))[:30]
    expect = {r: _full(r) for r in recs}
    stop = threading.Event()

    def clear():
        while not stop.is_set():
            record._memo.clear()

    t = threading.Thread(target=clear)
    t.start()
    try:
        for _ in range(20):
            for r in recs:
                assert _memoized(r) == expect[r]
    finally:
        stop.set()
        t.join()


def _full_header(buf):
    return header._decode_header(bytes(buf[:64]))


def test_a_warm_header_memo_decodes_every_nearby_header_as_a_full_decode():
    rng = random.Random(273)
    for minor in (0, 5):
        for gen in (1, 2**64 - 1):
            h = bytearray(header.encode_header(bytes(range(16)), gen, 1 << 20, owner_pid=77))
            h[10:12] = minor.to_bytes(2, "little")
            h[52:60] = b"\x09" * 8 if minor else bytes(8)  # reserved: no rule reads it
            h[60:] = record.crc32c(bytes(h[:60])).to_bytes(4, "little")
            h = bytes(h)
            assert header.decode_header(h) == _full_header(h) is not None
            for _ in range(300):
                new = bytearray(h)
                for _ in range(rng.randrange(1, 4)):
                    new[rng.randrange(16, 40)] = rng.randrange(256)
                if rng.random() < 0.15:
                    new[32:40] = bytes(8)  # generation 0
                if rng.random() < 0.2:
                    new[rng.choice((15, 40, rng.randrange(60)))] ^= 1 << rng.randrange(8)
                if rng.random() < 0.7:
                    new[60:] = record.crc32c(bytes(new[:60])).to_bytes(4, "little")
                new = bytes(new)
                assert header.decode_header(new) == _full_header(new)
                assert header.decode_header(bytearray(new) + b"x") == _full_header(new)


def test_crc_patch_equals_the_crc_of_the_changed_message():
    rng = random.Random(274)
    for n, at, length in ((1020, 64, 40), (60, 16, 24), (1020, 80, 8), (100, 3, 13)):
        for _ in range(200):
            m = bytearray(rng.randbytes(n))
            old = bytes(m[at:at + length])
            new = bytearray(old)
            for _ in range(rng.randrange(0, length + 1)):
                new[rng.randrange(length)] = rng.randrange(256)
            crc = _crc.patch(_crc.crc32c(bytes(m)), n, at, old, bytes(new))
            m[at:at + length] = new
            assert crc == _crc._slow(bytes(m))
