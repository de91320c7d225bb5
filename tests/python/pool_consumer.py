"""A Python process pool consumes a Rust pool's memfd (tests/tests/python_pools.rs).

    pool_consumer.py SOCKET

A worker of a ``multiprocessing`` pool (spawn) connects to the Unix stream socket SOCKET,
receives one descriptor and its memfd with ``stridemap.recv``, opens it and returns a reversed
view of it to the parent, which gets it through ``stridemap.pools`` (the worker hands on the
Rust segment: no copy). The parent prints one JSON line: the values it sees, and the mappings
that hold the data in the worker and in the parent (both must be the memfd).
"""

import json
import multiprocessing
import os
import signal
import socket
import sys

import stridemap
import stridemap.pools


def mapping_of(array):
    addr = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields[5].strip() if len(fields) > 5 else "[anonymous]"
    return "[unmapped]"


def receive(sock_path):
    """In a worker: the Rust array, reversed, and where its data lives here."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        record, fd = stridemap.recv(sock)
    try:
        a = stridemap.open(record, fd=fd)
    finally:
        os.close(fd)
    return a[::-1], mapping_of(a), os.getpid()


def main():
    signal.alarm(120)  # never outlive a test that lost track of us
    stridemap.pools.install()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2, initializer=stridemap.pools.install) as pool:
        view, worker_mapping, worker = pool.apply(receive, (sys.argv[1],))
        print(json.dumps(dict(
            values=view.ravel().tolist(), shape=list(view.shape), strides=list(view.strides),
            worker_mapping=worker_mapping, parent_mapping=mapping_of(view),
            worker=worker, parent=os.getpid(),
        )), flush=True)


if __name__ == "__main__":
    main()
