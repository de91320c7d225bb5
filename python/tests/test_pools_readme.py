"""The README's "Python process pools" section: its joblib example is
python/examples/joblib_views.py verbatim, and it runs: every view arrives exactly."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "python", "examples", "joblib_views.py")


def test_the_readme_example_is_the_file():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(EXAMPLE) as f:
        example = f.read()
    assert f"```python\n{example}```" in readme, "README.md's joblib example differs from " \
        "python/examples/joblib_views.py"


def test_the_example_runs_and_every_view_arrives_exactly():
    out = subprocess.run([sys.executable, EXAMPLE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and all(line.endswith(" exact") for line in lines), out.stdout
