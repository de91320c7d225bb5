"""Sending a descriptor and, for an fd source, its file descriptor over a Unix socket.

On a message socket (``SOCK_SEQPACKET``, ``SOCK_DGRAM``) one message carries one descriptor of
either form. On a stream socket (``SOCK_STREAM``) the descriptors are fixed records, back to
back, 1024 bytes each. The fd travels as ``SCM_RIGHTS`` with the message (its first byte).

>>> import socket
>>> a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
>>> send(a, b"\\x89SMC...")
>>> recv(b)
(b'\\x89SMC...', None)
"""

import array
import os
import socket

from ..codec.record import SIZE, BytesLike

_MAX_MESSAGE = 1 << 16
_FD_SIZE = array.array("i").itemsize


def send(sock: socket.socket, desc_bytes: BytesLike, fd: int | None = None) -> None:
    """Send one descriptor's bytes, with ``fd`` beside it when given."""
    data = bytes(desc_bytes)
    stream = sock.type == socket.SOCK_STREAM
    if stream and len(data) != SIZE:
        raise ValueError("a stream socket carries fixed records (1024 bytes) only")
    sent = socket.send_fds(sock, [data], [] if fd is None else [fd])
    if sent < len(data):
        if not stream:
            raise OSError(f"sent {sent} of {len(data)} bytes of a message")
        sock.sendall(data[sent:])


def recv(sock: socket.socket) -> tuple[bytes, int | None]:
    """Receive one descriptor: ``(desc_bytes, fd)``, ``fd`` None when none came with it.

    A received fd is close-on-exec and belongs to the caller. Raises ``EOFError`` when the
    peer has closed the socket.
    """
    stream = sock.type == socket.SOCK_STREAM
    # socket.recv_fds would drop MSG_CMSG_CLOEXEC (Python 3.11 ignores its flags argument).
    data, ancillary, flags, _ = sock.recvmsg(
        SIZE if stream else _MAX_MESSAGE, socket.CMSG_SPACE(_FD_SIZE), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds.frombytes(payload[:len(payload) - len(payload) % _FD_SIZE])
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise OSError("a message or its file descriptors did not fit and were cut")
        if not data:
            raise EOFError("the peer closed the socket")
        while stream and len(data) < SIZE:
            more = sock.recv(SIZE - len(data))
            if not more:
                raise EOFError("the peer closed the socket in the middle of a record")
            data += more
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return data, (fds[0] if fds else None)
