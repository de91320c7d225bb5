"""send()/recv(): descriptors and fds over Unix sockets, within a process and across two."""

import fcntl
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import stridemap
from stridemap import Descriptor, encode, encode_compact


def sealed_memfd(values):
    fd = os.memfd_create("fdpass", os.MFD_ALLOW_SEALING)
    os.write(fd, np.asarray(values, "<i8").tobytes())
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def fd_record(fd, n, enc=encode):
    st = os.fstat(fd)
    return enc(Descriptor(dtype="<i8", shape=(n,), strides=(-8,), offset=8 * (n - 1),
                          buffer_len=8 * n, file_len=8 * n, source="fd",
                          device=st.st_dev, inode=st.st_ino))


@pytest.mark.parametrize("kind", [socket.SOCK_SEQPACKET, socket.SOCK_STREAM])
def test_send_recv_with_an_fd(kind):
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    fd = sealed_memfd(range(5))
    with a, b:
        stridemap.send(a, fd_record(fd, 5), fd)
        os.close(fd)
        rec, got = stridemap.recv(b)
        assert fcntl.fcntl(got, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        arr = stridemap.open(rec, fd=got)
        os.close(got)
        assert arr.tolist() == [4, 3, 2, 1, 0]


def test_compact_over_seqpacket_and_without_fd():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = sealed_memfd(range(3))
    with a, b:
        rec = fd_record(fd, 3, encode_compact)
        stridemap.send(a, rec)
        assert stridemap.recv(b) == (rec, None)
        with pytest.raises(ValueError):
            stridemap.send(socket.socketpair()[0], rec)  # a stream carries fixed records only
        a.close()
        with pytest.raises(EOFError):
            stridemap.recv(b)
    os.close(fd)


def test_across_processes(tmp_path):
    """A child process makes a sealed memfd and sends it; this process maps it."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    script = textwrap.dedent(f"""
        import os, socket, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_fdpass import fd_record, sealed_memfd
        import stridemap
        sock = socket.socket(fileno={child.fileno()})
        fd = sealed_memfd(range(100, 110))
        stridemap.send(sock, fd_record(fd, 10), fd)
        sock.recv(1)  # wait until the parent has mapped it
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], pass_fds=[child.fileno()])
    child.close()
    with parent:
        rec, fd = stridemap.recv(parent)
        arr = stridemap.open(rec, fd=fd)
        os.close(fd)
        parent.send(b"k")
        assert proc.wait(timeout=30) == 0
        assert arr.tolist() == list(range(109, 99, -1))  # still mapped after the child exits
