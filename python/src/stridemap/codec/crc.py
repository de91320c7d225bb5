"""CRC-32C of a buffer of up to 1024 bytes with numpy: what a record's checksum costs on every
handoff of a pool, about five times faster than the byte loop of :func:`stridemap.crc32c`.

CRC-32C is affine over GF(2): with ``A(c) = T[c & 0xFF] ^ (c >> 8)`` (one step of the byte
loop on a zero byte) and ``T`` the byte table, the loop gives
``crc(m) = A^n(0xFFFFFFFF) ^ XOR_i A^(n-1-i)(T[m_i]) ^ 0xFFFFFFFF``. ``_rows[k][b]`` holds
``A^k(T[b])``, ``_zeros[n]`` holds ``A^n(0xFFFFFFFF)``; both are built when this module is
imported (1 MiB, about 10 ms): built lazily under a lock, a process forked while another thread
built them had a child that waited for that lock forever.

>>> hex(crc32c(b"123456789" * 20)) == hex(_slow(b"123456789" * 20))
True

The same algebra gives the checksum of a message changed in a few bytes from the old one's
(:func:`patch`): ``crc(m) ^ crc(m') = XOR_i A^(n-1-i)(T[m_i ^ m'_i])`` for messages of one
length, a term per changed byte (a record whose generation alone changed: eight).

>>> m = bytearray(b"123456789" * 20)
>>> old, was = crc32c(m), bytes(m[80:88])
>>> m[80:88] = (7).to_bytes(8, "little")
>>> patch(old, len(m), 80, was, bytes(m[80:88])) == crc32c(m)
True
"""

import numpy as np

MAX = 1024


def _byte_table():
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return tuple(table)


#: The byte table of CRC-32C (Castagnoli, reflected).
BYTE_TABLE = _byte_table()


def _build(table):
    t = np.array(table, dtype=np.uint32)
    rows = np.empty((MAX, 256), dtype=np.uint32)
    rows[0] = t
    for k in range(1, MAX):
        prev = rows[k - 1]
        rows[k] = t[prev & 0xFF] ^ (prev >> 8)
    zeros = np.empty(MAX + 1, dtype=np.uint32)
    c = 0xFFFFFFFF
    for n in range(MAX + 1):
        zeros[n] = c
        c = table[c & 0xFF] ^ (c >> 8)
    return rows, zeros


_tables = _build(BYTE_TABLE)


def crc32c(data):
    """The CRC-32C of ``data`` (at most :data:`MAX` bytes).

    A zero byte adds nothing (``A`` is linear and ``T[0]`` is 0), so only the rows of the
    non-zero bytes are read: a record is mostly zeros (unused axes, reserved bytes, no path),
    and the 1 MiB table is read a few dozen rows at a time instead of a row per byte (on a
    processor just woken, with cold caches, each row read is a cache miss).
    """
    rows, zeros = _tables
    b = np.frombuffer(data, dtype=np.uint8)
    n = b.size
    if n > MAX:
        raise ValueError(f"at most {MAX} bytes, not {n}")
    at = b.nonzero()[0]
    acc = np.bitwise_xor.reduce(rows[n - 1 - at, b[at]]) if at.size else 0
    return int(acc ^ zeros[n]) ^ 0xFFFFFFFF


def patch(crc, n, at, old, new):
    """The CRC-32C of an ``n``-byte message whose CRC-32C was ``crc`` once its bytes from ``at``
    changed from ``old`` to ``new`` (of one length)."""
    rows = _rows_at(n, at, len(old))
    for c in range(0, len(old), 8):  # by 8-byte fields: those unchanged cost a comparison
        if old[c:c + 8] == new[c:c + 8]:
            continue
        for i in range(c, min(c + 8, len(old))):
            a, b = old[i], new[i]
            if a != b:
                crc ^= rows[i][a ^ b]
    return crc


def replaced(message, at, new, crc_at):
    """``message`` (``crc_at`` bytes, then their CRC-32C in 4 little-endian bytes) with its
    bytes from ``at`` replaced by ``new`` and its checksum patched (:func:`patch`).

    >>> m = b"123456789" * 4
    >>> signed = m + crc32c(m).to_bytes(4, "little")
    >>> replaced(signed, 8, b"xy", len(m)) == (lambda x: x + crc32c(x).to_bytes(4, "little"))(
    ...     m[:8] + b"xy" + m[10:])
    True
    """
    end = at + len(new)
    crc = patch(int.from_bytes(message[crc_at:crc_at + 4], "little"), crc_at, at,
                message[at:end], new)
    return message[:at] + new + message[end:crc_at] + crc.to_bytes(4, "little")


_rows_memo = {}


def _rows_at(n, at, length):
    """The rows for bytes ``at`` to ``at + length`` of an ``n``-byte message, as Python tuples
    (a numpy element costs more to read than the whole patch): made once per place."""
    key = (n, at, length)
    rows = _rows_memo.get(key)
    if rows is None:
        rows = tuple(tuple(int(x) for x in _tables[0][n - 1 - (at + i)]) for i in range(length))
        _rows_memo[key] = rows
    return rows


def _slow(data, table=BYTE_TABLE):
    crc = 0xFFFFFFFF
    for x in bytes(data):
        crc = table[(crc ^ x) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
