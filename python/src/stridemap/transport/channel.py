"""Persistent, authenticated fd channels between the processes of a pool.

``multiprocessing.reduction.DupFd`` makes a new connection to the sender's ``resource_sharer``
for every fd, with an HMAC handshake each time: about a millisecond per array on a loaded
machine. Here each sending process runs one listener (a Unix socket in multiprocessing's private
temp folder) and each receiving process keeps one connection to each sender it has received
from. The connection is authenticated once, both ways, with the process's ``authkey`` (the pool's,
as ``resource_sharer`` uses); after that every fd is one request on it: the receiver sends the
16-byte id the pickle carried, the sender answers one byte and the fd (``SCM_RIGHTS``), or one
byte and no fd when it holds nothing under that id.

The wire, the handshake and the requests, is :mod:`.wire`; the receiving side is :mod:`.fetch`.

Releases need no answer, and need not be acted on at once: they go to a second connection,
the mailbox, which the sender does not watch (no wake-up of its serving thread, which on a busy
machine, or a virtual one, costs the receiver tens of microseconds per release and the sender a
thread that competes with its work). The sender reads its mailboxes when it needs to know what
was released (:func:`drain_mailboxes`): before it offers an fd (a released offer holds its fd
and its array until then), before it decides whether an offer of a segment it offered before
may be lazy and what it knows does not say so already (:func:`mapped_by_every_peer`), once
:data:`LAZY_PILE` lazy offers wait, when it counts what is pending (the wait at exit), before it
recycles a segment (:mod:`stridemap.segments.recycle`), and at every wake of its serving
thread, which polls at least every :data:`MAILBOX_PERIOD` seconds while it has mailboxes
(doubling, up to a second, while they bring nothing). A mailbox that is full (the sender reads
none) sends the release on the connection itself, as before.

Ids are 16 random bytes (``secrets``): a peer that has the key and one id cannot work out the
ids offered to other receivers.

What a peer can cost the sender, whatever it does: one serving thread per sending process
serves every connection, the handshakes and the requests (``epoll``: no thread per peer). A
connection not yet authenticated is closed after :data:`HANDSHAKE_TIMEOUT` seconds. At most
:data:`MAX_PENDING` such connections are held at once, and at most
:data:`MAX_PENDING_PER_PEER` from one process (by ``SO_PEERCRED``): a new one beyond either cap
closes the oldest pending one (of that process, else of all), so that a peer holding idle
connections pushes out its own, and a receiver that was pushed out connects again (for up to
``wire.CONNECT_DEADLINE`` seconds; a handshake takes a millisecond). When the sender is out of
fds (``EMFILE``) its listener stops accepting for a moment (50 ms, doubling up to 1 s) and
says so once (a warning), rather than spinning; receivers wait in the listen queue meanwhile.
Authenticated connections are not capped: they are the pool's own processes, one per receiver.

Sender side: :func:`offer` duplicates nothing: it takes ownership of an fd (and of an object to
keep alive with it) and returns a ``fetch.ChannelFd`` handle to pickle. The fd is sent to the one
process that asks for it, once, then closed, and the object let go. :func:`pending` counts what
is waiting, :func:`peers` the other processes connected, for the wait at exit.

Receiver side (:mod:`.fetch`): ``ChannelFd.detach`` returns the fd.

After a fork the child starts with no listener, no offered fds and no connections, served or
made (it closes its copies; the parent's stay open): it never speaks on a socket the parent
uses, and a receiver sees the connection close when the parent goes, whatever its forked
children do.
"""

import collections
import errno
import hmac
import logging
import os
import secrets
import select
import socket
import struct
import tempfile
import threading
import time
import weakref
from multiprocessing import connection as _mp_connection
from multiprocessing import util as _mp_util

from .. import forksafe
from ..segments import recycle
from .fetch import ChannelFd, prune
from .wire import (
    _ACCEPTED,
    _ANSWER,
    _FETCH,
    _FOUND,
    _HELLO,
    _MAGIC,
    _MAILBOX,
    _MISSING,
    _NONCE,
    _REFUSED,
    _RELEASE,
    _REQUEST,
    HANDSHAKE_TIMEOUT,
    ID_SIZE,
    _authkey,
    _mac,
)

log = logging.getLogger("stridemap.pools")

