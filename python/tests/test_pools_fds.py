"""stridemap.pools with multiprocessing: the policy (what is shared, what is pickled and why), the
fds a receiver is left with, and descriptors a pool refuses.
"""

import concurrent.futures
import logging
import multiprocessing
import os
import time
from multiprocessing import reduction

import numpy as np
import pytest

import poolwork
from producer_util import settled
import stridemap
import stridemap.pools
from stridemap.transport import handoff as _handoff
from stridemap.transport import mapcache


@pytest.fixture(scope="module")
def pool():
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        yield ex


@pytest.fixture
def policy():
    """Restore the policy a test changed."""
    before = stridemap.pools.installed()
    yield
    if before is None:
        stridemap.pools.uninstall()
    else:
        stridemap.pools.install(numpy=before.numpy, max_nbytes=before.max_nbytes)


def fd_report(array):
    """In a worker: the fds open on the file that backs ``array`` (the mapping's inode in
    ``/proc/self/maps``) and whether each is inheritable."""
    addr = array.__array_interface__["data"][0]
    inode = None
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                inode = int(fields[4])
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_ino == inode and "memfd:" in os.readlink(f"/proc/self/fd/{fd}"):
            found.append(os.get_inheritable(fd))
    return found


def memfd_count(_=None):
    """In a worker: how many of its fds are stridemap memfds."""
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            n += "memfd:stridemap" in os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return n


