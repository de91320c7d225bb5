"""stridemap: share numpy arrays between processes through a validated descriptor, zero copies.

Written from SPEC.md alone, numpy its only dependency. A reader: decode and validate the fixed
record and the compact form, open a descriptor as a numpy view of the mapped file. A producer:
share any array through a sealed memfd or a named segment (``share``, ``empty``), describe and
export any view of a shared, opened or memory-mapped array without copying it, clean up after
dead producers (``sweep``). And pass descriptors and fds over Unix sockets.

>>> import os, tempfile, numpy as np, stridemap
>>> folder = tempfile.mkdtemp()
>>> m = np.memmap(os.path.join(folder, "m.bin"), dtype="<i4", mode="w+", shape=(4, 5))
>>> m[:] = np.arange(20).reshape(4, 5)
>>> rec = stridemap.describe(m.T[::-1])
>>> view = stridemap.open(rec, allowed_roots=[folder])
>>> bool((view == m.T[::-1]).all()), view.flags.writeable
(True, False)
"""

from .codec.compact import decode_compact, encode_compact
from .codec.decode import decode
from .codec.descriptor import Descriptor
from .codec.errors import *  # noqa: F401,F403 - every rule's exception class
from .codec.errors import __all__ as _error_names
from .codec import errors
from .codec.record import crc32c, decode_fixed, encode
from .reader import open
from .segments import huge
from .segments.backing import Segment, segment_of
from .segments.describe import describe
from .segments.export import Export, export
from .segments.lifetime import producer_folders, producer_root, reap
from .segments.pack import PackedDict, PackedList, share_many
from .segments.share import SharedArray, empty, share
from .segments.sweep import SweepReport, sweep
from .transport.fdpass import recv, send

# The package's version (pyproject.toml reads it from here: keep it a plain string literal).
__version__ = "0.1.0"

__all__ = [
    "Descriptor",
    "Export",
    "Segment",
    "SharedArray",
    "SweepReport",
    "empty",
    "export",
    "producer_folders",
    "producer_root",
    "reap",
    "segment_of",
    "share",
    "share_many",
    "PackedDict",
    "PackedList",
    "sweep",
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
