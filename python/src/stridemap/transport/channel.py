"""Persistent, authenticated fd channels between the processes of a pool.

``multiprocessing.reduction.DupFd`` makes a new connection to the sender's ``resource_sharer``
for every fd, with an HMAC handshake each time: about a millisecond per array on a loaded
machine. Here each sending process runs one listener (a Unix socket in multiprocessing's private
temp folder) and each receiving process keeps one connection to each sender it has received
from. The connection is authenticated once, both ways, with the process's ``authkey`` (the pool's,
exactly as ``resource_sharer`` does); after that every fd is one request on it: the receiver
sends the 8-byte id the pickle carried, the sender answers one byte and the fd (``SCM_RIGHTS``),
or one byte and no fd when it holds nothing under that id.

Sender side: :func:`offer` duplicates nothing: it takes ownership of an fd (and of an object to
keep alive with it) and returns a :class:`ChannelFd` handle to pickle. The fd is sent to the one
process that asks for it, once, then closed, and the object let go. :func:`pending` counts what
is waiting, for the wait at exit.

Receiver side: :meth:`ChannelFd.detach` returns the fd, received with ``MSG_CMSG_CLOEXEC``.
After any error the connection is closed (the next request makes a new one).

After a fork the child starts with no listener, no offered fds and no connections, served or
made (it closes its copies; the parent's stay open): it never speaks on a socket the parent
uses, and a receiver sees the connection close when the parent goes, whatever its forked
children do.
"""

import errno
import os
import select
import socket
import struct
import tempfile
import threading
from multiprocessing import connection as _mp_connection
from multiprocessing import process as _mp_process
from multiprocessing import util as _mp_util

from .. import forksafe
from ..codec import errors

_KEY = struct.Struct("<Q")
_FOUND, _MISSING = b"\x01", b"\x00"

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
_state = {"pid": None, "address": None, "listener": None, "next": 0}
_offered = {}  # id -> (fd, keep)
_served = set()  # the receivers' connections this process serves (closed in a forked child)


def _authkey():
    return bytes(_mp_process.current_process().authkey)


def _listening():
    """This process's listener address, started on first use. Raises OSError if it cannot be."""
    with _lock:
        if _state["pid"] == os.getpid() and _state["address"] is not None:
            return _state["address"]
        address = _mp_connection.arbitrary_address("AF_UNIX")  # in multiprocessing's 0700 folder
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        t = threading.Thread(target=_accept_loop, args=(sock,), name="stridemap-fd-channel",
                             daemon=True)
        t.start()
        _state.update(pid=os.getpid(), address=address, listener=sock)
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


def _accept_loop(listener):
    pid = os.getpid()
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            if os.getpid() != pid or listener.fileno() == -1:
                return
            continue
        threading.Thread(target=_serve, args=(sock,), name="stridemap-fd-channel-conn",
                         daemon=True).start()


def _serve(sock):
    """One receiver's connection: authenticate it, then answer its requests until it closes."""
    conn = _mp_connection.Connection(sock.detach())
    with _lock:
        _served.add(conn)
    try:
        key = _authkey()
        _mp_connection.deliver_challenge(conn, key)
        _mp_connection.answer_challenge(conn, key)
    except Exception:  # a wrong key, a process that went: drop it
        with _lock:
            _served.discard(conn)
        conn.close()
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=conn.fileno())
    buf = bytearray(_KEY.size)
    try:
        while _recv_exact(s, buf):
            (ident,) = _KEY.unpack(buf)
            with _lock:
                entry = _offered.pop(ident, None)
            if entry is None:
                s.sendall(_MISSING)
                continue
            fd, keep = entry
            try:
                socket.send_fds(s, [_FOUND], [fd])
            finally:
                os.close(fd)
                del keep, entry
    except OSError:
        pass
    finally:
        s.detach()
        with _lock:
            _served.discard(conn)
        conn.close()


def _recv_exact(s, buf):
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = s.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def offer(fd, keep):
    """Hand ``fd`` (now owned here) to the one process that asks for it; a :class:`ChannelFd`
    to pickle. Raises OSError when this process cannot listen (the caller falls back)."""
    address = _listening()
    with _lock:
        ident = _state["next"]
        _state["next"] = ident + 1
        _offered[ident] = (fd, keep)
    return ChannelFd(address, ident)


def pending():
    """How many offered fds no receiver has fetched yet."""
    with _lock:
        return len(_offered) if _state["pid"] == os.getpid() else 0


# --- the receiving side -------------------------------------------------------------------

_conns_lock = forksafe.Lock()
_conns = {}  # address -> _Conn


class _Conn:
    __slots__ = ("conn", "sock", "lock")

    def __init__(self, address):
        conn = _mp_connection.Client(address, family="AF_UNIX", authkey=_authkey())
        self.conn = conn
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=conn.fileno())
        self.lock = forksafe.Lock()

    def close(self):
        self.sock.detach()
        self.conn.close()


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
    """Closes the idle connections whose peer has gone (a worker that exited): the peer only
    ever answers a request, so an idle connection that polls readable or hung up is at its
    end. A connection in use by another thread (its lock held) is left for the next time."""
    with _conns_lock:
        conns = list(_conns.items())
    for address, c in conns:
        if not c.lock.acquire(blocking=False):
            continue
        try:
            p = select.poll()
            p.register(c.sock.fileno(), _GONE)
            gone = bool(p.poll(0))
        except (OSError, ValueError):
            gone = True
        finally:
            c.lock.release()
        if gone:
            _drop(address, c)


def _drop(address, c):
    with _conns_lock:
        if _conns.get(address) is c:
            del _conns[address]
    c.close()


class ChannelFd:
    """A pickled reference to an fd a sender holds for one receiver."""

    __slots__ = ("address", "ident")

    def __init__(self, address, ident):
        self.address = address
        self.ident = ident

    def __reduce__(self):
        return ChannelFd, (self.address, self.ident)

    def detach(self):
        """The fd, close-on-exec, owned by the caller."""
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
        except (EOFError, _mp_connection.AuthenticationError) as e:
            raise errors.OpenFailed(
                f"the process that sent this array refused this one ({e}): only processes "
                "of the same pool (the same authkey) can receive it"
            ) from None
        with c.lock:
            try:
                c.sock.sendall(_KEY.pack(self.ident))
                return _recv_fd(c.sock)
            except BaseException:
                _drop(self.address, c)
                raise


def _out_of_fds():
    return errors.OpenFailed(
        "the fd of a shared array was dropped on receipt: this process is out of file "
        "descriptors (each received array holds two while it lives); raise the limit "
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
    for fd, _keep in _offered.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _offered.clear()
    for conn in _served:  # a copy: the parent's thread still serves it; EOF must reach the
        try:              # receiver when the parent goes, whatever this child does
            conn.close()
        except OSError:
            pass
    _served.clear()
    listener = _state["listener"]
    if listener is not None:
        listener.close()  # this process's copy; the file and the parent's socket stay
    _state.update(pid=None, address=None, listener=None, next=0)
    for c in list(_conns.values()):
        try:
            c.close()
        except OSError:
            pass
    _conns.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
