"""stridemap: share numpy arrays between processes through a validated descriptor, zero copies.

A reader of the stridemap descriptor written from SPEC.md alone: decode and validate the fixed
record and the compact form, open a descriptor as a numpy view of the mapped file, describe a
view of an ``np.memmap`` (Python as a producer), and pass descriptors and fds over Unix sockets.

>>> import os, tempfile, numpy as np, stridemap
>>> folder = tempfile.mkdtemp()
>>> m = np.memmap(os.path.join(folder, "m.bin"), dtype="<i4", mode="w+", shape=(4, 5))
>>> m[:] = np.arange(20).reshape(4, 5)
>>> rec = stridemap.describe(m.T[::-1])
>>> view = stridemap.open(rec, allowed_roots=[folder])
>>> bool((view == m.T[::-1]).all()), view.flags.writeable
(True, False)
"""

from .codec import decode
from .compact import decode_compact, encode_compact
from .describe import describe
from .descriptor import Descriptor
from .errors import *  # noqa: F401,F403 - every rule's exception class
from .errors import __all__ as _error_names
from .fdpass import recv, send
from .open import open
from .record import crc32c, decode_fixed, encode

__all__ = [
    "Descriptor",
    "crc32c",
    "decode",
    "decode_compact",
    "decode_fixed",
    "describe",
    "encode",
    "encode_compact",
    "open",
    "recv",
    "send",
    *_error_names,
]
