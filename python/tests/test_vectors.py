"""Every conformance vector (SPEC §10) decodes to exactly its JSON, or fails with its rule."""

import pytest
from vectors import load_vectors, vector_params

import stridemap
from stridemap import decode_compact, decode_fixed


def decode_as_json(form, data):
    """The vector-shaped result of decoding ``data`` as ``form``."""
    decoder = decode_compact if form == "compact" else decode_fixed
    try:
        return {"valid": True, **decoder(data).as_json()}
    except stridemap.DescriptorError as e:
        return {"valid": False, "rule": e.rule}


def expected(spec):
    keys = ("valid", "fields", "derived") if spec["valid"] else ("valid", "rule")
    return {k: spec[k] for k in keys}


@pytest.mark.parametrize("spec,data", vector_params())
def test_vector(spec, data):
    assert decode_as_json(spec["form"], data) == expected(spec)


@pytest.mark.parametrize("spec,data", vector_params(only_invalid=True))
def test_vector_messages(spec, data):
    """The messages are informational, but this reader's happen to match the generator's."""
    decoder = decode_compact if spec["form"] == "compact" else decode_fixed
    with pytest.raises(stridemap.DescriptorError) as e:
        decoder(data)
    assert str(e.value) == spec["message"]


def test_decode_dispatches_on_the_magic():
    for name, spec, data in load_vectors():
        if name == "compact_invalid_c2_magic":  # no compact magic: read as a fixed record
            with pytest.raises(stridemap.Truncated):
                stridemap.decode(data)
        elif spec["valid"]:
            assert stridemap.decode(data) == (
                decode_compact if spec["form"] == "compact" else decode_fixed)(data)


@pytest.mark.parametrize("shift", [1, 3, 7])
def test_fixed_record_inside_a_larger_buffer(shift):
    """A record at any byte offset of a larger buffer, with bytes after it (SPEC §2, R1)."""
    for _, spec, data in load_vectors():
        if spec["form"] == "fixed" and len(data) == 1024:
            big = bytes(shift) + data + b"\xff" * 5
            assert decode_as_json("fixed", memoryview(big)[shift:]) == \
                decode_as_json("fixed", data)


def test_encode_reproduces_every_valid_1_0_record():
    for _, spec, data in load_vectors():
        if spec["valid"] and spec["form"] == "fixed" and spec["fields"]["version"] == [1, 0]:
            assert stridemap.encode(decode_fixed(data)) == data


def test_encode_compact_reproduces_the_compact_vectors():
    for _, spec, data in load_vectors():
        if spec["valid"] and spec["form"] == "compact" and data[5] == 0:
            assert stridemap.encode_compact(decode_compact(data)) == data


def test_every_rule_has_a_vector_and_its_own_class():
    rules = {spec["rule"] for _, spec, _ in load_vectors() if not spec["valid"]}
    wanted = {f"R{i}" for i in range(1, 23)} | {f"C{i}" for i in range(1, 5)}
    assert rules == wanted
    classes = [c for c in vars(stridemap.errors).values()
               if isinstance(c, type) and issubclass(c, stridemap.DescriptorError) and c.rule]
    assert sorted(c.rule for c in classes) == sorted(wanted)
    assert all(issubclass(c, ValueError) for c in classes)
    opens = [c for c in vars(stridemap.errors).values()
             if isinstance(c, type) and issubclass(c, stridemap.errors.OpenError) and c.rule]
    assert sorted(c.rule for c in opens) == sorted(f"O{i}" for i in range(1, 13))
