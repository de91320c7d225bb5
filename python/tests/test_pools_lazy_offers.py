"""The fd of a segment goes once to each receiver (issue #21): once every process connected to
the sender's fd channel maps a frozen memfd segment (it fetched or released an offer of it),
later handoffs of it are lazy offers, which hold no fd in the sender; the fd is made only for a
receiver that asks (its mapping went, or it is new).

Each case runs in a fresh interpreter: it counts the sender's fds and its offers, which it owns.
"""

import os
import subprocess
import sys

SCRIPT = r"""
import multiprocessing, os, sys, time
import numpy as np, stridemap, stridemap.pools
from stridemap.transport import channel


def first(a):
    return float(a[0])


def gate(path, a):
    while not os.path.exists(path):  # the parent pickles every task before this one ends
        time.sleep(0.01)
    return float(a[0])


def fds():
    return len(os.listdir("/proc/self/fd"))


def lazy():
    return sum(entry[0] is None for entry in list(channel._offered.values()))


if __name__ == "__main__":
    stridemap.pools.install()
    gate_path = sys.argv[1]
    a = stridemap.share(np.arange(1000.0))
    with multiprocessing.get_context("spawn").Pool(
            1, initializer=stridemap.pools.install) as pool:
        assert pool.apply(first, (a[3:],)) == 3.0  # the worker maps the segment now
        base = fds()
        blocker = pool.apply_async(gate, (gate_path, a[1:]))
        queued = [pool.apply_async(first, (a[i:],)) for i in range(2, 52)]
        time.sleep(1.0)  # the task handler has pickled them into the pool's pipe
        print("lazy offers", lazy())
        print("fds held for 51 queued tasks", fds() - base)
        open(gate_path, "w").close()
        got = [r.get(60) for r in queued] + [blocker.get(60)]
        print("results right", got == [float(i) for i in range(2, 52)] + [1.0])
        deadline = time.monotonic() + 30
        while channel.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        print("offered at the end", channel.pending())
"""


def _run(tmp_path, grace):
    script = tmp_path / "lazy.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "gate")],
                         capture_output=True, text=True, timeout=240,
                         env={**os.environ, "STRIDEMAP_MAP_GRACE": grace})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    print(out.stdout)
    return dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())


def test_a_segment_the_receiver_maps_is_offered_without_an_fd(tmp_path):
    got = _run(tmp_path, "1.0")
    assert int(got["lazy offers"]) >= 40, got  # of 51: a few may be received already
    assert int(got["fds held for 51 queued tasks"]) <= 2, got  # not one per queued task
    assert got["results right"] == "True"
    assert got["offered at the end"] == "0"


def test_a_receiver_whose_mapping_went_gets_the_fd_made_for_it(tmp_path):
    """With no grace the worker lets go of the segment after each task: every lazy offer is a
    miss there, and the sender makes the fd when the worker asks."""
    got = _run(tmp_path, "0")
    assert int(got["lazy offers"]) >= 40, got  # of 51: a few may be received already
    assert got["results right"] == "True"
    assert got["offered at the end"] == "0"


class _Segment:
    """Stands for a segment the offers are of (weakly referable)."""


def test_a_handoff_of_a_segment_every_peer_maps_reads_no_mailbox(monkeypatch):
    """Reading the mailboxes is a system call or two and an exception per peer (tens of
    microseconds on a CPU just woken): a sender that knows already that every peer maps the
    segment does not read them, nor one that never offered it (a new segment); one that
    offered it and does not know reads them, and learns from them."""
    from stridemap.transport import channel

    reads = []
    learned = []

    def drain(defer=False):
        reads.append(defer)
        for seg, pid in learned:
            channel._holders.setdefault(seg, set()).add(pid)
        return len(learned)

    peer, known, news, never = object(), _Segment(), _Segment(), _Segment()
    monkeypatch.setattr(channel, "drain_mailboxes", drain)
    monkeypatch.setitem(channel._state, "pid", os.getpid())
    monkeypatch.setattr(channel, "_served", {peer: 4242})
    monkeypatch.setattr(channel, "_holders", __import__("weakref").WeakKeyDictionary())
    channel._holders[known] = {4242}
    channel._holders[news] = set()  # offered, no release read yet

    assert channel.mapped_by_every_peer(known)
    assert reads == []  # known: no mailbox read
    assert not channel.mapped_by_every_peer(never)
    assert reads == []  # never offered: no release can be of it
    assert not channel.mapped_by_every_peer(news)
    assert reads == [True]  # not known: read once, and nothing in them says so
    learned.append((news, 4242))
    assert channel.mapped_by_every_peer(news)  # a release in a mailbox says so
    assert reads == [True, True]
    monkeypatch.setattr(channel, "_served", {peer: 4242, object(): 4343})
    assert not channel.mapped_by_every_peer(known)  # a new peer: read, and not every peer


def test_lazy_offers_read_the_mailboxes_once_a_pile_waits(monkeypatch):
    """A lazy offer needs nothing from the mailboxes, but released lazy offers wait there (each
    holds its array) until something reads them: once LAZY_PILE offers wait, a lazy offer reads
    them too, so they never pile up beyond that between two wakes of the serving thread."""
    from stridemap.transport import channel

    reads = []
    monkeypatch.setattr(channel, "drain_mailboxes", lambda defer=False: reads.append(defer) or 0)
    monkeypatch.setattr(channel, "_offered", {})
    seg = _Segment()
    made = [channel.offer(None, object(), seg, make=lambda: None, drained=True)
            for _ in range(channel.LAZY_PILE)]
    assert reads == [] and len(channel._offered) == channel.LAZY_PILE
    made.append(channel.offer(None, object(), seg, make=lambda: None, drained=True))
    assert reads == [True]
    r, w = os.pipe()
    os.close(w)
    channel.offer(r, object(), seg)  # an offer holding an fd reads them whatever waits
    assert reads == [True, True]
    channel.withdraw([h.ident for h in made] + list(channel._offered))
