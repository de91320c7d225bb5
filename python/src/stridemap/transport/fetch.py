"""The receiving side of the fd channel (:mod:`.channel` is the sending side, :mod:`.wire` the
wire): each receiving process keeps one authenticated connection to each sender it has received
from, and asks on it for the fds its pickles name.

:meth:`ChannelFd.detach` returns the fd, received with ``MSG_CMSG_CLOEXEC`` (or taken straight
from the sender's fd table, ``pidfd_getfd``, where the kernel allows it). After any error the
connection is closed (the next request makes a new one). :meth:`ChannelFd.release` tells the
sender that no fd is needed (this process maps the segment already), into the sender's
mailbox. :func:`prune` closes the connections to senders that are gone.

After a fork the child starts with no connections (it closes its copies; the parent's stay
open): it never speaks on a socket the parent uses.

>>> ChannelFd("/nowhere", bytes(ID_SIZE)).ident == bytes(ID_SIZE)
True
"""

import errno
import hmac
import os
import secrets
import select
import socket
import struct
import time

from .. import forksafe
from ..codec import errors
from .wire import (
    _ACCEPTED,
    _FETCH,
    _FOUND,
    _HELLO,
    _MAC,
    _MAGIC,
    _MAILBOX,
    _MISSING,
    _NONCE,
    _RELEASE,
    CONNECT_DEADLINE,
    HANDSHAKE_TIMEOUT,
    ID_SIZE,
    _authkey,
    _mac,
)

_conns_lock = forksafe.Lock()
_conns = {}  # address -> _Conn


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
    prune()  # a new peer: let go of the connections to peers that are gone
    c = _Conn(address)
    with _conns_lock:
        old = _conns.setdefault(address, c)
    if old is not c:
        c.close()
    return old


_GONE = select.POLLIN | select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0x2000)


def prune():
    """Closes the idle connections whose peer has gone (a worker that exited): the peer only
    ever answers a request, so an idle connection that polls readable or hung up is at its
    end. A connection in use by another thread (its lock held) is left for the next time."""
    with _conns_lock:
        conns = list(_conns.items())
    for address, c in conns:
        if not c.lock.acquire(blocking=False):
            continue
        try:
            try:
                p = select.poll()
                p.register(c.sock.fileno(), _GONE)
                gone = bool(p.poll(0))
            except (OSError, ValueError):
                gone = True
            if gone:  # under its lock: a thread that found it in _conns waits, then sees it closed
                _drop(address, c)
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


def _after_fork_in_child():  # after forksafe's: the locks are free
    for c in list(_conns.values()):
        try:
            c.close()
        except OSError:
            pass
    _conns.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
