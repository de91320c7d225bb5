"""The conformance vectors of SPEC §10, shared by the Python and C tests."""

import json
import pathlib

import pytest

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "tests" / "vectors"

#: Vectors whose JSON disagrees with SPEC.md; each is reported, and strict: once the vector is
#: fixed the test passes and must be taken off this list.
KNOWN_WRONG: dict[str, str] = {}


def load_vectors():
    """Every vector as (name, its JSON object, its input bytes), sorted by name."""
    out = []
    for j in sorted(VECTORS.glob("*.json")):
        out.append((j.stem, json.loads(j.read_text()), j.with_suffix(".bin").read_bytes()))
    assert len(out) >= 60, f"expected the vectors in {VECTORS}"
    return out


def vector_params(only_invalid=False):
    """pytest params (spec, data) over the vectors, the known-wrong ones marked xfail(strict)."""
    params = []
    for name, spec, data in load_vectors():
        if only_invalid and spec["valid"]:
            continue
        marks = [pytest.mark.xfail(reason=KNOWN_WRONG[name], strict=True)] \
            if name in KNOWN_WRONG else []
        params.append(pytest.param(spec, data, id=name, marks=marks))
    return params
