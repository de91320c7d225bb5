"""What a decoder remembers of the valid messages it decoded (records, segment headers): each
by its bytes, and by its bytes but a span no rule reads (a record's identity, a header's
segment id and generation) together with the checksum that follows them. Decoding is a pure
function of the bytes, so a message seen before needs no checks; one that differs from a
message seen before only in that span breaks a rule only if its checksum is wrong, which
:func:`.crc.patch` checks with a lookup per changed byte. What the span's new bytes make of
the remembered value is the caller's (only it knows what they mean).

>>> from stridemap.codec.crc import crc32c
>>> signed = lambda m: m + crc32c(m).to_bytes(4, "little")
>>> memo = NearMemo(span=(4, 8), crc_at=12)
>>> memo.put(signed(b"head1234tail"), "value")
>>> memo.get(signed(b"head1234tail")), memo.near(signed(b"head5678tail"))
('value', 'value')
>>> bad = signed(b"head5678tail")[:-1] + b"?"
>>> memo.near(bad), memo.near(signed(b"HEAD5678tail"))  # a wrong checksum; another byte
(None, None)
"""

from . import crc as _crc


class NearMemo:
    """Valid messages (bytes: ``crc_at`` bytes, then their CRC-32C, little-endian) and what
    they decoded to; at most ``size`` (then it starts again). Thread-safe as dict operations
    are: a lookup that finds it cleared meanwhile finds nothing."""

    __slots__ = ("_exact", "_near", "_at", "_end", "_crc_at", "_size")

    def __init__(self, span, crc_at, size=256):
        self._exact = {}
        self._near = {}  # the bytes but the span and checksum -> the whole message
        self._at, self._end = span
        self._crc_at = crc_at
        self._size = size

    def _but_span(self, msg):
        return msg[:self._at] + msg[self._end:self._crc_at]

    def get(self, msg):
        """What ``msg`` decoded to, if it was decoded before; else None."""
        return self._exact.get(msg)

    def near(self, msg):
        """What a message decoded to that differs from ``msg`` only in the span and checksum,
        when ``msg``'s checksum is the one its span's bytes give; else None."""
        known = self._near.get(self._but_span(msg))
        value = self._exact.get(known) if known is not None else None
        if value is None:
            return None
        at, end, crc_at = self._at, self._end, self._crc_at
        crc = _crc.patch(int.from_bytes(known[crc_at:crc_at + 4], "little"), crc_at, at,
                         known[at:end], msg[at:end])
        return value if crc == int.from_bytes(msg[crc_at:crc_at + 4], "little") else None

    def put(self, msg, value):
        """Remember the valid message ``msg`` (bytes) as ``value``."""
        if len(self._exact) >= self._size:
            self._exact.clear()
            self._near.clear()
        self._exact[msg] = value
        self._near[self._but_span(msg)] = msg

    def clear(self):
        """Forget everything."""
        self._exact.clear()
        self._near.clear()