MAX_PENDING = 32  # connections not yet authenticated, held at once
MAX_PENDING_PER_PEER = 4  # of them from one process
MAILBOX_PERIOD = 0.05  # seconds between reads of the mailboxes, at first
MAILBOX_PERIOD_MAX = 1.0  # ... doubling while they bring nothing, up to this
LAZY_PILE = 64  # offers waiting from which even a lazy offer reads the mailboxes first
_ACCEPTS_PER_WAKE = 16
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0
# Seconds after a peer went at which our connections to peers are checked again (a process's
# exit closes its connection to us before the one we made to it, at times by seconds).
_PRUNE_AGAIN = (0.5, 2.0, 5.0)
_CRED = struct.Struct("3i")


# --- the sending side ---------------------------------------------------------------------


def _settle_tempfile():
    """The listener's address comes from ``tempfile`` (``multiprocessing``'s
    ``arbitrary_address``), which makes its temp folder's name and its name sequence on first
    use under a lock of its own that a fork does not reset: a child forked while another thread
    of its parent was doing that (pickling the first shared array) hung on it. Made here, at
    import, before any thread of ours runs, they are never made again in this process."""
    tempfile.gettempdir()
    candidates = getattr(tempfile, "_get_candidate_names", None)
    if candidates is not None:
        candidates()


_settle_tempfile()
_lock = forksafe.Lock()
_state = {"pid": None, "address": None, "listener": None, "epoll": None}
_offered = {}  # id -> (fd, keep, make, holding): fd None for a lazy offer (made by make())
# Segments (the ``holding`` of offers) -> pids of the peers that fetched or released an offer of
# them: those map it (or did lately). An offer of a segment every connected peer maps is lazy.
_holders = weakref.WeakKeyDictionary()
_holders_lock = forksafe.Lock()
# Owned offers whose receivers are gone, queued by finalizers (withdraw_owned_later).
_deferred = collections.deque()
_served = {}  # the connections this process's serving thread holds -> the peer's pid, once
# authenticated (None before)
_mailboxes = {}  # the peers' mailbox connections -> [pid, bytes of a request not all read yet]
_mailboxes_lock = forksafe.Lock()


def _listening():
    """This process's listener address, started on first use. Raises OSError if it cannot be."""
    with _lock:
        if _state["pid"] == os.getpid() and _state["address"] is not None:
            return _state["address"]
        address = _mp_connection.arbitrary_address("AF_UNIX")  # in multiprocessing's 0700 folder
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ep = None
        try:
            sock.bind(address)
            sock.listen(64)
            sock.setblocking(False)
            ep = select.epoll()
            ep.register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            sock.close()
            if ep is not None:
                ep.close()
            raise
        server = _Server(sock, ep)
        t = threading.Thread(target=server.run, name="stridemap-fd-channel", daemon=True)
        t.start()
        _state.update(pid=os.getpid(), address=address, listener=sock, epoll=ep)
        # The socket file goes with multiprocessing's temp folder at exit; remove it earlier
        # (and only in this process) when the process exits normally.
        _mp_util.Finalize(None, _unlink_if_mine, args=(address, os.getpid()), exitpriority=-50)
        return address


def _unlink_if_mine(address, pid):
    if os.getpid() == pid:
        try:
            os.unlink(address)
        except OSError:
            pass


class _Peer:
    """A connection the serving thread holds: pending (``deadline`` set) until authenticated."""

    __slots__ = ("sock", "fd", "pid", "buf", "got", "nonce", "deadline")

    def __init__(self, sock, pid, nonce, deadline):
        self.sock, self.fd, self.pid = sock, sock.fileno(), pid
        self.buf, self.got = bytearray(_ANSWER), 0
        self.nonce, self.deadline = nonce, deadline


