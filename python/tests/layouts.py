"""Random valid layouts over a file, and the reference view of them built with as_strided.

Shared by the Python tests and the C reader's tests (which import it from here).
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from stridemap import Descriptor
from stridemap.codec.rules import span

DTYPES = (
    "|b1", "|i1", "|u1", "<i2", ">i2", "<u4", ">i4", "<i8", ">u8", "<f2", ">f4", "<f8",
    ">f8", "<f16", "<c8", ">c16", "<c32", "|V3", "|V12",
)


def random_layout(rng, path):
    """A valid Descriptor of a random array (any dtype, ndim 0-4, shapes with 0 and 1, strides
    of any sign including 0, unaligned offsets) over a file at ``path`` of ``desc.file_len``
    bytes."""
    dtype = DTYPES[rng.integers(len(DTYPES))]
    itemsize = int(dtype[2:])
    ndim = int(rng.integers(0, 5))
    shape = [int(rng.choice([0, 1, 1, 2, 3, 4, 5, 7])) for _ in range(ndim)]
    strides = []
    for _ in range(ndim):
        kind = rng.integers(4)
        if kind == 0:
            strides.append(0)
        elif kind == 1:
            strides.append(int(rng.integers(-40, 41)))
        else:
            strides.append(int(rng.choice([-1, 1]) * itemsize * rng.integers(1, 8)))
    lo, hi = span(itemsize, shape, strides, 0)
    before, after = (int(x) for x in rng.integers(0, 20, size=2))
    buffer_len = max([hi - lo + before + after, *(abs(s) for s in strides)])
    buffer_offset = int(rng.choice([0, rng.integers(0, 10000)]))
    file_len = buffer_offset + buffer_len + int(rng.integers(0, 50))
    desc = Descriptor(
        dtype=dtype, shape=shape, strides=strides, offset=before - lo,
        buffer_offset=buffer_offset, buffer_len=buffer_len, file_len=file_len, path=path,
        order=str(rng.choice(["C", "F"])), mode=str(rng.choice(["r", "r+", "c"])),
    )
    return desc


def write_random_file(rng, path, length):
    """Create ``path`` holding ``length`` random bytes."""
    with open(path, "wb") as f:
        f.write(rng.bytes(length))


def reference_view(path, desc):
    """The array ``desc`` describes, built independently: the file read with numpy and the layout
    applied with ``as_strided`` at element 0's file position (SPEC §1.1)."""
    raw = np.fromfile(path, dtype=np.uint8)
    first = np.frombuffer(raw, dtype=np.dtype(desc.dtype), count=0,
                          offset=desc.buffer_offset + desc.offset)
    return as_strided(first, shape=desc.shape, strides=desc.strides, writeable=False)


def same_array(a, b):
    """Same dtype, shape and element bytes (NaN-proof, unlike ==)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
