"""Edge cases of SPEC §1.2, §3 and §4 that the vectors do not pin, each with the result SPEC.md
gives for it. The Python tests check the Python reader against them, the C tests the C reader.
"""

import struct

from stridemap import Descriptor, encode
from stridemap.codec.record import crc32c


def _compact(*parts):
    return b"".join(bytes(p) for p in parts)


def compact_edges():
    head = b"\x89SMC"
    v10 = [1, 0]
    tail = [0, 0, 0x60, 0x60, 0, 0, 0] + [0] * 16  # offset .. generation, segment_id
    body = [3, *b"<f8", 0, 0, 0, 2, *b"/a", 1, 12, 1, 16]  # dtype .. strides
    head_to_path = body[:10]
    return [
        ("minimal", _compact(head, v10, body, tail), "valid"),
        ("non-minimal u16 varints", _compact(head, [0x81, 0x80, 0x00, 0x80, 0x00], body, tail),
         "valid"),
        ("major 65535 in 3 bytes", _compact(head, [0xFF, 0xFF, 0x03, 0], body, tail), "R3"),
        ("third u16 byte 0x04", _compact(head, [0x81, 0x80, 0x04, 0], body, tail), "C1"),
        ("4-byte u16", _compact(head, [0x81, 0x80, 0x80, 0x00, 0], body, tail), "C1"),
        ("fifth u32 enum byte 0x10",
         _compact(head, v10, body[:4], [0x80, 0x80, 0x80, 0x80, 0x10], body[5:], tail), "C1"),
        ("non-minimal 5-byte u32 enum",
         _compact(head, v10, body[:4], [0x80, 0x80, 0x80, 0x80, 0x00], body[5:], tail), "valid"),
        ("order 2", _compact(head, v10, body[:4], [2], body[5:], tail), "C1"),
        ("mode 3", _compact(head, v10, body[:5], [3], body[6:], tail), "C1"),
        ("source 2", _compact(head, v10, body[:6], [2], body[7:], tail), "C1"),
        ("typestr of 17 bytes", _compact(head, v10, [17, *b"|V0000000000000012"], body[4:], tail),
         "C1"),
        ("typestr of 16 bytes, leading zero",
         _compact(head, v10, [16, *b"|V00000000000012"], body[4:], tail), "C4"),
        ("itemsize 00", _compact(head, v10, [4, *b"|V00"], body[4:], tail), "C4"),
        ("itemsize 0", _compact(head, v10, [3, *b"|V0"], body[4:], tail), "R9"),
        ("itemsize of 14 digits",
         _compact(head, v10, [16, *b"|V18446744073709"], body[4:], tail), "R9"),
        ("itemsize beyond u32", _compact(head, v10, [15, *b"|V4294967296000"], body[4:], tail),
         "R9"),
        ("itemsize not a digit", _compact(head, v10, [3, *b"x\xc3\xa9"], body[4:], tail), "C4"),
        ("no itemsize", _compact(head, v10, [2, *b"<f"], body[4:], tail), "C4"),
        ("kind byte 0xA9", _compact(head, v10, [3, *b"\xc3\xa98"], body[4:], tail), "R8"),
        ("byte order x", _compact(head, v10, [3, *b"xf8"], body[4:], tail), "R10"),
        ("typestr not UTF-8", _compact(head, v10, [3, *b"<f\xff"], body[4:], tail), "C1"),
        ("NUL in the path", _compact(head, v10, body[:7], [2, *b"/\x00"], body[10:], tail), "R16"),
        ("surrogate in the path",
         _compact(head, v10, body[:7], [4, *b"/\xed\xa0\x80"], body[10:], tail), "C1"),
        ("overlong in the path", _compact(head, v10, body[:7], [3, *b"/\xc0\xaf"], body[10:], tail),
         "C1"),
        ("path of 257 bytes",
         _compact(head, v10, body[:7], [0x81, 2, *b"/" * 257], body[10:], tail), "C1"),
        ("33 axes", _compact(head, v10, head_to_path, [33] + [1] * 33, [33] + [0] * 33, tail),
         "C1"),
        ("shape 2^64-1 in ten bytes",
         _compact(head, v10, head_to_path, [1] + [0xFF] * 9 + [0x01], [1, 0], tail), "R20"),
        ("tenth u64 byte 0x02",
         _compact(head, v10, head_to_path, [1] + [0xFF] * 9 + [0x02], [1, 0], tail), "C1"),
        ("stride -2^63 (zigzag 2^64-1)",
         _compact(head, v10, head_to_path, [1, 2], [1] + [0xFF] * 9 + [0x01], tail), "R21"),
        ("0-d", _compact(head, v10, head_to_path, [0], [0], [0, 0, 8, 8, 0, 0, 0], [0] * 16),
         "valid"),
        ("segment id cut short",
         _compact(head, v10, head_to_path, [0], [0], [0, 0, 8, 8, 0, 0, 0], [0] * 15), "C1"),
        ("axis counts differ before the end", _compact(head, v10, head_to_path, [1, 2], [0]), "C1"),
        ("minor 5 with trailing bytes", _compact(head, [1, 5], body, tail, [1, 2, 3]), "valid"),
        ("1.0 with a trailing byte", _compact(head, v10, body, tail, [0]), "C1"),
        ("3 bytes", head[:3], "C2"),
        ("empty", b"", "C2"),
        ("fixed magic", b"\x89SMD\r\n\x1a\n", "C2"),
    ]


