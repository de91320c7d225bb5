"""``python -m stridemap.bench``: the pools benchmark (:mod:`stridemap.bench.pools`)."""

from .pools import main

main()