def test_received_fds_are_close_on_exec_and_closed_once_mapped(pool, policy):
    stridemap.pools.install()
    a = stridemap.share(np.arange(10_000.0))
    # While the worker holds the array: only the one stridemap.open keeps to export views again
    # (the mapping keeps none of its own); the received fd itself is closed. Close-on-exec.
    found = pool.submit(fd_report, a[::-3]).result()
    assert found == [False], f"fds open on the received memfd (inheritable?): {found}"
    # Once the task is done (the worker dropped its argument), none: at once with no grace for
    # its mapping (transport.mapcache), within the grace otherwise.
    deadline = time.monotonic() + mapcache.GRACE + 5
    while (n := pool.submit(memfd_count).result()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert n == 0


def test_install_numpy_shares_large_plain_arrays_only(pool, policy, caplog):
    stridemap.pools.install(numpy=True, max_nbytes=4096)
    big, small = np.arange(2000.0), np.arange(100.0)
    with caplog.at_level(logging.DEBUG, logger="stridemap.pools"):
        got_big = pool.submit(poolwork.probe, big[::-2]).result()
        got_small = pool.submit(poolwork.probe, small).result()
        objects = np.array([1, "two", None], dtype=object)
        assert pool.submit(np.ndarray.tolist, objects).result() == [1, "two", None]
        record = np.zeros(600, dtype=[("x", "<f8"), ("y", "<i4")])
        assert pool.submit(np.array_equal, record, record).result()
    assert got_big["bytes"] == big[::-2].tobytes() and poolwork.zero_copy(got_big["mapping"])
    assert got_small["bytes"] == small.tobytes()
    assert not poolwork.zero_copy(got_small["mapping"])
    log = caplog.text
    assert "below max_nbytes=4096" in log
    assert "holds Python objects" in log
    assert "is structured" in log


def test_without_numpy_plain_arrays_are_pickled(pool, policy):
    stridemap.pools.install(numpy=False)
    big = np.arange(1 << 18, dtype="<f8")
    got = pool.submit(poolwork.probe, big).result()
    assert got["bytes"] == big.tobytes() and not poolwork.zero_copy(got["mapping"])


def test_uninstall_restores_pickling(pool, policy):
    stridemap.pools.install()
    a = stridemap.share(np.arange(5000.0))
    stridemap.pools.uninstall()
    assert np.ndarray not in reduction.ForkingPickler._extra_reducers
    got = pool.submit(poolwork.probe, a).result()
    assert got["bytes"] == a.tobytes() and not poolwork.zero_copy(got["mapping"])


def test_install_checks_its_arguments():
    with pytest.raises(ValueError, match="max_nbytes must be >= 0"):
        stridemap.pools.install(max_nbytes=-1)
    with pytest.raises(TypeError, match="max_nbytes must be an int"):
        stridemap.pools.install(max_nbytes="1M")


def _handle(fd):
    """An fd handle as a pool sends it (here to this same process)."""
    return reduction.DupFd(fd)


def _fd_count(array=None):
    """This process's fds: all of them, or those open on the file behind ``array``."""
    import gc

    gc.collect()
    if array is None:
        return len(os.listdir("/proc/self/fd"))
    ex = stridemap.export(array)
    os.close(ex.fd)  # an Export's fd is the caller's
    desc = stridemap.decode(ex.record)
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        n += (st.st_dev, st.st_ino) == (desc.device, desc.inode)
    return n


def _steady_count(array):
    """The fds on ``array``'s file once the receives before have let go of theirs (the mapping
    cache keeps a received mapping for its grace, an offer's duplicate is closed when the
    receiver says so): what a later receive must come back to."""
    mapcache.clear()
    last = _fd_count(array)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _fd_count(array)
        if now == last:
            return now
        last = now
    return last


def _settles_at(array, count):
    """Whether the fds on ``array``'s file come back to ``count`` (the sending thread closes
    its duplicate just after the receiver has it: wait for it)."""
    return settled(lambda: _fd_count(array), lambda n: n == count) == count


def test_a_descriptor_naming_a_path_is_refused_and_nothing_leaks(tmp_path):
    """A pool worker opens no path: a record with source "path" is refused, its fd closed."""
    a = stridemap.share(np.arange(64.0))
    args = _handoff.export_for_receiver(a)
    assert _handoff._rebuild(*args, _handoff.Policy())[3] == 3.0  # warm up
    before = _steady_count(a)
    record, *rest = _handoff.export_for_receiver(a)
    desc = stridemap.decode(record)
    path_path = tmp_path / "x.bin"
    np.arange(64.0).tofile(path_path)
    import dataclasses

    hostile = stridemap.encode(dataclasses.replace(
        desc, source="path", path=str(path_path), generation=0, segment_id=bytes(16),
        device=0, inode=0))
    refused = _handoff._rebuild(hostile, *rest, _handoff.Policy())
    with pytest.raises(stridemap.SourceMismatch, match="opens no paths"):
        np.asarray(refused)
    assert _settles_at(a, before), f"{_fd_count(a)} fds on the segment, {before} before"


def test_a_descriptor_for_another_file_is_refused(tmp_path):
    """The fd is checked against the record (SPEC §6 O7/O8): a record made for one segment
    and the fd of another are refused, and the fd closed."""
    a = stridemap.share(np.arange(64.0))
    b = stridemap.share(np.arange(64.0) + 1)
    record_a, *rest_a = _handoff.export_for_receiver(a)
    args_b = _handoff.export_for_receiver(b)
    assert _handoff._rebuild(*args_b, _handoff.Policy())[3] == 4.0
    before = _steady_count(b)
    _, *rest_b = _handoff.export_for_receiver(b)
    refused = _handoff._rebuild(record_a, *rest_b, _handoff.Policy())
    with pytest.raises(stridemap.OpenError):
        refused.sum()
    assert _settles_at(b, before), f"{_fd_count(b)} fds on the segment, {before} before"
    assert _handoff._rebuild(record_a, *rest_a, _handoff.Policy())[3] == 3.0


def receive_without_fds(conn):
    """In a child: receive pickled arrays with no fd to spare; report what happened."""
    import gc
    import hmac  # noqa: F401 - the connection's authentication imports it: not with no fds
    import pickle as _pickle
    import resource

    payload = conn.recv_bytes()
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The limit is on fd numbers: leave exactly one free number below it, for the connection
    # to the sender's resource_sharer, none for the array's fd.
    first, second = os.dup(0), os.dup(0)
    os.close(first), os.close(second)
    resource.setrlimit(resource.RLIMIT_NOFILE, (second, hard))
    try:
        np.asarray(_pickle.loads(payload))  # the failure is raised where the array is used
        out = ("received", "")
    except Exception as e:
        out = (type(e).__name__, str(e))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    gc.collect()
    conn.send((*out, before, len(os.listdir("/proc/self/fd"))))


def test_out_of_fds_in_the_receiver_is_a_clear_error_and_leaks_nothing(policy):
    stridemap.pools.install()
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=receive_without_fds, args=(theirs,))
    p.start()
    a = stridemap.share(np.arange(1000.0))
    mine.send_bytes(reduction.ForkingPickler.dumps(a[::-1]))
    kind, message, before, after = mine.recv()
    p.join(30)
    assert kind == "OpenFailed", (kind, message)
    assert "out of file descriptors" in message and "ulimit -n" in message, message
    assert after == before, f"the child's fds went from {before} to {after}"


def test_the_sender_holds_the_array_until_the_receiver_has_its_fd():
    """A worker returning an array drops it at once: the handle keeps it (and its mapping)
    until the fd is fetched, then lets go."""
    import gc
    import time
    import weakref

    a = stridemap.share(np.arange(1000.0))
    view = a[::-1]
    ref = weakref.ref(view)
    args = _handoff.export_for_receiver(view)
    del view
    gc.collect()
    assert ref() is not None, "the view went before its receiver had the fd"
    got = _handoff._rebuild(*args, _handoff.Policy())
    assert got[0] == 999.0
    deadline = time.monotonic() + 2
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    assert ref() is None, "the sender still holds the view after the fd was fetched"
