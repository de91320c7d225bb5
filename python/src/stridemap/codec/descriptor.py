"""The decoded descriptor: an immutable value with SPEC.md's field names and derived facts.

>>> from stridemap import Descriptor, decode, encode
>>> d = Descriptor(dtype="<f8", shape=(3, 4), strides=(32, 8), buffer_len=96, file_len=96,
...                path="/dev/shm/x/array.bin")
>>> decode(encode(d)) == d
True
>>> d.ndim, d.nbytes, d.span, d.c_contiguous
(2, 96, (0, 96), True)
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from . import rules

#: A mode of a descriptor or of an open: read-only, shared writes, private copy-on-write.
Mode = Literal["r", "r+", "c"]

ORDERS = ("C", "F")
MODES = ("r", "r+", "c")
SOURCES = ("path", "fd")


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    """A stridemap descriptor (SPEC §1). One returned by ``decode`` is valid; one you build is
    checked when you ``encode`` it.

    ``segment_id`` is 16 raw bytes; everything else has the type of the vectors' JSON ``fields``.
    """

    dtype: str
    shape: tuple
    strides: tuple
    buffer_len: int
    file_len: int
    path: str = ""
    source: str = "path"
    mode: str = "r"
    order: str = "C"
    offset: int = 0
    buffer_offset: int = 0
    device: int = 0
    inode: int = 0
    generation: int = 0
    segment_id: bytes = field(default=bytes(16))
    version: tuple = (1, 0)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "strides", tuple(self.strides))
        object.__setattr__(self, "version", tuple(self.version))
        object.__setattr__(self, "segment_id", bytes(self.segment_id))

    def with_generation(self, generation: int) -> "Descriptor":
        """This descriptor naming ``generation`` of its segment (a segment recycled in place).

        >>> Descriptor(dtype="|u1", shape=(), strides=(), buffer_len=1, file_len=1,
        ...            generation=1).with_generation(2).generation
        2
        """
        other = object.__new__(Descriptor)
        other.__dict__.update(self.__dict__)
        other.__dict__["generation"] = generation
        return other

    def with_identity(self, device: int, inode: int, generation: int,
                      segment_id: bytes) -> "Descriptor":
        """This descriptor's view of another file or segment of the same layout: ``device``,
        ``inode``, ``generation`` and ``segment_id`` in place of its own (no rule of SPEC §3
        reads them).

        >>> d = Descriptor(dtype="|u1", shape=(), strides=(), buffer_len=1, file_len=1)
        >>> e = d.with_identity(1, 2, 3, bytes(range(16)))
        >>> (e.device, e.inode, e.generation, e.segment_id[15], e.shape)
        (1, 2, 3, 15, ())
        >>> type(d.with_identity(1, 2, 3, bytearray(16)).segment_id)
        <class 'bytes'>
        """
        other = object.__new__(Descriptor)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(device=device, inode=inode, generation=generation,
                              segment_id=bytes(segment_id))  # as __post_init__ makes it
        return other

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per element, from the typestr."""
        return int(self.dtype[2:])

    @property
    def len(self) -> int:
        """The number of elements (1 for a 0-d array)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        """``len * itemsize``."""
        return self.len * self.itemsize

    @property
    def span(self) -> tuple[int, int]:
        """The bytes ``(lo, hi)`` of the buffer the array touches (SPEC §1.2)."""
        return rules.span(self.itemsize, self.shape, self.strides, self.offset)

    @property
    def c_contiguous(self) -> bool:
        """numpy's relaxed C-contiguity (SPEC §1.3)."""
        return rules.is_contiguous(self.itemsize, self.shape, self.strides, fortran=False)

    @property
    def f_contiguous(self) -> bool:
        """numpy's relaxed F-contiguity (SPEC §1.3)."""
        return rules.is_contiguous(self.itemsize, self.shape, self.strides, fortran=True)

    def as_json(self) -> dict[str, Any]:
        """The ``fields`` and ``derived`` objects of a valid vector's JSON (SPEC §10)."""
        return {
            "fields": {
                "version": list(self.version),
                "dtype": self.dtype,
                "order": self.order,
                "mode": self.mode,
                "source": self.source,
                "path": self.path,
                "ndim": self.ndim,
                "shape": list(self.shape),
                "strides": list(self.strides),
                "offset": self.offset,
                "buffer_offset": self.buffer_offset,
                "buffer_len": self.buffer_len,
                "file_len": self.file_len,
                "device": self.device,
                "inode": self.inode,
                "generation": self.generation,
                "segment_id": self.segment_id.hex(),
            },
            "derived": {
                "itemsize": self.itemsize,
                "len": self.len,
                "nbytes": self.nbytes,
                "span": list(self.span),
                "c_contiguous": self.c_contiguous,
                "f_contiguous": self.f_contiguous,
            },
        }
