"""The public surface is typed (the package ships ``py.typed``): every function, method and
property of every name in ``stridemap.__all__``, ``stridemap.pools.__all__`` and
``stridemap.dask.__all__`` annotates every parameter and its return, and the annotations
resolve (``typing.get_type_hints``). Also ``stridemap.__version__`` is the version string."""

import importlib
import inspect
import re
import typing

import pytest

import stridemap
import stridemap.pools


def _modules():
    """(the name users import, the module): stridemap.pools and stridemap.dask stand for
    modules of stridemap.integrations."""
    mods = [("stridemap", stridemap), ("stridemap.pools", stridemap.pools)]
    try:
        mods.append(("stridemap.dask", importlib.import_module("stridemap.dask")))
    except ImportError:  # dask and distributed are not installed (the pyversions venvs)
        pass
    return mods


def _callables(label, module):
    """(qualified name, function) for the public functions of ``module``'s ``__all__`` and the
    methods and properties that the public classes define themselves (not inherited from
    numpy, dataclasses or Exception)."""
    for name in module.__all__:
        obj = getattr(module, name)
        where = f"{label}.{name}"
        if inspect.isclass(obj):
            if not (obj.__module__ or "").startswith("stridemap"):
                continue
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    yield f"{where}.{attr}", value.fget
                elif inspect.isfunction(value):
                    yield f"{where}.{attr}", value
        elif callable(obj):
            yield where, obj


CALLABLES = sorted({q: f for label, m in _modules() for q, f in _callables(label, m)}.items())


def test_there_is_a_public_surface_to_check():
    names = [q for q, _ in CALLABLES]
    for want in ("stridemap.open", "stridemap.share", "stridemap.pools.install",
                 "stridemap.SharedArray.freeze", "stridemap.NoSpace.make"):
        assert want in names


@pytest.mark.parametrize("qualname, fn", CALLABLES, ids=[q for q, _ in CALLABLES])
def test_every_parameter_and_the_return_are_annotated(qualname, fn):
    sig = inspect.signature(fn)
    missing = [p.name for i, p in enumerate(sig.parameters.values())
               if p.annotation is inspect.Parameter.empty
               and not (i == 0 and p.name in ("self", "cls"))]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    assert not missing, f"{qualname}: not annotated: {', '.join(missing)}"
    typing.get_type_hints(fn)  # every annotation resolves


def test_the_version_is_a_version_string():
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+([.-]?(a|b|rc|dev|post)[0-9]+)*",
                        stridemap.__version__)
