"""Issue #21: releases travel to the sender's mailbox (transport.channel), which it reads when
it needs to know, not at once; a full mailbox sends them on the connection itself."""

import pickle
import time
from multiprocessing import reduction

import numpy as np

import stridemap
import stridemap.pools
from stridemap.transport import channel, fetch, mapcache

dumps = reduction.ForkingPickler.dumps


def _settled(what, deadline=5.0):
    end = time.monotonic() + deadline
    while not what():
        assert time.monotonic() < end, "not within the deadline"
        time.sleep(0.01)


def test_a_release_goes_to_the_mailbox_and_is_acted_on():
    stridemap.pools.install()
    mapcache.clear()
    a = stridemap.share(np.arange(1000.0))
    first = pickle.loads(dumps(a))  # fetched: the mapping is kept
    again = pickle.loads(dumps(a))  # a hit: released, to the mailbox
    assert again.tolist() == a.tolist()
    [c] = [c for c in fetch._conns.values() if c.address == channel._listening()]
    assert c.mailbox, "no mailbox was made for the release"
    _settled(lambda: channel._mailboxes)  # the sender takes it as its mailbox
    assert channel.pending() == 0  # read when counted
    held = pickle.loads(dumps(a))  # and without anyone asking: the serving thread reads it
    _settled(lambda: not channel._offered)
    del first, again, held


class _Full:
    """A mailbox whose buffer is full."""

    def send(self, data, flags=0):
        raise BlockingIOError

    def close(self):
        pass


def test_a_full_mailbox_sends_on_the_connection():
    stridemap.pools.install()
    mapcache.clear()
    a = stridemap.share(np.arange(1000.0))
    first = pickle.loads(dumps(a))
    [c] = [c for c in fetch._conns.values() if c.address == channel._listening()]
    real, c.mailbox = c.mailbox, _Full()
    try:
        channel.drain_mailboxes()
        with channel._mailboxes_lock:  # nobody reads the mailboxes now: only the connection
            again = pickle.loads(dumps(a))  # can bring the release
            _settled(lambda: not channel._offered)
    finally:
        c.mailbox = real
    assert again.tolist() == a.tolist()
    del first, again
