"""The pools' fd channel: one authenticated connection per pair of processes, reused for every
array handed over; only processes with the pool's authkey get fds; each fd is fetched once;
a fork starts with nothing of its parent's; DupFd when no channel can be made.
"""

import concurrent.futures
import fcntl
import gc
import multiprocessing
import os
import pickle
import stat
from multiprocessing import reduction, resource_sharer

import numpy as np
import pytest

from producer_util import settled
import stridemap
from stridemap.codec.decode import decode
import stridemap.pools
from stridemap.transport import channel as _channel
from stridemap.transport import fetch as _fetch
from stridemap.transport import handoff as _handoff
from stridemap.transport import mapcache


def _sockets():
    """How many sockets this process has open."""
    return len(_socket_fds())


def receive(array):
    """In a worker: what it received, its sockets, and whether they (the channel's connection
    among them) are close-on-exec."""
    cloexec = all(
        fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for fd in _socket_fds())
    return float(array.sum()), _sockets(), cloexec


def _socket_fds():
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.stat(f"/proc/self/fd/{name}").st_mode):
                out.append(int(name))
        except OSError:
            pass
    return out


def test_handoffs_reuse_one_connection_per_pair_of_processes():
    stridemap.pools.install()
    a = stridemap.share(np.arange(1000.0))
    args = _handoff.export_for_receiver(a[::-1])
    assert type(args[1]) is _fetch.ChannelFd
    _handoff._rebuild(*args, _handoff.Policy())  # fetch what we made
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        first = pool.submit(receive, a[::-1]).result()
        parent_sockets = _sockets()
        later = [pool.submit(receive, a[::-2]).result() for _ in range(50)]
        # (Other tests' pools may still be closing their connections to this process.)
        now = settled(_sockets, lambda n: n <= parent_sockets)
        assert now <= parent_sockets, f"the parent opened sockets per handoff: {now}"
    assert first[0] == a.sum()
    assert all(total == a[::-2].sum() for total, _, _ in later)
    assert {sockets for _, sockets, _ in later} == {first[1]}, "the worker opened sockets per task"
    assert first[2] and all(cloexec for _, _, cloexec in later)
    assert no_offers_left()


def no_offers_left():
    """Whether every offer of this process was fetched or released, waiting for releases in
    flight (a receive that maps the segment already sends one, and does not wait for it)."""
    return settled(_channel.pending, lambda n: n == 0) == 0


def fetch_with_another_key(payload, conn):
    """In a child: unpickle ``payload`` with a different authkey and use what came; report
    what happened."""
    multiprocessing.current_process().authkey = b"not the pool's key" * 2
    try:
        np.asarray(pickle.loads(payload))
        conn.send(("received", ""))
    except Exception as e:
        conn.send((type(e).__name__, str(e)))


def test_a_process_without_the_pools_authkey_gets_no_fd():
    stridemap.pools.install()
    a = stridemap.share(np.arange(100.0))
    payload = bytes(reduction.ForkingPickler.dumps(a[::-1]))
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=fetch_with_another_key, args=(payload, theirs))
    p.start()
    kind, message = mine.recv()
    p.join(30)
    assert kind == "OpenFailed" and "same authkey" in message, (kind, message)
    # The fd is still held for a process that has the key.
    assert np.array_equal(pickle.loads(payload), a[::-1])
    assert no_offers_left()


def test_each_pickle_is_received_once():
    stridemap.pools.install()
    a = stridemap.share(np.arange(100.0))
    payload = bytes(reduction.ForkingPickler.dumps(a))  # not a view of a BytesIO: 3.12 crashed
    assert np.array_equal(pickle.loads(payload), a)
    # While this process maps the segment (transport.mapcache), a record of it needs no fd.
    mapcache.clear()
    gc.collect()
    again = pickle.loads(payload)  # a stand-in: the failure is the use's, not the unpickle's
    with pytest.raises(stridemap.OpenError, match="can be received once"):
        again.sum()
    # The connection was dropped after the error; the next handoff makes a new one.
    assert np.array_equal(pickle.loads(reduction.ForkingPickler.dumps(a.T)), a.T)


