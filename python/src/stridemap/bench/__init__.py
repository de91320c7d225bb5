"""The benchmarks: ``python -m stridemap.bench`` (pools against pickle, joblib and
``multiprocessing.shared_memory``: :mod:`.pools`) and ``python -m stridemap.bench.dask``
(Dask: :mod:`.dask`).
"""
