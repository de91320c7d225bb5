"""An np.memmap whose file was replaced at its path (written to a temporary file and renamed
over it) or deleted: describe() refuses to name the path of another file (a consumer got the
new file's values with no error), and the pools send the bytes this process maps as a copy."""

import multiprocessing
import os

import numpy as np
import pytest

import stridemap
import stridemap.pools


def total(a):
    return float(np.asarray(a).sum())


def replace_at_path(path, value):
    t = np.memmap(path + ".tmp", "<f8", "w+", shape=(256, 256))
    t[:] = value
    t.flush()
    del t
    os.rename(path + ".tmp", path)


@pytest.fixture(params=["/dev/shm", None])
def folder(request, tmp_path):
    if request.param is None:
        yield str(tmp_path)
        return
    import tempfile
    import shutil
    d = tempfile.mkdtemp(prefix="stridemap-test-memmap-", dir=request.param)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_describe_refuses_a_path_that_names_another_file_now(folder):
    p = os.path.join(folder, "m.bin")
    m = np.memmap(p, "<f8", "w+", shape=(256, 256))
    m[:] = 1
    m.flush()
    stridemap.describe(m)  # fine while it is the same file
    replace_at_path(p, 2)
    with pytest.raises(stridemap.NotShareable, match="no longer the file this memmap maps"):
        stridemap.describe(m[::-1])


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_pools_send_what_this_process_maps(folder, how):
    p = os.path.join(folder, "m.bin")
    m = np.memmap(p, "<f8", "w+", shape=(256, 256))
    m[:] = 1
    m.flush()
    if how == "replaced":
        replace_at_path(p, 2)
    else:
        os.unlink(p)
    stridemap.pools.install(numpy=True)
    try:
        with multiprocessing.get_context("forkserver").Pool(1) as pool:
            assert pool.apply(total, (m[::-1],)) == float(m.size)  # the 1.0s, not the 2.0s
    finally:
        stridemap.pools.uninstall()