def test_records_of_a_frozen_segment_are_remembered_per_view():
    a = stridemap.share(np.arange(100.0).reshape(10, 10))
    views = [a, a[::-1], a.T, a.T[::-1], a[3:5, ::-2], a[::-1], a.T, a[0]]
    for v in views:
        got = pickle.loads(reduction.ForkingPickler.dumps(v))
        assert np.array_equal(got, v) and got.strides == v.strides
    assert len(stridemap.segment_of(a).view_records) == 6
    w = stridemap.empty((4,), "<f8")  # recycled in place: remembered per generation
    w[...] = 3.0
    got = pickle.loads(reduction.ForkingPickler.dumps(w))
    assert got.tolist() == [3.0] * 4 and len(stridemap.segment_of(w).view_records) == 1
    seg = stridemap.segment_of(w)
    del w, got
    again = stridemap.empty((4,), "<f8")
    assert stridemap.segment_of(again) is seg  # the next generation
    again[...] = 5.0
    got = pickle.loads(reduction.ForkingPickler.dumps(again))
    assert got.tolist() == [5.0] * 4
    [(generation, record)] = seg.view_records.values()
    assert generation == seg.generation
    assert decode(record).generation == seg.generation  # the patched record is valid
    n = stridemap.empty((4,), "<f8", kind="file")  # neither frozen nor recycled: described
    got = pickle.loads(reduction.ForkingPickler.dumps(n))  # every time
    assert stridemap.segment_of(n).view_records == {}


def test_a_forked_child_starts_with_no_channel_of_its_own():
    stridemap.pools.install()
    a = stridemap.share(np.arange(100.0))
    pickle.loads(reduction.ForkingPickler.dumps(a))  # this process serves and uses a connection
    assert _channel._served and _fetch._conns
    theirs = {os.fstat(c.fileno()).st_ino for c in _channel._served}
    theirs |= {os.fstat(c.sock.fileno()).st_ino for c in _fetch._conns.values()}
    theirs.add(os.fstat(_channel._state["listener"].fileno()).st_ino)
    payload = bytes(reduction.ForkingPickler.dumps(a[::-1]))
    assert _channel.pending() == 1
    pid = os.fork()
    if pid == 0:  # the child: no offered fds, no listener, no connections; it can fetch from
        code = 1  # its parent
        try:
            mine = {os.fstat(fd).st_ino for fd in _socket_fds()}
            ok = (_channel.pending() == 0 and _channel._state["address"] is None
                  and not _fetch._conns and not _channel._served and not mine & theirs)
            got = pickle.loads(payload)
            code = 0 if ok and np.array_equal(got, a[::-1]) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert no_offers_left()


def test_without_a_channel_dupfd_carries_the_fd(monkeypatch):
    def refuse():
        raise OSError(98, "no listener here")

    monkeypatch.setattr(_channel, "_listening", refuse)
    stridemap.pools.install()
    a = stridemap.share(np.arange(100.0))
    record, handle, kind, mode = _handoff.export_for_receiver(a[::-1])
    assert type(handle) is resource_sharer.DupFd
    got = _handoff._rebuild(record, handle, kind, mode, _handoff.Policy())
    assert np.array_equal(got, a[::-1])


def test_a_receiver_dropped_in_its_handshake_connects_again(monkeypatch):
    """A sender flooded with connections drops the oldest still in their handshake: the
    receiver tries again (here its first two tries are dropped) and gets its fd."""
    stridemap.pools.install()
    a = stridemap.share(np.arange(100.0))
    payload = bytes(reduction.ForkingPickler.dumps(a[::-1]))
    real, tries = _fetch._handshake, []

    def dropped_twice(address, timeout):
        tries.append(timeout)
        if len(tries) <= 2:
            raise _fetch._Dropped("dropped")
        return real(address, timeout)

    for address, c in list(_fetch._conns.items()):  # a new connection, not one made earlier
        _fetch._drop(address, c)
    monkeypatch.setattr(_fetch, "_handshake", dropped_twice)
    assert np.array_equal(pickle.loads(payload), a[::-1])
    assert len(tries) == 3


