"""Shared by the tests: the pool matrix's counts, printed at the end of the run."""


def pytest_terminal_summary(terminalreporter):
    import sys

    pw = sys.modules.get("poolwork")
    matrix = getattr(pw, "MATRIX", None)
    if not matrix:
        return
    w = terminalreporter.write_line
    total = matrix["passed"] + len(matrix["failed"]) + len(matrix["not run"])
    w(f"stridemap.pools matrix: {total} cases, {matrix['passed']} passed (byte for byte and "
      f"zero-copy), {len(matrix['failed'])} failed, {len(matrix['not run'])} not run; "
      f"{len(matrix['vacuous'])} of the passed have no bytes (empty arrays: zero-copy is vacuous)")
    for line in matrix["failed"]:
        w(f"  FAILED {line}")
    for line in matrix["not run"][:1]:
        w(f"  not run: {line} (and {len(matrix['not run']) - 1} more of that pool)")
