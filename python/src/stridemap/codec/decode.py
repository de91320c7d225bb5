"""Decoding either form: the compact form starts with ``89 53 4D 43``, anything else is read as
a fixed record (SPEC §4).

>>> decode(b"\\x89SMX").__class__
Traceback (most recent call last):
  ...
stridemap.Truncated: R1: truncated record: needs 1024 bytes, got 4
"""

from .compact import MAGIC as COMPACT_MAGIC
from .compact import decode_compact
from .descriptor import Descriptor
from .record import BYTES_LIKE, BytesLike, byte_view, decode_fixed, require_buffer


def decode(buf: BytesLike) -> Descriptor:
    """Decode and validate a descriptor in either form; returns a :class:`Descriptor`.
    ``buf`` is bytes-like (a ``TypeError`` otherwise)."""
    require_buffer(buf, f"decode() takes the bytes of a descriptor ({BYTES_LIKE})")
    buf = byte_view(buf)
    if bytes(buf[:4]) == COMPACT_MAGIC:
        return decode_compact(buf)
    return decode_fixed(buf)