class _Server:
    """The serving thread of one process: accepts, authenticates and answers every connection
    to its listener, with bounded fds and no thread per peer (module docstring)."""

    def __init__(self, listener, ep):
        self.listener, self.ep = listener, ep
        self.lfd = listener.fileno()
        self.peers = {}  # fd -> _Peer
        self.pending = collections.OrderedDict()  # fd -> _Peer not yet authenticated, oldest first
        self.paused_until = None  # accepting again at this time (after EMFILE)
        self.backoff = _BACKOFF_MIN
        self.warned = False
        self.prune_at = None  # our connections to peers are pruned again at this time
        self.prunes = []  # and at these
        self.mailbox_period = MAILBOX_PERIOD

    def run(self):
        while True:
            timeout = self._timeout()
            try:
                events = self.ep.poll(timeout)
            except (OSError, ValueError):  # closed: a fork's child does that to its copy
                return
            gone = False
            for fd, _ in events:
                if fd == self.lfd:
                    if not self._accept():
                        return
                    continue
                peer = self.peers.get(fd)
                if peer is None:
                    continue
                try:
                    keep = self._readable(peer)
                except Exception:  # noqa: BLE001 - a bug must cost one connection, not all
                    log.exception("stridemap.pools: the fd channel dropped a connection")
                    keep = False
                if not keep:
                    if self._close(peer):
                        gone = True
            _withdraw_deferred()
            # The mailboxes are read at every wake, and at least every mailbox_period seconds:
            # 50 ms, doubling while they bring nothing, up to a second. Nothing else wakes
            # this thread for them (an offer that did cost the offering thread a wake-up).
            got = drain_mailboxes() + flush_dropped()
            self.mailbox_period = MAILBOX_PERIOD if got or events else min(
                self.mailbox_period * 2, MAILBOX_PERIOD_MAX)
            now = time.monotonic()
            if gone or (self.prune_at is not None and now >= self.prune_at):
                # A process of the pool went (a worker's connection to us ends when it exits):
                # let go of our connections to the ones that are gone, now rather than when
                # the next new peer comes (which, once a pool is shut down, may be never); and
                # once more a little later, for an exit that closes our connection first.
                prune()
                if gone:
                    self.prunes = [now + t for t in _PRUNE_AGAIN]
                self.prune_at = self.prunes.pop(0) if self.prunes else None
            while self.pending:
                oldest = next(iter(self.pending.values()))
                if oldest.deadline > now:
                    break
                self._close(oldest)
            if self.paused_until is not None and now >= self.paused_until:
                self.paused_until = None
                try:
                    self.ep.register(self.lfd, select.EPOLLIN)
                except (OSError, ValueError):
                    return

    def _timeout(self):
        """Seconds until the next handshake deadline or the end of a pause; -1: none."""
        ends = [t for t in (self.paused_until, self.prune_at) if t is not None]
        if _mailboxes:
            ends.append(time.monotonic() + self.mailbox_period)
        if self.pending:
            ends.append(next(iter(self.pending.values())).deadline)
        if not ends:
            return -1
        return max(min(ends) - time.monotonic(), 0) + 0.001

    def _accept(self):
        """Take the connections waiting (a few at a time); False when the listener is gone."""
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as e:
                if self.listener.fileno() == -1:
                    return False
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                self._pause(e)
                return True
            self.backoff = _BACKOFF_MIN
            self._admit(sock)
        return True

    def _pause(self, e):
        """Out of fds (or another failure of accept): stop accepting for a while, not spin."""
        if not self.warned:
            self.warned = True
            what = ("this process is out of file descriptors"
                    if e.errno in (errno.EMFILE, errno.ENFILE) else "accept failed")
            log.warning("stridemap.pools: the fd channel cannot take a connection: %s (%s); it "
                        "tries again every %g s at most, receivers wait meanwhile (said once)",
                        what, e.strerror or e, _BACKOFF_MAX)
        try:
            self.ep.unregister(self.lfd)
        except (OSError, ValueError):
            pass
        self.paused_until = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX)

    def _admit(self, sock):
        try:
            pid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _CRED.size))[0]
        except OSError:
            pid = 0
        mine = [p for p in self.pending.values() if p.pid == pid]
        if len(mine) >= MAX_PENDING_PER_PEER:
            self._close(mine[0])
        elif len(self.pending) >= MAX_PENDING:
            self._close(next(iter(self.pending.values())))
        nonce = secrets.token_bytes(_NONCE)
        try:
            sock.setblocking(False)
            if sock.send(_MAGIC + nonce) != _HELLO:  # a new socket's buffer takes it whole
                raise OSError(errno.EAGAIN, "greeting cut short")
            self.ep.register(sock.fileno(), select.EPOLLIN)
        except (OSError, ValueError):
            sock.close()
            return
        peer = _Peer(sock, pid, nonce, time.monotonic() + HANDSHAKE_TIMEOUT)
        self.peers[peer.fd] = self.pending[peer.fd] = peer
        with _lock:
            _served[sock] = None

    def _close(self, peer):
        """Close ``peer``'s connection; True if it had authenticated (a process of the pool)."""
        authenticated = peer.fd in self.peers and peer.fd not in self.pending
        try:
            self.ep.unregister(peer.fd)
        except (OSError, ValueError):
            pass
        self.peers.pop(peer.fd, None)
        self.pending.pop(peer.fd, None)
        with _lock:
            _served.pop(peer.sock, None)
        peer.sock.close()
        return authenticated

    def _readable(self, peer):
        """Read what came on ``peer``; False when it is to be closed."""
        view = memoryview(peer.buf)
        try:
            n = peer.sock.recv_into(view[peer.got:])
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if n == 0:
            return False
        peer.got += n
        if peer.got < len(peer.buf):
            return True
        peer.got = 0
        if peer.deadline is not None:
            return self._authenticate(peer)
        if peer.buf[:1] == _MAILBOX:
            self._to_mailbox(peer)
            return True
        return _answer(peer.sock, bytes(peer.buf), peer.pid)

    def _to_mailbox(self, peer):
        """``peer``'s connection is its mailbox from now on: no longer watched (or counted as
        a peer), read by :func:`drain_mailboxes`."""
        try:
            self.ep.unregister(peer.fd)
        except (OSError, ValueError):
            pass
        self.peers.pop(peer.fd, None)
        with _lock:
            _served.pop(peer.sock, None)
        with _mailboxes_lock:
            _mailboxes[peer.sock] = [peer.pid, b""]

    def _authenticate(self, peer):
        key = _authkey()
        client_nonce, proof = bytes(peer.buf[:_NONCE]), bytes(peer.buf[_NONCE:])
        try:
            if not hmac.compare_digest(proof, _mac(key, b"c", peer.nonce, client_nonce)):
                peer.sock.send(_REFUSED)
                return False
            reply = _ACCEPTED + _mac(key, b"s", peer.nonce, client_nonce)
            if peer.sock.send(reply) != len(reply):
                return False
        except OSError:
            return False
        del self.pending[peer.fd]
        peer.buf, peer.deadline, peer.nonce = bytearray(_REQUEST), None, None
        with _lock:
            _served[peer.sock] = peer.pid
        return True