def _fit(fmt, value):
    bits = 8 * struct.calcsize(fmt)
    value %= 2**bits
    return value - 2**bits if fmt[-1].islower() and value >= 2**(bits - 1) else value


def fix_crc(rec):
    """``rec`` (a bytearray) with its CRC-32C recomputed."""
    rec[1020:] = crc32c(rec[:1020]).to_bytes(4, "little")
    return rec


def set_fields(rec, fields):
    """Writes ((offset, struct format), value) pairs into ``rec``, wrapping values to fit."""
    for (at, fmt), value in fields:
        struct.pack_into(fmt, rec, at, _fit(fmt, value))


def record_edges():
    base = encode(Descriptor(dtype="|u1", shape=(2,), strides=(1,), buffer_len=2, file_len=2,
                             path="/a"))

    def record(fields=(), path=None):
        rec = bytearray(base)
        set_fields(rec, fields)
        if path is not None:
            rec[640:896] = path.ljust(256, b"\0")
            struct.pack_into("<H", rec, 24, len(path))
        return bytes(fix_crc(rec))

    huge = [((40, "<Q"), 2**63 - 1), ((56, "<Q"), 2**63 - 1)]  # a buffer of 2^63-1 bytes
    void = [((20, "<I"), 2**31 - 1), ((17, "B"), ord("V"))]
    return [
        ("path: surrogate", record(path=b"/\xed\xa0\x80"), "R15"),
        ("path: overlong /", record(path=b"/\xc0\xaf"), "R15"),
        ("path: above U+10FFFF", record(path=b"/\xf4\x90\x80\x80"), "R15"),
        ("path: overlong 4-byte", record(path=b"/\xf0\x8f\xbf\xbf"), "R15"),
        ("path: overlong 3-byte", record(path=b"/\xe0\x9f\xbf"), "R15"),
        ("path: cut sequence", record(path=b"/\xc3"), "R15"),
        ("path: U+10FFFF", record(path=b"/\xf4\x8f\xbf\xbf"), "valid"),
        ("path: U+FFFF", record(path=b"/\xef\xbf\xbf"), "valid"),
        ("path: DEL", record(path=b"/\x7f"), "valid"),
        ("path: NUL", record(path=b"/a\x00"), "R16"),
        ("path: multi-byte", record(path="/é/✓/𝄞".encode()), "valid"),
        ("hi past 2^63", record(huge + [((128, "<Q"), 2**62), ((384, "<q"), 2**62)]), "R22"),
        ("lo below 0 by 2^63", record(huge + [((128, "<Q"), 3), ((384, "<q"), -2**62)]), "R22"),
        ("offset 2^63", record(huge + [((48, "<Q"), 2**63)]), "R22"),
        ("offset 2^64-1", record(huge + [((48, "<Q"), 2**64 - 1)]), "R22"),
        ("last byte at 2^63-1", record(huge + [((48, "<Q"), 2**63 - 3)]), "valid"),
        ("one past 2^63-1", record(huge + [((48, "<Q"), 2**63 - 2)]), "R22"),
        ("empty at the very end", record(huge + [((48, "<Q"), 2**63 - 1), ((128, "<Q"), 0)]),
         "valid"),
        ("size just below 2^63", record(huge + void + [((128, "<Q"), 2**32 + 2)]), "valid"),
        ("size just above 2^63", record(huge + void + [((128, "<Q"), 2**32 + 3)]), "R20"),
        ("empty buffer at 2^63-1",
         record([((32, "<Q"), 2**63 - 1), ((40, "<Q"), 0), ((56, "<Q"), 2**64 - 1),
                 ((128, "<Q"), 0), ((384, "<q"), 0)]), "valid"),
        ("V of 2^31 bytes", record([((20, "<I"), 2**31), ((17, "B"), ord("V"))]), "R9"),
        ("32 axes, slot 31 used", record([((18, "B"), 32), ((128 + 8 * 31, "<Q"), 1)]), "valid"),
        ("1023 bytes", base[:1023], "R1"),
        ("empty", b"", "R1"),
    ]


def all_edges():
    """[(name, form, bytes, expected)], expected "valid" or a rule id."""
    return [(n, "compact", d, e) for n, d, e in compact_edges()] + \
        [(n, "fixed", d, e) for n, d, e in record_edges()]
