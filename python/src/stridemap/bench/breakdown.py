"""Where the time of one handoff goes: each step of passing a shared array through a pool's
pickle, timed on its own in this process (medians of interleaved rounds), next to what
``multiprocessing.shared_memory`` by hand does for the same array (attach by name, view, detach).

The sender's steps (``pickle`` is their sum plus pickling itself):

- ``record``: the descriptor of the view (remembered per segment for a frozen memfd);
- ``fd for the receiver``: a new open file description (``/proc/self/fd`` reopened), its
  shared lock (SPEC §7), the duplicate the channel owns;
- ``offer``: registering it with the fd channel;

the receiver's:

- ``fetch fd``: the request and the reply with the fd over the channel (here to this process's
  own serving thread: one round trip between two threads, as between two processes);
- ``checks``: O6-O10 on the fd (``fstat``, seals, allocated blocks, lock and segment header);
- ``map``: the mapping (no fd kept) and its registration;
- ``cache hit``: what a receive costs instead of all of the above when it already maps the
  segment (``transport.mapcache``: decode and lookup);
- ``unpickle (miss)`` / ``unpickle (hit)``: the whole receive.

The results path (a worker's ``stridemap.empty()`` handed back, :mod:`..segments.recycle`):

- ``empty() (new segment)`` / ``empty() (recycled)``: making the array, a new memfd (mapped,
  its pages populated above the threshold) against one taken back (two ``flock`` calls, a
  header);
- ``pickle (recycled)``: the sender's record of the next generation (patched, not described)
  and its offer;
- ``unpickle (hit, recycled)``: the receive from the kept mapping: the record decoded (its
  checksum patched), the shared lock taken again, the header read again (O10), the use;
- ``release (mailbox)``: telling the sender, into its mailbox (no wake-up).

Run alone as ``python -m stridemap.bench.breakdown``; ``python -m stridemap.bench`` prints it
after its tables.
"""

import os
import statistics
import sys
import time

import numpy as np

import stridemap
import stridemap.pools
from stridemap import reader
from stridemap.codec.decode import decode
from stridemap.segments import header
from stridemap.segments.backing import segment_of
from stridemap.transport import channel, fetch, handoff, mapcache

ROUNDS = 7
PER_ROUND = 60


def _median_us(fn, after=None, rounds=ROUNDS, per_round=PER_ROUND):
    """Median microseconds of ``fn()``; ``after(result)`` runs outside the clock."""
    samples = []
    for _ in range(rounds):
        xs = []
        for _ in range(per_round):
            t0 = time.perf_counter()
            got = fn()
            xs.append(time.perf_counter() - t0)
            if after is not None:
                after(got)
            del got
        samples.append(statistics.median(xs))
    return statistics.median(samples) * 1e6


