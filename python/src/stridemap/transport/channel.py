"""Persistent, authenticated fd channels between the processes of a pool.

``multiprocessing.reduction.DupFd`` makes a new connection to the sender's ``resource_sharer``
for every fd, with an HMAC handshake each time: about a millisecond per array on a loaded
machine. Here each sending process runs one listener (a Unix socket in multiprocessing's private
temp folder) and each receiving process keeps one connection to each sender it has received
from. The connection is authenticated once, both ways, with the process's ``authkey`` (the pool's,
as ``resource_sharer`` uses); after that every fd is one request on it: the receiver sends the
16-byte id the pickle carried, the sender answers one byte and the fd (``SCM_RIGHTS``), or one
byte and no fd when it holds nothing under that id.

The wire (both ends are in this file):

- the sender greets each new connection with :data:`_MAGIC` and a 32-byte random nonce ``S``;
- the receiver answers a 32-byte random nonce ``C`` and ``HMAC-SHA256(authkey, b"c" + S + C)``;
- the sender answers ``b"\\x01"`` and ``HMAC-SHA256(authkey, b"s" + S + C)`` (its own proof of
  the key), or ``b"\\x00"`` (a wrong key) and closes;
- then requests, each an op byte and an id (16 bytes): ``b"\\x01"`` (fetch) is answered
  ``b"\\x01"`` plus the fd or ``b"\\x00"``; ``b"\\x02"`` (release: the receiver maps the
  segment already and needs no fd) is not answered: the sender lets go of what it offered;
  ``b"\\x03"`` (mailbox, id all zero) turns the connection into the receiver's *mailbox*
  (below).

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
:data:`CONNECT_DEADLINE` seconds; a handshake takes a millisecond). When the sender is out of
fds (``EMFILE``) its listener stops accepting for a moment (50 ms, doubling up to 1 s) and
says so once (a warning), rather than spinning; receivers wait in the listen queue meanwhile.
Authenticated connections are not capped: they are the pool's own processes, one per receiver.

Sender side: :func:`offer` duplicates nothing: it takes ownership of an fd (and of an object to
keep alive with it) and returns a :class:`ChannelFd` handle to pickle. The fd is sent to the one
process that asks for it, once, then closed, and the object let go. :func:`pending` counts what
is waiting, :func:`peers` the other processes connected, for the wait at exit.

Receiver side: :meth:`ChannelFd.detach` returns the fd, received with ``MSG_CMSG_CLOEXEC``.
After any error the connection is closed (the next request makes a new one).

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
from multiprocessing import process as _mp_process
from multiprocessing import util as _mp_util

from .. import forksafe
from ..codec import errors
from ..segments import recycle

log = logging.getLogger("stridemap.pools")

HANDSHAKE_TIMEOUT = 5.0  # seconds a connection may take to authenticate, then it is closed
MAX_PENDING = 32  # connections not yet authenticated, held at once
MAX_PENDING_PER_PEER = 4  # of them from one process
CONNECT_DEADLINE = 30.0  # seconds a receiver keeps trying to connect and authenticate
ID_SIZE = 16  # bytes of an offer's random id

_MAGIC = b"stridemap-fdch/1"
_NONCE = 32
_MAC = 32  # HMAC-SHA256
_HELLO = len(_MAGIC) + _NONCE
_ANSWER = _NONCE + _MAC
_ACCEPTED, _REFUSED = b"\x01", b"\x00"
_FOUND, _MISSING = b"\x01", b"\x00"
_FETCH, _RELEASE, _MAILBOX = b"\x01", b"\x02", b"\x03"
MAILBOX_PERIOD = 0.05  # seconds between reads of the mailboxes, at first
MAILBOX_PERIOD_MAX = 1.0  # ... doubling while they bring nothing, up to this
LAZY_PILE = 64  # offers waiting from which even a lazy offer reads the mailboxes first
_REQUEST = 1 + ID_SIZE
_ACCEPTS_PER_WAKE = 16
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0
# Seconds after a peer went at which our connections to peers are checked again (a process's
# exit closes its connection to us before the one we made to it, at times by seconds).
_PRUNE_AGAIN = (0.5, 2.0, 5.0)
_CRED = struct.Struct("3i")


def _mac(key, side, server_nonce, client_nonce):
    return hmac.digest(key, side + server_nonce + client_nonce, "sha256")


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


def _authkey():
    return bytes(_mp_process.current_process().authkey)


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
                _prune()
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


# --- the receiving side -------------------------------------------------------------------

_conns_lock = forksafe.Lock()
_conns = {}  # address -> _Conn
_ended_peers = {}  # addresses whose connection ended (hung up), oldest first (peer_gone)
_ENDED_PEERS = 256


class _Refused(Exception):
    """The sender refused this process (another key), or is no fd channel."""


class _Dropped(Exception):
    """The sender closed the connection during the handshake (too many pending, a timeout)."""


class _Unreachable(Exception):
    """The handshake never completed within :data:`CONNECT_DEADLINE`."""


class _Conn:
    __slots__ = ("address", "sock", "lock", "pid", "pidfd", "take", "mailbox")

    def __init__(self, address):
        self.address = address
        self.sock = _connect(address)
        self.lock = forksafe.Lock()
        self.pid = self.pidfd = None
        self.take = _pidfd_getfd is not None  # False once the kernel refused it for this peer
        self.mailbox = None  # made on the first release; False: none to be had from this peer

    def close(self):
        self.sock.close()
        if self.mailbox:
            self.mailbox.close()
        self.mailbox = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def release(self, ident):
        """Send a release, to the mailbox where one can be had and takes it now, else on the
        connection itself. Called with ``lock`` held; raises OSError when the connection is
        broken."""
        message = _RELEASE + ident
        if self.mailbox is None:
            try:
                box = _handshake(self.address, HANDSHAKE_TIMEOUT)
            except Exception:  # noqa: BLE001 - the connection itself carries the releases
                self.mailbox = False
            else:
                try:
                    box.sendall(_MAILBOX + bytes(ID_SIZE))
                    self.mailbox = box
                except OSError:
                    box.close()
                    self.mailbox = False
        if self.mailbox:
            try:
                sent = self.mailbox.send(message, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0  # full: the sender has not read it lately
            except OSError:
                self.mailbox.close()
                self.mailbox, sent = False, 0
            if sent == len(message):
                return
            if sent:  # a part went: the rest must follow it there (the sender reads it soon)
                self.mailbox.sendall(message[sent:])
                return
        self.sock.sendall(message)


def _syscall_pidfd_getfd():
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    # syscall(2) is variadic and reads each argument as a long: pass longs (a bare int leaves
    # the register's upper half undefined, and a wrong system call number ran another call).
    fn.argtypes = [ctypes.c_long] * 4
    return lambda pidfd, fd: (fn(_SYS_PIDFD_GETFD, pidfd, fd, 0), ctypes.get_errno())


_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (the unified table)
_pidfd_getfd = _syscall_pidfd_getfd()


def _take(c, pid, fdnum, expect):
    """The sender's fd ``fdnum`` taken straight from its fd table (``pidfd_getfd``: no round
    trip, no wake-up of the sender), or None when that cannot be done here, in which case the
    caller fetches it over the channel. The kernel allows it only to a process that may ptrace
    the sender (same user, and under Yama's default scope an ancestor: a pool's parent taking
    its workers' results). What it gets must be the file the record names (``expect``: device
    and inode), checked here: a pid of another namespace, or an fd number the sender has since
    reused, gives another file, which is closed."""
    if not c.take:
        return None
    try:
        if c.pid != pid or c.pidfd is None:
            if c.pidfd is not None:
                os.close(c.pidfd)
                c.pidfd = None
            c.pidfd, c.pid = os.pidfd_open(pid), pid
        fd, err = _pidfd_getfd(c.pidfd, fdnum)
    except OSError:
        c.take = False
        return None
    if fd < 0:
        if err in (errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ESRCH):
            c.take = False  # not allowed here (or gone): the channel from now on
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if expect is None or (st.st_dev, st.st_ino) != tuple(expect):
        os.close(fd)
        return None
    return fd  # close-on-exec: pidfd_getfd sets it


def _connect(address):
    """A connection to the sender at ``address``, authenticated both ways. A connection the
    sender dropped or left unanswered (it is flooded, or out of fds) is made again, for up to
    :data:`CONNECT_DEADLINE` seconds. Raises OSError (the sender is gone; this process is out
    of fds), _Refused or _Unreachable."""
    deadline = time.monotonic() + CONNECT_DEADLINE
    delay, tries = 0.005, 0
    while True:
        tries += 1
        left = deadline - time.monotonic()
        try:
            return _handshake(address, max(min(HANDSHAKE_TIMEOUT, left), 0.05))
        except (_Dropped, BlockingIOError, TimeoutError, ConnectionResetError,
                BrokenPipeError) as e:
            last = e
        if time.monotonic() + delay >= deadline:
            raise _Unreachable(f"{tries} tries in {CONNECT_DEADLINE:g} s, the last: "
                               f"{type(last).__name__} {last}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _handshake(address, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # close-on-exec (Python's default)
    try:
        s.settimeout(timeout)
        s.connect(address)  # BlockingIOError: the listen queue is full
        hello = _recv_exact(s, _HELLO)
        if hello[:len(_MAGIC)] != _MAGIC:
            raise _Refused("it does not speak stridemap's fd channel")
        server_nonce = hello[len(_MAGIC):]
        key = _authkey()
        client_nonce = secrets.token_bytes(_NONCE)
        s.sendall(client_nonce + _mac(key, b"c", server_nonce, client_nonce))
        if _recv_exact(s, 1) != _ACCEPTED:
            raise _Refused("it has another authkey")
        proof = _recv_exact(s, _MAC)
        if not hmac.compare_digest(proof, _mac(key, b"s", server_nonce, client_nonce)):
            raise _Refused("it did not prove it has this pool's authkey")
        s.settimeout(None)
        return s
    except BaseException:
        s.close()
        raise


def _recv_exact(s, n):
    data = b""
    while len(data) < n:
        more = s.recv(n - len(data))
        if not more:
            raise _Dropped("the sender closed the connection")
        data += more
    return data


def _connection(address):
    with _conns_lock:
        c = _conns.get(address)
    if c is not None:
        return c
    _prune()  # a new peer: let go of the connections to peers that are gone
    c = _Conn(address)
    with _conns_lock:
        old = _conns.setdefault(address, c)
    if old is not c:
        c.close()
    return old


_GONE = select.POLLIN | select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0x2000)


def _prune():
    """Closes the idle connections whose peer has gone (a worker that exited). A connection in
    use by another thread (its lock held) is left for the next time."""
    with _conns_lock:
        conns = list(_conns.items())
    for address, c in conns:
        _drop_if_ended(address, c)


def peer_gone(address):
    """Whether the sender listening at ``address`` is gone as far as this process can tell
    without asking it: its connection hung up (it is then closed here), now or before. False
    while the connection is in use by another thread, and for a sender this process holds no
    connection to that ended. A cache of what that sender handed (:mod:`.mapcache`) lets go of
    it then: the sender will hand nothing more of it."""
    with _conns_lock:
        c = _conns.get(address)
        if c is None:
            return address in _ended_peers
    return _drop_if_ended(address, c)


def _drop_if_ended(address, c):
    """Closes the connection ``c`` to ``address`` if it is idle and at its end: the peer only
    ever answers a request, so an idle connection that polls readable or hung up is at its
    end; whether it was."""
    if not c.lock.acquire(blocking=False):
        return False
    try:
        try:
            p = select.poll()
            p.register(c.sock.fileno(), _GONE)
            gone = bool(p.poll(0))
        except (OSError, ValueError):
            gone = True
        if gone:  # under its lock: a thread that found it in _conns waits, then sees it closed
            _drop(address, c)
            with _conns_lock:
                _ended_peers[address] = None
                while len(_ended_peers) > _ENDED_PEERS:
                    del _ended_peers[next(iter(_ended_peers))]
        return gone
    finally:
        c.lock.release()


def _drop(address, c):
    with _conns_lock:
        if _conns.get(address) is c:
            del _conns[address]
    c.close()


class ChannelFd:
    """A pickled reference to an fd a sender holds for one receiver."""

    __slots__ = ("address", "ident", "pid", "fdnum")

    def __init__(self, address, ident, pid=None, fdnum=-1):
        self.address = address
        self.ident = ident
        self.pid = pid
        self.fdnum = fdnum

    def __reduce__(self):
        return ChannelFd, (self.address, self.ident, self.pid, self.fdnum)

    def detach(self, expect=None):
        """The fd, close-on-exec, owned by the caller. With ``expect`` (the device and inode
        the record names), it is first taken from the sender's fd table where the kernel
        allows it (:func:`_take`), and the sender told to let go of its copy."""
        if type(self.ident) is not bytes or len(self.ident) != ID_SIZE:
            raise errors.OpenFailed(
                f"the pickle names its fd by {self.ident!r}, not a {ID_SIZE}-byte id: it was "
                "made by another version of stridemap")
        try:
            c = _connection(self.address)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                raise _out_of_fds() from None
            raise errors.OpenFailed(
                "the process that sent this array is gone or cannot be reached "
                f"({e.strerror or e}): it must live until its receivers have the array",
                e.errno,
            ) from None
        except _Refused as e:
            raise errors.OpenFailed(
                f"the process that sent this array refused this one ({e}): only processes "
                "of the same pool (the same authkey) can receive it"
            ) from None
        except _Unreachable as e:
            raise errors.OpenFailed(
                "the process that sent this array did not let this one connect to its fd "
                f"channel ({e}): it may be out of file descriptors, or flooded with connections",
                errno.ETIMEDOUT,
            ) from None
        with c.lock:
            if (expect is not None and type(self.fdnum) is int and self.fdnum >= 0
                    and type(self.pid) is int and self.pid != os.getpid()):
                fd = _take(c, self.pid, self.fdnum, expect)
                if fd is not None:
                    try:
                        c.release(self.ident)
                    except OSError:
                        _drop(self.address, c)
                    return fd
            try:
                try:
                    c.sock.sendall(_FETCH + self.ident)
                except OSError as e:
                    raise errors.OpenFailed(
                        "the process that sent this array went before handing over its fd "
                        f"({e.strerror or e})", e.errno) from None
                return _recv_fd(c.sock)
            except BaseException:
                _drop(self.address, c)
                raise

    def release(self):
        """Tell the sender that this receiver needs no fd (it maps the segment already): it
        lets go of what it offered. Sent and not answered; never raises (a sender that cannot
        be told keeps its offer until it exits, as for a pickle never received)."""
        if type(self.ident) is not bytes or len(self.ident) != ID_SIZE:
            return
        try:
            c = _connection(self.address)
        except Exception:  # noqa: BLE001
            return
        with c.lock:
            try:
                c.release(self.ident)
            except OSError:
                _drop(self.address, c)


def _out_of_fds():
    return errors.OpenFailed(
        "the fd of a shared array was dropped on receipt: this process is out of file "
        "descriptors (received arrays hold none, but the fds in flight do); raise the limit "
        "(ulimit -n, resource.setrlimit(RLIMIT_NOFILE)) or let go of received arrays",
        errno.EMFILE,
    )


def _recv_fd(s):
    try:
        msg, ancillary, flags, _ = s.recvmsg(1, socket.CMSG_SPACE(4 * 4),
                                             socket.MSG_CMSG_CLOEXEC)
    except OSError as e:
        raise errors.OpenFailed(
            f"the process that sent this array went before handing over its fd ({e.strerror})",
            e.errno,
        ) from None
    fds = []
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds.extend(struct.unpack(f"={len(data) // 4}i", data[:len(data) - len(data) % 4]))
    if flags & socket.MSG_CTRUNC and not fds:
        raise _out_of_fds()
    if not msg:
        raise errors.OpenFailed(
            "the process that sent this array went before handing over its fd")
    if msg == _MISSING and not fds:
        raise errors.OpenFailed(
            "the process that sent this array no longer holds its fd: each pickle of a shared "
            "array can be received once")
    if len(fds) != 1 or msg != _FOUND or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise errors.OpenFailed(
            f"the pool's fd channel sent {len(fds)} fds (message {msg!r}), expected exactly one")
    return fds[0]


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
    for c in list(_conns.values()):
        try:
            c.close()
        except OSError:
            pass
    _conns.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
recycle.before_take.append(lambda: (drain_mailboxes(), flush_dropped()))
