"""stridemap.pools on the default paths: {start method} x {pool} x {source} x {argument, result}.

``STRIDEMAP_TEMP_FOLDER`` is unset, so named segments live in /dev/shm, which is a tmpfs: an fd
of a named file there answers ``F_GET_SEALS`` (it reports ``F_SEAL_SEAL``) like a memfd would.
The sources: ``stridemap.share`` with kind "file" and "memfd", an ``np.memmap`` of a file in
/dev/shm and one on disk. Each case checks the values the other side saw and that it saw them
in place (the mapping that holds them is the segment or the memmap's file). One pool per
(start method, pool) serves every case of that pool.
"""

import os
import shutil
import tempfile

import numpy as np
import pytest

import pooledges
import poolwork
from producer_util import settled
import stridemap
import stridemap.pools
from pooledges import METHODS, POOLS, SOURCES


@pytest.fixture(scope="module")
def default_root():
    """No STRIDEMAP_TEMP_FOLDER for the module's pools, a folder in /dev/shm and one on disk
    for memmap files (both removed at the end), and install(numpy=True) for memmaps."""
    mp = pytest.MonkeyPatch()
    mp.delenv("STRIDEMAP_TEMP_FOLDER", raising=False)
    before = stridemap.pools.installed()
    pooledges.install_numpy()
    shm = tempfile.mkdtemp(prefix="pooledges-", dir="/dev/shm")
    disk = tempfile.mkdtemp(prefix="pooledges-")
    try:
        yield {"memmap in /dev/shm": shm, "memmap on disk": disk}
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
        if before is None:
            stridemap.pools.uninstall()
        else:
            stridemap.pools.install(numpy=before.numpy, max_nbytes=before.max_nbytes)
        mp.undo()


_runners = {}


@pytest.fixture(scope="module")
def runners(default_root):
    try:
        yield _runners
    finally:
        for r in _runners.values():
            r.close()
        _runners.clear()


def _run(runners, kind, method, fn, *args):
    """``fn(*args)`` in the module's pool of ``kind``; a pool that failed is not reused."""
    if (kind, method) not in runners:
        runners[kind, method] = pooledges.Runner(kind, method)
    try:
        return runners[kind, method].run(fn, *args)
    except BaseException:
        runners.pop((kind, method)).close()
        raise


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("method", METHODS)
def test_an_argument_goes_in_place(default_root, runners, method, kind, source):
    folder = default_root.get(source)
    a = pooledges.make(source, pooledges.values(), folder)
    view = a[5:-7:2]
    total, first, mapping = _run(runners, kind, method, pooledges.seen, view)
    assert total == view.sum() and first == view[::-1][:3].tolist()
    assert mapping is not None and pooledges.where(source, a, folder) in mapping, mapping


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("method", METHODS)
def test_a_received_array_handed_back_is_the_same_file(default_root, runners, method, kind,
                                                       source):
    """The worker hands on a view of the fd it received: it says the same kind (a named file
    stays a named file), and the parent maps the file it sent."""
    folder = default_root.get(source)
    a = pooledges.make(source, pooledges.values(), folder)
    got = _run(runners, kind, method, pooledges.handed_back, a[3:])
    assert np.array_equal(got, a[3:][::-2])
    mapping = poolwork.mapping_of(got)
    assert mapping is not None and pooledges.where(source, a, folder) in mapping, mapping


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("method", METHODS)
def test_a_result_comes_back_in_place(default_root, runners, method, kind, source):
    folder = default_root.get(source)
    got = _run(runners, kind, method, pooledges.made, source, 3000, 7, folder)
    want = pooledges.values(3000, 7)
    assert np.array_equal(got, want)
    mapping = poolwork.mapping_of(got)
    if source == "share file":  # the worker's own pool folder in /dev/shm
        assert mapping is not None and mapping.startswith("/dev/shm/stridemap-"), mapping
    elif source == "share memfd":
        assert mapping is not None and "memfd:" in mapping, mapping
    else:
        assert mapping is not None and mapping.startswith(os.path.realpath(folder)), mapping


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("method", METHODS)
def test_workers_remove_their_folders_in_dev_shm_when_they_exit(default_root, method, kind):
    """A fork or forkserver worker ends with os._exit (no atexit): its folder must go all the
    same, not wait for a later sweep."""
    runner = pooledges.Runner(kind, method)
    try:
        folders = {runner.run(pooledges.folder_made) for _ in range(4)}
    finally:
        runner.close()
    assert folders and all(f.startswith("/dev/shm/stridemap-") for f in folders), folders
    left = settled(lambda: [f for f in folders if os.path.exists(f)], lambda x: not x, 10)
    assert left == []
