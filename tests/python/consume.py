"""A Python consumer for the Rust interop tests (tests/tests/python_interop.rs).

    consume.py SOCKET ROOT [--hold]

Connects to the Unix stream socket SOCKET, receives one descriptor (and the fd beside it, if
any) with the Python reader's ``recv``, opens it (by fd, or by path below ROOT) and prints one
JSON line: {"event": "mapped", ...the array...}, or {"event": "error", "rule": ...} when the
open is refused. With --hold it then keeps the array and obeys stdin lines: "read" (print the
values again), "unmap" (drop the array, collect, print {"event": "unmapped"}); it exits at EOF.
"""

import gc
import json
import os
import signal
import socket
import sys

import stridemap

signal.alarm(120)  # never outlive a test that lost track of us


def say(**fields):
    print(json.dumps(fields), flush=True)


def describe(a, desc):
    return dict(
        source=desc.source, generation=desc.generation, dtype=a.dtype.str, shape=list(a.shape),
        strides=list(a.strides), values=a.ravel().tolist(), writeable=a.flags.writeable,
        mapped=type(a.base).__name__,
    )


def main():
    sock_path, root = sys.argv[1], sys.argv[2]
    hold = "--hold" in sys.argv[3:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        record, fd = stridemap.recv(sock)
    desc = stridemap.decode(record)
    try:
        a = stridemap.open(record, fd=fd, allowed_roots=[root])
    except stridemap.errors.OpenError as e:
        say(event="error", rule=e.rule, error=type(e).__name__, message=str(e))
        return
    finally:
        if fd is not None:
            os.close(fd)  # the mapping keeps the file, and the segment's lock
    say(event="mapped", **describe(a, desc))
    if not hold:
        return
    for line in sys.stdin:
        command = line.strip()
        if command == "read":
            say(event="values", values=a.ravel().tolist())
        elif command == "unmap":
            del a
            gc.collect()
            say(event="unmapped")
        else:
            say(event="error", rule="", error="UnknownCommand", message=command)


if __name__ == "__main__":
    main()
