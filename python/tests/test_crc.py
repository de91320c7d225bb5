"""The numpy CRC-32C (stridemap.codec.crc, used by crc32c for 256 to 1024 bytes) against the byte
loop, on random data of every length it serves and around its edges."""

import random

import pytest

from stridemap import crc32c
from stridemap.codec import crc as _crc
from stridemap.codec.record import _CRC_TABLE


def test_every_length_agrees_with_the_byte_loop():
    rng = random.Random(11)
    for n in list(range(0, 300)) + list(range(1000, 1025)) + [1500]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        want = _crc._slow(data, _CRC_TABLE)
        assert crc32c(data) == want, n
        if n <= _crc.MAX:
            assert _crc.crc32c(data) == want, n
            assert _crc.crc32c(bytearray(data)) == want, n


def test_known_value_and_limit():
    assert crc32c(b"123456789" * 100) == _crc._slow(b"123456789" * 100, _CRC_TABLE)
    with pytest.raises(ValueError, match="at most 1024"):
        _crc.crc32c(bytes(1025))


def test_mostly_zero_data_agrees_with_the_byte_loop():
    """Only non-zero bytes are looked up: records are mostly zeros; all zeros, one byte set
    at each end, and sparse random bytes."""
    rng = random.Random(12)
    for n in (1, 255, 256, 1020, 1024):
        cases = [bytes(n), b"\x01" + bytes(n - 1), bytes(n - 1) + b"\xff"]
        for _ in range(20):
            data = bytearray(n)
            for _ in range(rng.randrange(1, 40)):
                data[rng.randrange(n)] = rng.getrandbits(8)
            cases.append(bytes(data))
        for data in cases:
            assert _crc.crc32c(data) == _crc._slow(data, _CRC_TABLE), (n, data.hex())
