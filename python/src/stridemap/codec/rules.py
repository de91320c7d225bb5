"""The validation rules shared by both forms (SPEC §3 R8–R10, R15–R22) and the layout arithmetic
of SPEC §1.2–§1.3. Python integers are exact, so the arithmetic is written as in SPEC.

>>> span(8, (3, 4), (-32, 8), 64)
(0, 96)
"""

from . import errors

I64_MAX = 2**63 - 1

#: Allowed itemsizes per kind (SPEC §2.2); ``V`` allows 1 to 2**31 - 1.
ITEMSIZES = {
    "b": (1,),
    "i": (1, 2, 4, 8),
    "u": (1, 2, 4, 8),
    "f": (2, 4, 8, 16),
    "c": (8, 16, 32),
}
V_ITEMSIZE_MAX = 2**31 - 1
KINDS = "biufcV"


def _char(byte):
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"


def parse_typestr(typestr):
    """C4: split a typestr (bytes) into byte order, kind (byte values) and itemsize (int)."""
    digits = typestr[2:]
    if (
        len(typestr) < 3
        or not all(0x30 <= d <= 0x39 for d in digits)
        or (len(digits) > 1 and digits[0] == 0x30)
        or int(digits) >= 2**64
    ):
        raise errors.BadTypestr(
            "C4: typestr must be one of '<>|', a kind letter and an itemsize, e.g. '<f8'"
        )
    return typestr[0], typestr[1], int(digits)


def check_dtype(byteorder, kind, itemsize):
    """R8, R9, R10 for a dtype given as byte values and an integer itemsize; returns the typestr."""
    if kind > 0x7F or chr(kind) not in KINDS:
        raise errors.UnknownKind(f"R8: dtype kind '{_char(kind)}' is not one of b i u f c V")
    k = chr(kind)
    allowed = 1 <= itemsize <= V_ITEMSIZE_MAX if k == "V" else itemsize in ITEMSIZES[k]
    if not allowed:
        raise errors.BadItemsize(f"R9: itemsize {itemsize} is not allowed for dtype kind '{k}'")
    wanted = b"|" if itemsize == 1 or k == "V" else b"<>"
    if byteorder not in wanted:
        raise errors.BadByteOrder(
            f"R10: byte order '{_char(byteorder)}' does not fit {k}{itemsize}: "
            "use '|' for one-byte and V types, '<' or '>' otherwise"
        )
    return f"{chr(byteorder)}{k}{itemsize}"


def check_path(path, from_fd):
    """R15, R16, R17 for the path's bytes; returns the path as a str."""
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError as e:
        raise errors.PathNotUtf8(f"R15: path is not UTF-8 (valid up to byte {e.start})") from None
    if 0 in path:
        raise errors.PathContainsNul(f"R16: path has a NUL byte at {path.index(0)}")
    if not from_fd and not path:
        raise errors.SourceMismatch("R17: source is a path but the path is empty")
    if from_fd and path:
        raise errors.SourceMismatch(
            f"R17: source is a passed fd but the record also has a {len(path)}-byte path"
        )
    return text


def check_layout(itemsize, shape, strides, offset, buffer_offset, buffer_len, file_len):
    """R18–R22; returns the span ``(lo, hi)``."""
    end = buffer_offset + buffer_len
    if end > I64_MAX:
        raise errors.BufferOverflow(
            f"R18: buffer at {buffer_offset} of length {buffer_len} ends beyond 2^63-1"
        )
    if file_len < end:
        raise errors.FileTooShort(
            f"R19: buffer ends at byte {end} but the file is {file_len} bytes long"
        )
    size = itemsize
    for k, n in enumerate(shape):
        size *= max(n, 1)
        if size > I64_MAX:
            raise errors.SizeOverflow(
                f"R20: array size in bytes exceeds 2^63-1 (overflow at axis {k})"
            )
    for k, s in enumerate(strides):
        if abs(s) > buffer_len:
            raise errors.StrideTooLarge(
                f"R21: stride {s} on axis {k} exceeds the {buffer_len}-byte buffer"
            )
    lo, hi = span(itemsize, shape, strides, offset)
    if lo < 0 or hi > buffer_len:
        raise errors.OutOfBounds(
            f"R22: elements span bytes [{lo}, {hi}) but the buffer is [0, {buffer_len})"
        )
    return lo, hi


def span(itemsize, shape, strides, offset):
    """The bytes ``[lo, hi)`` of the buffer the array touches (SPEC §1.2)."""
    if 0 in shape:
        return offset, offset
    lo = hi = offset
    for n, s in zip(shape, strides):
        extent = (n - 1) * s
        if extent < 0:
            lo += extent
        else:
            hi += extent
    return lo, hi + itemsize


def is_contiguous(itemsize, shape, strides, fortran):
    """numpy's relaxed C- (or F-) contiguity (SPEC §1.3)."""
    if 0 in shape:
        return True
    axes = range(len(shape)) if fortran else reversed(range(len(shape)))
    expected = itemsize
    for k in axes:
        if shape[k] == 1:
            continue
        if strides[k] != expected:
            return False
        expected *= shape[k]
    return True
