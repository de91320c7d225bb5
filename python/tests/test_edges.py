"""The Python reader on edge cases the vectors do not pin (see edges.py)."""

import pytest
from edges import all_edges

import stridemap


@pytest.mark.parametrize("form,data,expected",
                         [pytest.param(f, d, e, id=f"{f}: {n}") for n, f, d, e in all_edges()])
def test_edge(form, data, expected):
    decoder = stridemap.decode_compact if form == "compact" else stridemap.decode_fixed
    try:
        decoder(data)
        got = "valid"
    except stridemap.DescriptorError as e:
        got = e.rule
    assert got == expected