def _taken(ident, pid):
    """The offer under ``ident``, taken out (None when there is none); ``pid`` maps its
    segment from now on."""
    with _lock:
        entry = _offered.pop(ident, None)
    if entry is not None and entry[3] is not None:
        with _holders_lock:
            try:
                _holders.setdefault(entry[3], set()).add(pid)
            except TypeError:  # not weakly referable: never lazy
                pass
    return entry


def _released(ident, pid):
    """The offer under ``ident`` let go of (its fd closed); what it kept is returned, for the
    caller to let go of."""
    entry = _taken(ident, pid)
    if entry is None:
        return None
    if entry[0] is not None:
        os.close(entry[0])
    return entry[1]


# What released offers kept (their arrays), let go of later (flush_dropped): the last array of
# a segment can take long to go (a large segment's pages freed), which an offer must not wait.
_to_drop = collections.deque()


def drain_mailboxes(defer=False):
    """Act on the releases waiting in the peers' mailboxes (module docstring); how many. A
    mailbox whose peer closed it is closed. Never blocks: another thread draining them is left
    to it. With ``defer``, what the releases kept is let go of later (:func:`flush_dropped`:
    by the serving thread, or before a recycle)."""
    if not _mailboxes or not _mailboxes_lock.acquire(blocking=False):
        return 0
    kept = []
    try:
        for sock, box in list(_mailboxes.items()):
            data, closed = box[1], False
            while True:
                try:
                    more = sock.recv(64 * _REQUEST, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    closed = True
                    break
                if not more:
                    closed = True
                    break
                data += more
            whole = len(data) - len(data) % _REQUEST
            for at in range(0, whole, _REQUEST):
                if data[at:at + 1] == _RELEASE:
                    kept.append(_released(data[at + 1:at + _REQUEST], box[0]))
                else:  # a mailbox takes releases only
                    closed = True
                    break
            box[1] = data[whole:]
            if closed:
                del _mailboxes[sock]
                sock.close()
    finally:
        _mailboxes_lock.release()
    if defer and any(k is not None for k in kept):
        _to_drop.append(kept)
    count = len(kept)
    del kept
    return count


def flush_dropped():
    """Let go of what released offers kept and :func:`drain_mailboxes` left for later; how
    many batches."""
    n = 0
    while _to_drop:
        try:
            _to_drop.popleft()
        except IndexError:
            break
        n += 1
    return n


def _answer(sock, request, pid=None):
    """One request: the fd offered under its id (then closed here), or none; or a release,
    not answered. False when the connection is to be closed."""
    op, ident = request[:1], request[1:]
    if op == _RELEASE:
        _released(ident, pid)
        return True
    if op != _FETCH:
        return False
    entry = _taken(ident, pid)
    try:
        if entry is None:
            return sock.send(_MISSING) == 1
        fd, keep, make, _holding = entry
        if fd is None:
            try:
                fd = make()
            except Exception as e:  # noqa: BLE001 - this receiver's loss, not the channel's
                log.warning("stridemap.pools: could not make the fd a receiver asked for: %s", e)
                return sock.send(_MISSING) == 1
        try:
            return socket.send_fds(sock, [_FOUND], [fd]) == 1
        finally:
            os.close(fd)
            del keep, entry
    except OSError:  # a receiver that does not read its replies, or gone
        return False


_scopes = threading.local()


class pickle_scope:
    """While a pickle is being made (``with pickle_scope(): ...dumps(...)``), the offers made
    on this thread belong to it: when it fails (a later array out of fds, an object that cannot
    be pickled), no receiver can ever ask for them, and they are withdrawn at once (their fds
    closed, their arrays let go of) instead of staying until the process exits. Nested scopes
    hand theirs on to the enclosing one."""

    def __enter__(self):
        stack = getattr(_scopes, "stack", None)
        if stack is None:
            stack = _scopes.stack = []
        stack.append([])
        return self

    def __exit__(self, kind, value, tb):
        stack = _scopes.stack
        mine = stack.pop()
        if kind is not None:
            withdraw(mine)
        elif stack:
            stack[-1].extend(mine)
        return False


def withdraw(idents):
    """Let go of the offers ``idents`` that no receiver has fetched."""
    with _lock:
        entries = [_offered.pop(i, None) for i in idents]
    for entry in entries:
        if entry is not None and entry[0] is not None:
            try:
                os.close(entry[0])
            except OSError:
                pass
    del entries


class Owned:
    """The offers made on one thread that is the only way to one set of receivers (the feeder
    thread of a pool's call queue, which only that pool's workers read, found by
    :func:`owner_of_thread`): when those receivers
    are all gone, :func:`withdraw_owned` lets go of the offers none of them fetched. Fetched
    ones are forgotten as the set grows (it never holds more than twice the unfetched)."""

    __slots__ = ("ids", "_prune_at")

    def __init__(self):
        self.ids = set()
        self._prune_at = 64

    def add(self, ident):  # called with _lock held
        self.ids.add(ident)
        if len(self.ids) >= self._prune_at:
            self.ids.intersection_update(_offered)
            self._prune_at = max(64, 2 * len(self.ids))


def owner_of_thread():
    """The :class:`Owned` the offers made on this thread belong to, or None (replaced by
    ``queue_offers.watch_call_queues``: a pool's call queue owns its feeder's offers)."""
    return None


def withdraw_owned_later(owned):
    """:func:`withdraw_owned` for a finalizer, which may run inside any allocation, also on a
    thread that holds this module's lock: it only queues the work, which the next offer, the
    next :func:`pending` or the serving thread does."""
    _deferred.append(owned)


def _withdraw_deferred():
    while _deferred:
        try:
            owned = _deferred.popleft()
        except IndexError:
            return
        withdraw_owned(owned)


def withdraw_owned(owned):
    """Let go of the offers of ``owned`` that no receiver fetched (its receivers are gone)."""
    with _lock:
        idents = list(owned.ids)
        owned.ids.clear()
    withdraw(idents)


def offer(fd, keep, holding=None, make=None, drained=False):
    """Hand ``fd`` (now owned here) to the one process that asks for it; a :class:`ChannelFd`
    to pickle. Raises OSError when this process cannot listen (the caller falls back).

    ``holding``: the segment the fd is of (weakly referable), so that the peers that fetch or
    release it are known to map it (:func:`mapped_by_every_peer`). ``fd`` None makes a lazy
    offer: ``make()`` makes the fd when a receiver asks for it (one that maps the segment
    already asks for nothing), and no receiver can take it from this process's fd table.
    ``drained``: the caller needs nothing read from the mailboxes now (a lazy offer, which
    holds no fd): they are read only once :data:`LAZY_PILE` offers wait. Otherwise they are
    read first: an offer released (a receiver that took the fd itself, or maps the segment)
    holds its fd and its array until they are read, and a process whose arrays are new segments
    (``share()`` results) would keep those its receivers let go of (the serving thread reads
    them too, but up to a second apart)."""
    _withdraw_deferred()
    if not drained or len(_offered) >= LAZY_PILE:
        drain_mailboxes(defer=True)
    address = _listening()
    owner = owner_of_thread()
    if holding is not None and fd is not None:  # (a lazy offer's segment is known already)
        with _holders_lock:
            try:
                _holders.setdefault(holding, set())  # offered: its releases may say who maps it
            except TypeError:  # not weakly referable: never lazy
                pass
    with _lock:
        ident = _new_ident()
        while ident in _offered:  # never, in practice
            ident = _new_ident()
        _offered[ident] = (fd, keep, make, holding)
        if owner is not None:
            owner.add(ident)
    stack = getattr(_scopes, "stack", None)
    if stack:
        stack[-1].append(ident)
    return ChannelFd(address, ident, os.getpid(), -1 if fd is None else fd)


_ids = {"pid": None, "random": b"", "at": 0}  # random bytes read ahead for offers' ids
_IDS_PER_READ = 64


def _new_ident():  # with _lock held
    """:data:`ID_SIZE` random bytes (``secrets``), read :data:`_IDS_PER_READ` ids at a time: one
    ``getrandom`` per 64 offers. A forked child reads its own (never ids its parent gives)."""
    if _ids["pid"] != os.getpid() or _ids["at"] == len(_ids["random"]):
        _ids.update(pid=os.getpid(), random=secrets.token_bytes(ID_SIZE * _IDS_PER_READ), at=0)
    at = _ids["at"]
    _ids["at"] = at + ID_SIZE
    return _ids["random"][at:at + ID_SIZE]


def mapped_by_every_peer(holding):
    """Whether every process connected to this one's channel has fetched or released an offer
    of ``holding`` (so maps it, or did lately): then an offer of it may be lazy. The mailboxes
    are read only when what is known already does not say so and an offer of ``holding`` was
    made (a release can only add a process that maps it, of a segment offered; and a process
    that once did stays counted: its receive of a lazy offer asks for an fd when its mapping
    went), so a handoff of a segment every peer maps, or of a new one, reads none here."""
    held = _every_peer_holds(holding)
    if held is None:
        return False  # never offered: nothing in a mailbox can say a peer maps it
    return held or (drain_mailboxes(defer=True) > 0 and bool(_every_peer_holds(holding)))


def _every_peer_holds(holding):
    """Whether every peer maps ``holding``; None when no offer of it was ever made."""
    me = os.getpid()
    with _lock:
        if _state["pid"] != me:
            return False
        peers = {pid for pid in _served.values() if pid is not None and pid != me}
    with _holders_lock:
        try:
            held = _holders.get(holding)
        except TypeError:
            return False
        if held is None:
            return None
        return bool(peers) and peers <= held


def pending():
    """How many offered fds no receiver has fetched (or released) yet."""
    _withdraw_deferred()
    drain_mailboxes()
    with _lock:
        return len(_offered) if _state["pid"] == os.getpid() else 0


def peers():
    """How many authenticated connections from other processes this process's listener holds:
    each is a process of the pool that may still fetch an offered fd. (Not the connections
    still in their handshake: a peer without the key must not hold up the wait at exit.)"""
    me = os.getpid()
    with _lock:
        if _state["pid"] != me:
            return 0
        return sum(1 for pid in _served.values() if pid is not None and pid != me)


# --- fork -----------------------------------------------------------------------------------

def _after_fork_in_child():  # after forksafe's: the locks are free
    for fd, *_ in _offered.values():
        if fd is None:
            continue
        try:
            os.close(fd)
        except OSError:
            pass
    _offered.clear()
    _ids.update(pid=None, random=b"", at=0)  # the parent's ids to come are not this child's
    _holders.clear()
    _deferred.clear()
    _to_drop.clear()
    for sock in list(_served):  # a copy: the parent's thread still serves it; EOF must reach
        try:                    # the receiver when the parent goes, whatever this child does
            sock.close()
        except OSError:
            pass
    _served.clear()
    for sock in list(_mailboxes):
        try:
            sock.close()
        except OSError:
            pass
    _mailboxes.clear()
    for what in ("listener", "epoll"):  # this process's copies; the file and the parent's stay
        if _state[what] is not None:
            try:
                _state[what].close()
            except OSError:
                pass
    _state.update(pid=None, address=None, listener=None, epoll=None)


os.register_at_fork(after_in_child=_after_fork_in_child)
recycle.before_take.append(lambda: (drain_mailboxes(), flush_dropped()))
