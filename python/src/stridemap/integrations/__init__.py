"""The integrations, each public under its own name: process pools (:mod:`stridemap.pools`,
here :mod:`.pools`), joblib's ``"stridemap"`` backend (:mod:`.joblib_backend`) and the Dask
plugin (:mod:`stridemap.dask`, here :mod:`.dask`).
"""
