"""The Python sweep for the Rust interop tests (tests/tests/python_interop.rs).

    sweep.py ROOT

Runs ``stridemap.sweep(ROOT)`` once and prints its report as one JSON line {"removed",
"alive", "in_use", "failed"} (lists of folder paths; failures as [path, message]).
"""

import dataclasses
import json
import sys

import stridemap

print(json.dumps(dataclasses.asdict(stridemap.sweep(sys.argv[1]))), flush=True)