def test_a_sender_that_never_answers_fails_the_receive_within_the_deadline(monkeypatch,
                                                                           tmp_path):
    """A listener that never takes the connection (a sender out of fds, stopped): the receive
    fails after CONNECT_DEADLINE, with an error that says so, rather than hanging."""
    import socket
    import time

    monkeypatch.setattr(_fetch, "CONNECT_DEADLINE", 1.5)
    monkeypatch.setattr(_fetch, "HANDSHAKE_TIMEOUT", 0.5)
    path = str(tmp_path / "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(64)
    try:
        t0 = time.monotonic()
        with pytest.raises(stridemap.OpenError, match="did not let this one connect"):
            _fetch.ChannelFd(path, bytes(_channel.ID_SIZE)).detach()
        took = time.monotonic() - t0
    finally:
        mute.close()
    assert 1.0 < took < 10, took


def _offer_in_child(conn):
    """In a forked child: share an array, pickle it, send the bytes and wait to be told."""
    import time as _time

    stridemap.pools.install()
    a = stridemap.share(np.arange(50.0))
    conn.send_bytes(bytes(reduction.ForkingPickler.dumps(a)))
    conn.recv()  # until the parent has it
    _time.sleep(0.2)


def test_a_result_is_taken_from_its_senders_fd_table_only_when_it_is_the_named_file(
        monkeypatch):
    """A parent receiving from its child takes the fd with pidfd_getfd (no round trip) when the
    file is the one the record names; a wrong identity (a reused fd number, a pid of another
    namespace) is closed and the fd fetched over the channel instead: the values are exact
    either way."""
    if _fetch._pidfd_getfd is None:
        pytest.skip("no pidfd_getfd here")
    taken, fetched = [], []
    real_take, real_recv = _fetch._take, _fetch._recv_fd

    def take(c, pid, fdnum, expect):
        got = real_take(c, pid, fdnum, expect)
        taken.append(got is not None)
        return got

    def recv(sock):
        fetched.append(True)
        return real_recv(sock)

    monkeypatch.setattr(_fetch, "_take", take)
    monkeypatch.setattr(_fetch, "_recv_fd", recv)
    # spawn, not fork: this process runs threads (its channel's, the map cache's), and a child
    # forked from it crashed in its garbage collector on Python 3.12.
    ctx = multiprocessing.get_context("spawn")
    for lie in (False, True):
        taken.clear(), fetched.clear()
        if lie:  # the record names another file: what _take gets must be refused
            monkeypatch.setattr(_handoff, "_detach", lambda h, e=None, d=_handoff._detach:
                                d(h, (e[0], e[1] + 1) if e else e))
        here, there = ctx.Pipe()
        p = ctx.Process(target=_offer_in_child, args=(there,))
        p.start()
        try:
            got = pickle.loads(here.recv_bytes())
            assert got.tolist() == list(map(float, range(50)))
            here.send(None)
        finally:
            p.join(30)
        assert taken == [not lie], taken
        assert fetched == ([True] if lie else []), fetched


def test_offer_ids_are_random_and_a_forked_child_never_gives_its_parents():
    """Ids are read from the system 64 at a time: a child forked in the middle of a batch must
    not give the ids its parent gives next (a peer could take the other's fds)."""
    ids = [_channel._new_ident() for _ in range(130)]
    assert len(set(ids)) == 130 and all(len(i) == _channel.ID_SIZE for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, b"".join(_channel._new_ident() for _ in range(8)))
        finally:
            os._exit(0)
    os.close(w)
    child = b""
    while len(child) < 8 * _channel.ID_SIZE:
        more = os.read(r, 4096)
        if not more:
            break
        child += more
    os.close(r)
    os.waitpid(pid, 0)
    mine = [_channel._new_ident() for _ in range(8)]
    theirs = [child[i:i + _channel.ID_SIZE] for i in range(0, len(child), _channel.ID_SIZE)]
    assert len(theirs) == 8 and not set(theirs) & set(mine)
