"""What a user installs: the sdist and the wheel built from it, as pip builds them (setuptools'
PEP 517 backend, here without isolation: the test venvs pin a setuptools new enough).

The sdist holds the package and no tests (they need the repository: MANIFEST.in); the wheel
built from the sdist holds every module, ``py.typed``, the SPDX license expression, the
version ``stridemap.__version__`` says, and extras whose floors are the versions the tests run
with (python/requirements-*.txt)."""

import email.parser
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import stridemap

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JUNK = shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist", ".pytest_cache")


def _build_floor():
    """The setuptools floor of pyproject's build-system requires."""
    with open(os.path.join(PYTHON_DIR, "pyproject.toml")) as f:
        m = re.search(r'^requires = \["setuptools>=([0-9]+)"\]', f.read(), re.M)
    assert m, "pyproject.toml's build-system requires no setuptools>=N"
    return int(m[1])


def _backend(what, source, out):
    """build_sdist or build_wheel of setuptools.build_meta in ``source``; the file it made."""
    code = (f"import os; from setuptools import build_meta as b; os.chdir({source!r}); "
            f"print(b.{what}({out!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return os.path.join(out, r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist names, wheel names, wheel METADATA) of python/ as it is in this work tree."""
    import setuptools

    have = int(setuptools.__version__.split(".")[0])
    assert have >= _build_floor(), (
        f"setuptools {setuptools.__version__} cannot build this pyproject (it needs "
        f">={_build_floor()}): install the pinned python/requirements-*.txt")
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(PYTHON_DIR, source, ignore=JUNK)
    sdist = _backend("build_sdist", str(source), str(tmp))
    with tarfile.open(sdist) as t:
        sdist_names = [m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name]
        t.extractall(tmp / "unpacked", filter="data")
    unpacked = glob.glob(str(tmp / "unpacked" / "*"))[0]
    wheel = _backend("build_wheel", unpacked, str(tmp))  # from the sdist, as pip does
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    return sdist_names, names, email.parser.Parser().parsestr(meta)


def test_the_sdist_holds_the_package_and_no_tests(built):
    sdist, _, _ = built
    assert "pyproject.toml" in sdist and "README.md" in sdist
    assert "src/stridemap/__init__.py" in sdist and "src/stridemap/py.typed" in sdist
    assert not [n for n in sdist if n.startswith("tests/")], "tests/ is in the sdist"


def test_the_wheel_holds_every_module_and_py_typed(built):
    _, wheel, _ = built
    package = os.path.join(PYTHON_DIR, "src")
    want = {os.path.relpath(os.path.join(d, f), package)
            for d, _, files in os.walk(os.path.join(package, "stridemap"))
            for f in files if f.endswith(".py") or f == "py.typed"}
    assert "stridemap/py.typed" in want
    assert want <= set(wheel), sorted(want - set(wheel))
    assert not [n for n in wheel if n.startswith("tests/") or "conftest" in n]


def test_the_metadata_has_the_version_and_an_spdx_license(built):
    _, _, meta = built
    assert meta["Version"] == stridemap.__version__
    assert meta["License-Expression"] == "MIT OR Apache-2.0"
    assert meta["License"] is None
    assert "Read and write stridemap descriptors" not in meta["Summary"]


def _tested_floor(name):
    """The lowest version of ``name`` pinned in python/requirements-*.txt."""
    pins = []
    for path in glob.glob(os.path.join(PYTHON_DIR, "requirements-*.txt")):
        with open(path) as f:
            pins += re.findall(rf"^{re.escape(name)}==([0-9][0-9.]*)$", f.read(), re.M)
    assert pins, f"{name} is pinned in no requirements file"
    return min(pins, key=lambda v: tuple(int(x) for x in v.split(".")))


@pytest.mark.parametrize("extra, names", [("joblib", ["joblib"]),
                                           ("dask", ["dask", "distributed"])])
def test_the_extras_require_what_the_tests_run_with(built, extra, names):
    _, _, meta = built
    assert extra in meta.get_all("Provides-Extra", [])
    requires = meta.get_all("Requires-Dist", [])
    for name in names:
        want = f'{name}>={_tested_floor(name)}; extra == "{extra}"'
        assert want in requires, (want, requires)
