"""The compact form (SPEC §4): postcard's varint, zigzag, string and enum encodings, read and
written by hand, and the checks C1–C4 followed by the record rules.

>>> from stridemap import Descriptor
>>> d = Descriptor(dtype="<f8", shape=(3, 4), strides=(32, 8), buffer_len=96, file_len=96,
...                path="/dev/shm/x/array.bin")
>>> blob = encode_compact(d)
>>> len(blob), decode_compact(blob) == d
(63, True)
"""

from . import errors, rules
from .descriptor import MODES, ORDERS, SOURCES, Descriptor
from .record import BYTES_LIKE, BytesLike, MAX_NDIM, MAX_PATH, VERSION, flag_bits, require_buffer

MAGIC = b"\x89SMC"
MAX_TYPESTR = 16
_MALFORMED = "C1: malformed compact (postcard) descriptor"

# (most bytes, largest value of the last byte) of a varint, per integer width (SPEC §4).
_U16 = (3, 0x03)
_U32 = (5, 0x0F)
_U64 = (10, 0x01)


class _Malformed(Exception):
    """Internal: the input cannot be decoded; reported as C1."""


class _Reader:
    """A cursor over the input that raises _Malformed instead of reading past its end."""

    def __init__(self, data, pos):
        self.data = data
        self.pos = pos

    def raw(self, n):
        if n > len(self.data) - self.pos:
            raise _Malformed
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, width):
        most, last_max = width
        value = 0
        for i in range(most):
            (b,) = self.raw(1)
            if i == most - 1 and b > last_max:
                raise _Malformed
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return value
        raise _Malformed  # not reached: the last byte's limit clears its high bit

    def zigzag(self):
        v = self.varint(_U64)
        return (v >> 1) ^ -(v & 1)

    def string(self, limit):
        n = self.varint(_U64)
        if n > limit:
            raise _Malformed
        s = self.raw(n)
        try:
            s.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed from None
        return s

    def enum(self, variants):
        index = self.varint(_U32)
        if index >= variants:
            raise _Malformed
        return index

    def seq(self, read_one):
        n = self.varint(_U64)
        if n > MAX_NDIM:
            raise _Malformed
        return tuple(read_one() for _ in range(n))


def decode_compact(buf: BytesLike) -> Descriptor:
    """Decode and validate a compact form; raises the error of the first rule broken (SPEC §4),
    a ``TypeError`` when ``buf`` is not bytes-like."""
    require_buffer(buf, f"decode_compact() takes the bytes of a compact form ({BYTES_LIKE})")
    data = bytes(buf)
    if data[:4] != MAGIC:
        raise errors.CompactBadMagic("C2: not a compact stridemap descriptor (bad magic)")
    r = _Reader(data, 4)
    try:
        major, minor = r.varint(_U16), r.varint(_U16)
    except _Malformed:
        raise errors.CompactMalformed(_MALFORMED) from None
    if major != VERSION[0]:
        raise errors.UnsupportedVersion(
            f"R3: unsupported version {major}.{minor}: this reader knows major version 1"
        )
    try:
        typestr = r.string(MAX_TYPESTR)
        order = r.enum(len(ORDERS))
        mode = r.enum(len(MODES))
        source = r.enum(len(SOURCES))
        path = r.string(MAX_PATH) if SOURCES[source] == "path" else b""
        shape = r.seq(lambda: r.varint(_U64))
        strides = r.seq(r.zigzag)
        (offset, buffer_offset, buffer_len, file_len, device, inode,
         generation) = (r.varint(_U64) for _ in range(7))
        segment_id = r.raw(16)
        if minor <= VERSION[1] and r.pos != len(data):
            raise _Malformed
    except _Malformed:
        raise errors.CompactMalformed(_MALFORMED) from None
    if len(shape) != len(strides):
        raise errors.AxisCountMismatch(
            f"C3: {len(shape)} shape entries but {len(strides)} strides"
        )
    dtype = rules.check_dtype(*rules.parse_typestr(typestr))
    text = rules.check_path(path, SOURCES[source] == "fd")
    rules.check_layout(
        int(dtype[2:]), shape, strides, offset, buffer_offset, buffer_len, file_len
    )
    return Descriptor(
        version=(major, minor),
        dtype=dtype,
        order=ORDERS[order],
        mode=MODES[mode],
        source=SOURCES[source],
        path=text,
        shape=shape,
        strides=strides,
        offset=offset,
        buffer_offset=buffer_offset,
        buffer_len=buffer_len,
        file_len=file_len,
        device=device,
        inode=inode,
        generation=generation,
        segment_id=segment_id,
    )


def _varint(value, width):
    if not 0 <= value < 1 << (7 * (width[0] - 1) + width[1].bit_length()):
        raise ValueError(f"{value} does not fit its compact field")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(s):
    return _varint(len(s), _U64) + s


def encode_compact(desc: Descriptor) -> bytes:
    """Encode ``desc`` in the compact form (version 1.0, minimal varints) and validate it."""
    if desc.version[0] != VERSION[0]:
        raise errors.UnsupportedVersion(f"R3: cannot write major version {desc.version[0]}")
    flag_bits(desc)  # ValueError for an unknown order, mode or source
    if len(desc.segment_id) != 16:
        raise ValueError("segment_id must be 16 bytes")
    if not -(2**63) <= min(desc.strides, default=0) <= max(desc.strides, default=0) < 2**63:
        raise ValueError("a stride does not fit in 64 bits")
    parts = [
        MAGIC,
        _varint(VERSION[0], _U16),
        _varint(VERSION[1], _U16),
        _string(desc.dtype.encode()),
        _varint(ORDERS.index(desc.order), _U32),
        _varint(MODES.index(desc.mode), _U32),
        _varint(SOURCES.index(desc.source), _U32),
    ]
    if desc.source == "path":
        parts.append(_string(desc.path.encode("utf-8")))
    parts.append(_varint(len(desc.shape), _U64))
    parts += [_varint(n, _U64) for n in desc.shape]
    parts.append(_varint(len(desc.strides), _U64))
    parts += [_varint((s << 1) ^ (s >> 63), _U64) for s in desc.strides]
    for v in (desc.offset, desc.buffer_offset, desc.buffer_len, desc.file_len, desc.device,
              desc.inode, desc.generation):
        parts.append(_varint(v, _U64))
    parts.append(desc.segment_id)
    blob = b"".join(parts)
    decode_compact(blob)
    return blob
