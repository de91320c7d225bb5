"""The fixed 1024-byte record (SPEC §2): decoding with the rules of SPEC §3 in order, and encoding.

>>> from stridemap import Descriptor
>>> rec = encode(Descriptor(dtype="|u1", shape=(4,), strides=(1,), buffer_len=4, file_len=4,
...                         path="/dev/shm/x/a"))
>>> len(rec), decode_fixed(rec).shape
(1024, (4,))
"""

import struct
import sys

from . import crc as _crc, errors, rules
from .memo import NearMemo
from .descriptor import MODES, ORDERS, SOURCES, Descriptor

if sys.version_info >= (3, 12):
    from collections.abc import Buffer as BytesLike
else:  # any object with the buffer protocol is taken; before 3.12 no type names them all
    BytesLike = bytes | bytearray | memoryview

SIZE = 1024
MAGIC = b"\x89SMD\r\n\x1a\n"
MAX_NDIM = 32
MAX_PATH = 256
VERSION = (1, 0)

# (offset, length) of reserved0, reserved1, reserved2 and reserved3, in record order.
_RESERVED = ((19, 1), (26, 6), (104, 24), (896, 124))
_HEADER = struct.Struct("<8sHHIBBBBIH6xQQQQQQQ16s")  # bytes 0-103
_SHAPE_AT, _STRIDES_AT, _PATH_AT, _CRC_AT = 128, 384, 640, 1020
_GENERATION_AT = 80  # u64; no rule of SPEC §3 reads it
_SLOTS = struct.Struct("<32Q")
_STRIDE_SLOTS = struct.Struct("<32q")


_CRC_TABLE = _crc.BYTE_TABLE


def crc32c(data: BytesLike) -> int:
    """CRC-32C (Castagnoli) of ``data`` (SPEC §2.3).

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    if 256 <= len(data) <= _crc.MAX:  # a record's 1020 bytes: the table-per-position way
        return _crc.crc32c(data)
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _first_nonzero(data, start, stop):
    """The index of the first non-zero byte of ``data[start:stop]``, or None."""
    part = data[start:stop]
    rest = part.lstrip(b"\0")
    return None if not rest else start + len(part) - len(rest)


# Records decoded before (a pool worker that receives the same array again skips the checksum
# and the checks, about 60 us of Python), and records that differ from one of them only in
# their identity (device, inode, generation, segment id: bytes 64-103, which no rule of SPEC §3
# reads) and checksum: a segment recycled in place, handed again; a new segment of the same
# layout, as a worker's results are. Only valid records are kept.
_IDENTITY_AT, _IDENTITY_END = 64, 104
_IDENTITY = struct.Struct("<QQQ16s")
_memo = NearMemo(span=(_IDENTITY_AT, _IDENTITY_END), crc_at=_CRC_AT)

BYTES_LIKE = "bytes, bytearray, memoryview or another buffer"


def require_buffer(buf: object, takes: str) -> None:
    """A ``TypeError`` unless ``buf`` has the buffer protocol; ``takes`` begins its message
    (what the caller takes), which ends with the type it got."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        try:
            memoryview(buf)
        except TypeError:
            raise TypeError(f"{takes}, not {type(buf).__name__}") from None


def byte_view(buf: BytesLike):
    """``buf`` as a sequence of its bytes: a buffer of wider items (``array('H')``, a numpy
    ``uint16`` array) is read byte by byte, as SPEC §3 counts (R1), not item by item.

    >>> import array
    >>> len(byte_view(array.array("H", [1, 2, 3]))), byte_view(b"ab")
    (6, b'ab')
    """
    if type(buf) is bytes or type(buf) is bytearray:
        return buf
    view = memoryview(buf)
    if view.ndim == 1 and view.format in ("B", "b", "c"):
        return view
    try:
        return view.cast("B")
    except TypeError:  # not C-contiguous, or a format cast refuses
        return view.tobytes()


