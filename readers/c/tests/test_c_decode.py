"""The C reader decodes every vector exactly as its JSON says (SPEC §10), and agrees with the
Python reader on thousands of mutated and random inputs the vectors do not cover."""

import numpy as np
import pytest
from conftest import run_lines
from edges import all_edges, fix_crc, set_fields
from layouts import random_layout
from vectors import KNOWN_WRONG, load_vectors

import stridemap
from stridemap import decode_compact, decode_fixed, encode, encode_compact


def python_json(form, data):
    try:
        d = (decode_compact if form == "compact" else decode_fixed)(data)
        return {"valid": True, **d.as_json()}
    except stridemap.DescriptorError as e:
        return {"valid": False, "rule": e.rule}


def c_json(c_build, inputs):
    """C results for [(form, bytes)]."""
    return run_lines(c_build / "smdecode", [f"{form} {data.hex()}" for form, data in inputs])


def test_every_vector(c_build):
    vectors = load_vectors()
    results = c_json(c_build, [(spec["form"], data) for _, spec, data in vectors])
    wrong = []
    for (name, spec, _), got in zip(vectors, results):
        keys = ("valid", "fields", "derived") if spec["valid"] else ("valid", "rule")
        if got != {k: spec[k] for k in keys}:
            wrong.append(name)
    assert sorted(wrong) == sorted(KNOWN_WRONG)  # each reported; see vectors.py


# Fixed-record fields worth setting to extreme values: (offset, struct format).
FIELDS = [(8, "<H"), (10, "<H"), (12, "<I"), (16, "B"), (17, "B"), (18, "B"), (20, "<I"),
          (24, "<H"), (32, "<Q"), (40, "<Q"), (48, "<Q"), (56, "<Q"), (80, "<Q")] + \
         [(128 + 8 * k, "<Q") for k in range(4)] + [(384 + 8 * k, "<q") for k in range(4)] + \
         [(128 + 8 * 31, "<Q"), (640, "B"), (641, "B"), (642, "B"), (700, "B"), (1019, "B")]
EXTREMES = [0, 1, 2, 3, 7, 8, 0x20, 0x7F, 0x80, 0xFF, 2**15, 2**16 - 1, 2**31 - 1, 2**31,
            2**32 - 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def mutated_fixed(rng, base):
    rec = bytearray(base)
    for _ in range(int(rng.integers(1, 4))):
        if rng.integers(2):
            at, fmt = FIELDS[rng.integers(len(FIELDS))]
            value = EXTREMES[rng.integers(len(EXTREMES))] + int(rng.integers(-1, 2))
            set_fields(rec, [((at, fmt), value)])
        else:
            rec[rng.integers(1024)] = int(rng.integers(256))
    return bytes(fix_crc(rec) if rng.integers(8) else rec)


def mutated_compact(rng, base):
    blob = bytearray(base)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(4)
        at = int(rng.integers(4, len(blob) + 1))
        if op == 0 and at < len(blob):
            blob[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0x81, 0xFF, rng.integers(256)]))
        elif op == 1:
            blob[at:at] = bytes([int(rng.choice([0x80, 0xFF, 0x00, 0x01]))])
        elif op == 2:
            del blob[at:at + int(rng.integers(1, 3))]
        else:
            blob = blob[:at]
    return bytes(blob)


def differential_inputs():
    rng = np.random.default_rng(5)
    vectors = load_vectors()
    fixed = [d for _, s, d in vectors if s["form"] == "fixed" and len(d) == 1024]
    compact = [d for _, s, d in vectors if s["form"] == "compact"]
    inputs = []
    for _ in range(3000):
        inputs.append(("fixed", mutated_fixed(rng, fixed[rng.integers(len(fixed))])))
    for _ in range(50):
        inputs.append(("fixed", fixed[rng.integers(len(fixed))][:rng.integers(1024)]))
    for _ in range(2000):
        inputs.append(("compact", mutated_compact(rng, compact[rng.integers(len(compact))])))
    for i in range(300):
        d = random_layout(rng, f"/dev/shm/x/{i}.bin")
        inputs += [("fixed", encode(d)), ("compact", encode_compact(d))]
    return inputs


@pytest.fixture(scope="module")
def differential(c_build):
    inputs = differential_inputs()
    return inputs, c_json(c_build, inputs)


def test_edges(c_build):
    edges = all_edges()
    results = c_json(c_build, [(form, data) for _, form, data, _ in edges])
    got = {(form, name): r.get("rule", "valid") for (name, form, *_), r in zip(edges, results)}
    assert got == {(form, name): expected for name, form, _, expected in edges}


def test_c_and_python_agree_on_every_input(differential):
    inputs, results = differential
    disagree = [(form, data.hex(), got, python_json(form, data))
                for (form, data), got in zip(inputs, results) if got != python_json(form, data)]
    assert not disagree, disagree[:3]


def test_the_differential_inputs_reach_every_rule(differential):
    _, results = differential
    rules = {r["rule"] for r in results if not r["valid"]}
    assert rules == {f"R{i}" for i in range(1, 23)} | {f"C{i}" for i in range(1, 5)}
    assert sum(r["valid"] for r in results) > 600