def measure(nbytes=1 << 20):
    """``{step: microseconds}`` for an array of ``nbytes``."""
    from multiprocessing import reduction, shared_memory

    stridemap.pools.install()
    a = np.arange(nbytes // 8, dtype="<f8")
    s = stridemap.share(a)
    seg = segment_of(s)
    out = {}

    def fd_for_receiver():
        fd = seg.new_fd("r")
        header.lock_shared(fd, wait=True)
        dup = os.dup(fd)
        os.close(fd)
        os.close(dup)

    fd0 = seg.new_fd("r")
    out["record"] = _median_us(lambda: seg.describe(s, "r"))
    out["record (remembered)"] = _median_us(lambda: _remembered(s))
    out["fd for the receiver"] = _median_us(fd_for_receiver)
    dups = []
    out["offer"] = _median_us(lambda: channel.offer(dups.pop(), None),
                              after=lambda h: (os.close(h.detach()), dups.append(os.dup(fd0))),
                              ) if not dups.append(os.dup(fd0)) else 0
    for fd in dups:
        os.close(fd)
    out["fetch fd"] = _median_us(lambda: os.close(channel.offer(os.dup(fd0), None).detach()))
    record = seg.describe(s, "r")
    desc = decode(record)

    def checks():
        reader._check_file(fd0, desc)
        reader._check_seals(fd0, False)
        reader._check_allocated(fd0, desc)
        header.enter(fd0, desc)

    out["checks"] = _median_us(checks)
    out["map"] = _median_us(lambda: reader._map(fd0, desc, "r"))
    key = mapcache.key_of("bench", desc, "r", False)
    kept = reader._map(fd0, desc, "r")
    mapcache.remember(key, kept)
    out["cache hit"] = _median_us(lambda: mapcache.lookup(key, decode(record)))
    mapcache.clear()
    del kept
    dumps, loads = reduction.ForkingPickler.dumps, reduction.ForkingPickler.loads
    out["pickle"] = _median_us(lambda: dumps(s), after=loads)
    ready = []
    out["unpickle (miss)"] = _median_us(
        lambda: loads(ready.pop()),
        after=lambda _: (mapcache.clear(), ready.append(dumps(s)))) \
        if not ready.append(dumps(s)) else 0
    mapcache.clear()
    hold = loads(ready.pop())
    ready.append(dumps(s))
    out["unpickle (hit)"] = _median_us(lambda: loads(ready.pop()),
                                       after=lambda _: ready.append(dumps(s)))
    del hold
    for data in ready:
        loads(data)
    os.close(fd0)

    out.update(_results(nbytes))

    block = shared_memory.SharedMemory(create=True, size=nbytes)
    try:
        def attach():
            shm = shared_memory.SharedMemory(block.name, **_untracked())
            v = np.ndarray((nbytes // 8,), dtype="<f8", buffer=shm.buf)
            del v
            shm.close()
        out["shared_memory: attach, view, detach"] = _median_us(attach)
    finally:
        block.close()
        block.unlink()
    return out


def _results(nbytes):
    """The results path's steps (module docstring), in this process."""
    from multiprocessing import reduction

    from stridemap.segments import recycle

    n = nbytes // 8
    out = {}
    recycle.clear()
    saved = recycle.MAX_BYTES
    recycle.MAX_BYTES = 0  # new segments only
    try:
        out["empty() (new segment)"] = _median_us(lambda: stridemap.empty(n, "<f8"),
                                                  rounds=3, per_round=10)
    finally:
        recycle.MAX_BYTES = saved
    out["empty() (recycled)"] = _median_us(lambda: stridemap.empty(n, "<f8"))
    dumps, loads = reduction.ForkingPickler.dumps, reduction.ForkingPickler.loads

    def pickled():
        return dumps(stridemap.empty(n, "<f8"))

    loads(pickled())  # mapped once, kept
    arrays = [stridemap.empty(n, "<f8")]

    def received(data):  # received and dropped (the receiver's lock let go), the next made
        loads(data)
        arrays.append(stridemap.empty(n, "<f8"))

    out["pickle (recycled)"] = _median_us(lambda: dumps(arrays.pop()), after=received)
    arrays.clear()
    ready = [pickled()]
    out["unpickle (hit, recycled)"] = _median_us(lambda: loads(ready.pop()),
                                                 after=lambda _: ready.append(pickled()))
    for data in ready:
        loads(data)
    c = fetch._connection(channel._listening())
    ident = bytes(channel.ID_SIZE)

    def release():
        with c.lock:
            c.release(ident)

    out["release (mailbox)"] = _median_us(release)
    mapcache.clear()
    recycle.clear()
    return out


def _remembered(s):
    ex = handoff._export_remembered(*handoff._remembered_record(s, "r"), "r")
    os.close(ex.fd)


def _untracked():
    return {"track": False} if sys.version_info >= (3, 13) else {}


def print_table(out=sys.stdout, nbytes=1 << 20):
    from .pools import print_table as table

    m = measure(nbytes)
    table(out, f"Where a handoff's time goes ({nbytes >> 20} MiB, one process, medians in us; "
          "`pickle` and `unpickle` include the steps above them):", ("step", "us"), "lr",
          [(k, f"{v:.1f}") for k, v in m.items()])
    return m


if __name__ == "__main__":
    print_table()