def decode_fixed(buf: BytesLike) -> Descriptor:
    """Decode and validate a fixed record (the first 1024 bytes of ``buf``).

    Raises the :class:`~stridemap.DescriptorError` of the first rule broken (SPEC §3), a
    ``TypeError`` when ``buf`` is not bytes-like.
    """
    require_buffer(buf, f"decode_fixed() takes the bytes of a fixed record ({BYTES_LIKE})")
    buf = byte_view(buf)
    if len(buf) < SIZE:
        raise errors.Truncated(f"R1: truncated record: needs {SIZE} bytes, got {len(buf)}")
    rec = bytes(buf[:SIZE])
    desc = _memo.get(rec)
    if desc is None:
        template = _memo.near(rec)
        if template is not None:
            return template.with_identity(*_IDENTITY.unpack_from(rec, _IDENTITY_AT))
        desc = _decode_fixed(rec)
        _memo.put(rec, desc)
    return desc


def with_generation(rec: bytes, generation: int) -> bytes:
    """The valid version 1.0 record ``rec`` (bytes) with ``generation`` in place of its own,
    checksum updated: what :func:`encode` gives for the same descriptor at that generation.

    >>> from stridemap import Descriptor
    >>> d = Descriptor(dtype="<f8", shape=(2,), strides=(8,), buffer_len=16, file_len=16,
    ...                path="/dev/shm/x/a", generation=1, segment_id=bytes(range(16)))
    >>> with_generation(encode(d), 5) == encode(d.with_generation(5))
    True
    """
    return _crc.replaced(rec, _GENERATION_AT, generation.to_bytes(8, "little"), _CRC_AT)


def with_identity(rec: bytes, device: int, inode: int, generation: int,
                  segment_id: bytes) -> bytes:
    """The valid version 1.0 record ``rec`` (bytes) describing the same layout in another file
    or segment: what :func:`encode` gives for ``desc.with_identity(...)``, its checksum patched
    (no rule reads these fields: valid as ``rec`` is). ``ValueError`` for values a record
    cannot hold.

    >>> from stridemap import Descriptor
    >>> d = Descriptor(dtype="<f8", shape=(2,), strides=(8,), buffer_len=16, file_len=16,
    ...                source="fd", generation=1, segment_id=bytes(16))
    >>> with_identity(encode(d), 7, 8, 9, b"s" * 16) == encode(d.with_identity(7, 8, 9, b"s" * 16))
    True
    """
    if len(segment_id) != 16:
        raise ValueError("segment_id must be 16 bytes")
    try:
        new = _IDENTITY.pack(device, inode, generation, segment_id)
    except struct.error as e:
        raise ValueError(f"a field does not fit its record slot: {e}") from None
    return _crc.replaced(rec, _IDENTITY_AT, new, _CRC_AT)


