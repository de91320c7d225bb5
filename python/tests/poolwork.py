"""What the pool tests run inside workers (an importable module, so that spawn, forkserver and
loky workers find it), and the layouts of the test matrix.

Each layout is built twice from the same numbers: ``expected(name)`` with numpy alone, and
``shared(name)`` as the same view of arrays that ``stridemap.share`` made.
"""

import os

import numpy as np

import procmaps
import stridemap
import stridemap.pools  # noqa: F401 - registers SharedArray with loky in joblib's workers


def _base(dtype="<f8", shape=(6, 8)):
    n = int(np.prod(shape))
    return np.arange(1, n + 1).astype(dtype).reshape(shape)


# name -> (base array, function of the base giving the view); share() is applied to the base.
_LAYOUTS = {
    "C": (lambda: _base(), lambda a: a),
    "F": (lambda: np.asfortranarray(_base()), lambda a: a),
    "reversed": (lambda: _base(), lambda a: a[::-1, ::-1]),
    "reversed with step": (lambda: _base(shape=(100,)), lambda a: a[90:10:-7]),
    "transposed": (lambda: _base(), lambda a: a.T),
    "broadcast": (lambda: np.broadcast_to(np.arange(8.0), (1000, 8)), lambda a: a),
    "0-d": (lambda: np.array(3.25), lambda a: a),
    "empty": (lambda: np.zeros((0, 5)), lambda a: a),
    "big-endian": (lambda: _base(">i4"), lambda a: a[1:, ::2]),
    "complex": (lambda: _base("<c16") * (1 - 2j), lambda a: a.T[::-1]),
    "bool": (lambda: _base("<i8") % 3 == 0, lambda a: a[::2]),
}
LAYOUTS = tuple(_LAYOUTS)


def expected(name):
    """The layout made by numpy alone."""
    make, view = _LAYOUTS[name]
    return view(make())


def shared(name):
    """The same layout as a view of a ``stridemap.share``d array."""
    make, view = _LAYOUTS[name]
    return view(stridemap.share(make()))


def mapping_of(array):
    """The name of the mapping (``/proc/self/maps``) that holds ``array``'s first byte, or None
    for an array with no bytes (nothing to map)."""
    if array.nbytes == 0:
        return None
    return procmaps.mapping(array)[1]


def zero_copy(name):
    """Whether a mapping name is one of stridemap's: a memfd or a file in a stridemap folder."""
    return name is not None and ("memfd:" in name or "stridemap-" in name)


def probe(array):
    """What a receiver saw: the bytes, the layout and where the data lives."""
    return {
        "bytes": array.tobytes(),
        "dtype": array.dtype.str,
        "shape": array.shape,
        "strides": array.strides,
        "mapping": mapping_of(array),
        "pid": os.getpid(),
    }


def probe_all(arrays):
    """Probe every array of a task's argument list."""
    return [probe(a) for a in arrays]


def make_all(names):
    """Results: each layout shared by this worker, with its strides as the worker made them."""
    out = []
    for name in names:
        a = shared(name)
        out.append((a, a.strides))
    return out


def strided_sum(array, step):
    """A strided sum of a received array (the benchmark's end-to-end task)."""
    return float(array[::step].sum())


def pid(_=None):
    """The worker's pid."""
    return os.getpid()


def sleep_then_probe(array, seconds):
    """Hold a received array for a while (a task to kill in the middle)."""
    import time

    time.sleep(seconds)
    return probe(array)


def made_here(n):
    """A result the worker makes itself (it has received no array): ``n`` float64s."""
    return np.arange(float(n))


def installed_policy(_=None):
    """The ``stridemap.pools`` policy in force in the worker, or None."""
    return stridemap.pools.installed()


def own_initializer():
    """A pool initializer of the user's own that calls a bare ``install()`` among other things
    (the initializer pickled is this function, not ``install``)."""
    stridemap.pools.install()


def sum_then_make(array, n):
    """Receive an array, then make a result of ``n`` float64s."""
    return float(array.sum()), np.arange(float(n))
