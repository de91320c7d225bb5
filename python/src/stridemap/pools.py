"""``stridemap.pools``: zero-copy process pools and joblib's ``"stridemap"`` backend.

The public name of :mod:`stridemap.integrations.pools` (the documentation is there): importing
it imports that module and stands for it, so that both names are one module object.
"""

import sys

from .integrations import pools as _pools

sys.modules[__name__] = _pools
