"""``stridemap.dask``: the Dask plugin.

The public name of :mod:`stridemap.integrations.dask` (the documentation is there): importing
it imports that module and stands for it, so that both names are one module object.
"""

import sys

from .integrations import dask as _dask

sys.modules[__name__] = _dask
