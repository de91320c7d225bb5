"""What ``test_joblib_loky_parity.py`` runs inside joblib's workers.

It imports neither ``stridemap`` nor ``stridemap.pools``: a worker that unpickles these
functions (by reference) gets the ``"stridemap"`` backend only if stridemap put it there.
"""

import joblib

from procmaps import mapping


def nested_sum(n):
    """A nested ``Parallel(backend="stridemap")`` inside a worker."""
    return sum(joblib.Parallel(n_jobs=2, backend="stridemap")(
        joblib.delayed(abs)(-i) for i in range(n)))


def received(array):
    """How a worker received an array."""
    perms, name = mapping(array)
    return {"writeable": array.flags.writeable, "perms": perms, "mapping": name,
            "dtype": array.dtype.str}


def fill(array, value):
    """Write into a received array and hand it back."""
    array[:] = value
    return array


def first(array):
    """The first element a worker sees."""
    return array.flat[0].item()