def _decode_fixed(rec, checksummed=False):
    (magic, major, minor, flags, byteorder, kind, ndim, _, itemsize, path_len,
     buffer_offset, buffer_len, offset, file_len, device, inode, generation,
     segment_id) = _HEADER.unpack_from(rec)
    if magic != MAGIC:
        found = ", ".join(f"{b:02x}" for b in magic)
        raise errors.BadMagic(f"R2: not a stridemap record: magic is [{found}]")
    if major != VERSION[0]:
        raise errors.UnsupportedVersion(
            f"R3: unsupported version {major}.{minor}: this reader knows major version 1"
        )
    stored = int.from_bytes(rec[_CRC_AT:], "little")
    computed = stored if checksummed else crc32c(rec[:_CRC_AT])
    if stored != computed:
        raise errors.BadChecksum(
            f"R4: CRC-32C mismatch: record says {stored:#010x}, bytes give {computed:#010x}"
        )
    known_minor = minor <= VERSION[1]
    if known_minor and flags & ~0xF:
        raise errors.UnknownFlags(
            f"R5: unknown flag bits set in {flags:#010x} (version 1.0 defines bits 0-3)"
        )
    mode_code = (flags >> 1) & 3
    if mode_code == 3:
        raise errors.BadMode("R6: mode code 3 is not r (0), r+ (1) or c (2)")
    if known_minor:
        for at, n in _RESERVED:
            i = _first_nonzero(rec, at, at + n)
            if i is not None:
                raise errors.ReservedNotZero(f"R7: reserved byte at offset {i} is not zero")
    dtype = rules.check_dtype(byteorder, kind, itemsize)
    if ndim > MAX_NDIM:
        raise errors.TooManyAxes(f"R11: {ndim} axes: at most {MAX_NDIM} are allowed")
    shape = _SLOTS.unpack_from(rec, _SHAPE_AT)
    strides = _STRIDE_SLOTS.unpack_from(rec, _STRIDES_AT)
    for k in range(ndim, MAX_NDIM):
        if shape[k] or strides[k]:
            raise errors.UnusedAxisNotZero(
                f"R12: shape or stride slot {k} is beyond ndim but not zero"
            )
    if path_len > MAX_PATH:
        raise errors.PathTooLong(f"R13: path of {path_len} bytes: at most {MAX_PATH} are allowed")
    path_field = rec[_PATH_AT:_PATH_AT + MAX_PATH]
    i = _first_nonzero(path_field, path_len, MAX_PATH)
    if i is not None:
        raise errors.PathPaddingNotZero(f"R14: path padding byte {i} is not zero")
    from_fd = bool(flags & 8)
    path = rules.check_path(path_field[:path_len], from_fd)
    shape, strides = shape[:ndim], strides[:ndim]
    rules.check_layout(itemsize, shape, strides, offset, buffer_offset, buffer_len, file_len)
    return Descriptor(
        version=(major, minor),
        dtype=dtype,
        order=ORDERS[flags & 1],
        mode=MODES[mode_code],
        source=SOURCES[from_fd],
        path=path,
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


def flag_bits(desc):
    """The flags word for ``desc``'s order, mode and source; ValueError for unknown names."""
    for name, allowed in (("order", ORDERS), ("mode", MODES), ("source", SOURCES)):
        if getattr(desc, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, not {getattr(desc, name)!r}")
    return (
        ORDERS.index(desc.order)
        | MODES.index(desc.mode) << 1
        | SOURCES.index(desc.source) << 3
    )


def encode(desc: Descriptor) -> bytes:
    """Encode ``desc`` as a version 1.0 fixed record (1024 bytes) and validate it.

    ``desc.version`` is not copied: a 1.0 writer writes 1.0 (SPEC §5). Raises the same errors
    as :func:`decode_fixed` for a descriptor that breaks a rule, and ``ValueError`` for
    values a record cannot hold.
    """
    if desc.version[0] != VERSION[0]:
        raise errors.UnsupportedVersion(f"R3: cannot write major version {desc.version[0]}")
    byteorder, kind, itemsize = rules.parse_typestr(desc.dtype.encode())
    rules.check_dtype(byteorder, kind, itemsize)
    if desc.ndim > MAX_NDIM or len(desc.strides) != desc.ndim:
        raise ValueError(f"need at most {MAX_NDIM} axes and as many strides as shape entries")
    try:
        path = desc.path.encode("utf-8")
    except UnicodeEncodeError as e:
        raise errors.PathNotUtf8(f"R15: path is not UTF-8 ({e.reason})") from None
    if len(path) > MAX_PATH:
        raise errors.PathTooLong(f"R13: path of {len(path)} bytes: at most {MAX_PATH} are allowed")
    if len(desc.segment_id) != 16:
        raise ValueError("segment_id must be 16 bytes")
    rec = bytearray(SIZE)
    try:
        _HEADER.pack_into(
            rec, 0, MAGIC, *VERSION, flag_bits(desc), byteorder, kind, desc.ndim, 0, itemsize,
            len(path), desc.buffer_offset, desc.buffer_len, desc.offset, desc.file_len,
            desc.device, desc.inode, desc.generation, desc.segment_id,
        )
        pad = MAX_NDIM - desc.ndim
        _SLOTS.pack_into(rec, _SHAPE_AT, *desc.shape, *(0,) * pad)
        _STRIDE_SLOTS.pack_into(rec, _STRIDES_AT, *desc.strides, *(0,) * pad)
    except struct.error as e:
        raise ValueError(f"a field does not fit its record slot: {e}") from None
    rec[_PATH_AT:_PATH_AT + len(path)] = path
    rec[_CRC_AT:] = crc32c(rec[:_CRC_AT]).to_bytes(4, "little")
    rec = bytes(rec)
    if _memo.get(rec) is None:  # the rules checked as a reader checks them, the checksum just made
        _memo.put(rec, _decode_fixed(rec, checksummed=True))
    return rec
