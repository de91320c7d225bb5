"""Dask distributed with same-host zero-copy transfers: numpy arrays travel between workers as
stridemap descriptors of named segments instead of bytes over TCP.

Install it in one of two ways (both do the same thing in each worker):

- a worker plugin, from the client: ``client.register_plugin(stridemap.dask.StridemapPlugin())``
  (:func:`install` does that);
- a preload: ``dask worker SCHEDULER --preload stridemap.dask`` (or ``preload=["stridemap.dask"]``
  for ``LocalCluster``, or ``distributed.worker.preload`` in the Dask config).

**Who shares with whom.** A worker publishes a sharing token in the handshake of every
connection it makes or accepts (``"stridemap-token"``, next to Dask's own ``compression`` and
``pickle-protocol``). Dask passes that handshake to serializers as ``context["recipient"]``
(``distributed/comm/tcp.py``). The token's public part names the boot id, the device and inode
of the temp root its segments live in, and the uid; its proof is an HMAC, with a key only the
user's processes can read (``<root>/.stridemap-dask-<uid>/key``, 0700 folder, 0600 file), of
that public part and of the connection's two ends (:mod:`.dask_trust`). A sender describes an
array only when the recipient's public part equals its own (same boot, same temp root: not a
container's separate ``/dev/shm``, same user) and its proof is right for this connection.

What the token proves: that the peer is a process that read this user's key for this temp
root on this host, on this very connection (a token copied from another connection, or
reflected back, proves nothing). It does not prove that the peer belongs to the same Dask
cluster (two clusters of one user on one host may share), nor anything about who may talk to
the workers at all: that is Dask's own security (TLS), and without it any peer that reaches a
worker can run code in it. A sender's descriptors are signed with the key, and a receiver
opens only a signed descriptor of a segment of its own uid in a private (0700, not a link)
pool folder of its own uid in its temp root (:class:`DescriptorRefused` otherwise).

Everything else declines and takes Dask's normal path, unchanged: another host or temp root,
a peer without stridemap or with an unproven token, spilling to disk (no recipient), arrays
below ``min-bytes``, dtypes without a stridemap typestr (objects, strings, datetimes, records).

**Where it hooks.** The module wraps the ``dask`` serialization family's entry for numpy
arrays (``dask_serialize``/``dask_deserialize`` of ``np.ndarray``); declining hands the array to
numpy's own entry, which is Dask's normal path. (A family of its own would have to be named in
the ``serializers`` list of every connection, a list the requesting peer sends with each
request; the ``dask`` family is in every default list, and a peer without stridemap never
gets a descriptor because it publishes no token.)

**Zero copies where the data already is.** An array backed by a stridemap segment (received
through stridemap, or made with :func:`stridemap.empty`/:func:`stridemap.share`) is described
again without copying, views included (a slice or a transpose travels as a view of the same
segment). A plain array is copied once into a named segment of the worker's private
``stridemap-*`` folder; the same array object reuses that segment for every recipient, and the
worker's own copy of the key is replaced by the segment (read-only), so the worker holds the
bytes once. Segments follow SPEC §7: one lives while its worker holds the array and while any
reader maps it.

**When a segment is gone.** A reader that cannot open a segment (removed, recycled: O10,
replaced: O8) raises :class:`TransferFallback`, an ``OSError``: the worker's ``gather_dep``
treats it as a failed connection and fetches the key again, and the next connection to that
peer is made without the token, so that fetch takes the normal path. No task fails for it. A
descriptor the receiver refuses (:class:`DescriptorRefused`, a ``TransferFallback``) goes the
same way, with a warning.

**Truncation.** A named segment cannot be sealed: a process that truncates it while a reader
maps it makes the reader fault (SIGBUS). Only the receiver's own uid can: the receiver maps
only files of its uid in 0700 folders of its uid. A process of that uid can kill or ptrace
the worker anyway; the uid is the trust boundary (:mod:`.dask_trust`).

**Memory accounting.** :func:`dask.sizeof.sizeof` of an array that maps another process's
segment is 0: the pages are counted once per host, by the worker that holds the segment (its
producer, which counts the array in full), so Dask's memory manager does not count them once
more in every reader and spill because of it. The worker's process memory (RSS, what its spill
and pause thresholds and the scheduler see) leaves out the peers' pages it maps, likewise. The
nanny's terminate threshold reads RSS itself and still counts them (see the README's limits).

**Counters.** :func:`stats` (``client.run(stridemap.dask.stats)``) returns this process's
counters: arrays and bytes sent and received as descriptors, plain arrays copied into
segments, fallbacks by reason, and bytes not copied. Every transfer and fallback is logged at
debug level on the ``stridemap.dask`` logger.

>>> import stridemap.dask as sd
>>> t = sd.token("/dev/shm")
>>> t.startswith("stridemap-2:") and sd.token("/dev/shm") == t
True
"""

import errno
import logging
import mmap
import os
import tempfile
import time
import weakref
from collections import Counter
from typing import Any

import numpy as np
from dask.sizeof import sizeof as _sizeof_dispatch
from distributed import Client, Worker
from distributed.comm.core import Comm
from distributed.core import Server
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol import numpy as _dask_numpy  # noqa: F401 - numpy's dask serializer
from distributed.protocol.serialize import dask_deserialize, dask_serialize

import stridemap

from .. import forksafe
from ..codec.rules import KINDS
from ..segments.header import read_header
from . import dask_trust as trust
from .dask_trust import DescriptorRefused, TransferFallback

log = logging.getLogger("stridemap.dask")

TOKEN_KEY = "stridemap-token"
# This process's view of a connection's ends, kept in the handshake it sends (Dask hands it to
# serializers as context["sender"]): the recipient's proof is checked against it.
ENDS_KEY = "stridemap-ends"
HEADER_KEY = "stridemap"
DEFAULT_MIN_BYTES = 1 << 20
# How long after a failed open the connections this worker makes to that peer carry no token.
DEGRADE_SECONDS = 30.0

__all__ = [
    "DescriptorRefused",
    "StridemapPlugin",
    "TransferFallback",
    "activate",
    "deactivate",
    "install",
    "stats",
    "token",
    "dask_setup",
    "dask_teardown",
]


# ---------------------------------------------------------------------------------------------
# The sharing token
# ---------------------------------------------------------------------------------------------

def default_root(temp_folder: str | os.PathLike[str] | None = None) -> str:
    """The temp root this process's segments go to: ``temp_folder``, else the Dask config
    ``stridemap.dask.temp-folder``, else ``$STRIDEMAP_TEMP_FOLDER``, else ``/dev/shm`` when it
    is writable, else the system temp dir (the producer's policy, without the room test:
    segments that do not fit take Dask's normal path)."""
    import dask

    for chosen in (temp_folder, dask.config.get("stridemap.dask.temp-folder", None),
                   os.environ.get("STRIDEMAP_TEMP_FOLDER") or None):
        if chosen:
            return os.path.realpath(os.fspath(chosen))
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return os.path.realpath("/dev/shm")
    return os.path.realpath(tempfile.gettempdir())


def token(root: str | os.PathLike[str] | None = None) -> str | None:
    """The public part of this process's sharing token for segments below ``root`` (default:
    :func:`default_root`): ``stridemap-2:<boot id>:<device>:<inode>:<uid>``, or None when the
    boot id or the root cannot be read (then nothing is shared). Anyone can compute it: the
    handshake adds a proof per connection that only holders of the user's key can make."""
    return trust.public_token(default_root() if root is None else root)


def _typestr_ok(dt):
    return dt.fields is None and dt.subdtype is None and dt.kind in KINDS and not dt.hasobject


# ---------------------------------------------------------------------------------------------
# Per-process state
# ---------------------------------------------------------------------------------------------

class _Entry:
    """A plain array copied into a segment: the segment lives while the array does."""

    __slots__ = ("ref", "shared", "folder")

    def __init__(self, array, shared, folder):
        self.ref = weakref.ref(array)
        self.shared = shared
        self.folder = folder


class _Stats:
    def __init__(self):
        self.lock = forksafe.Lock()
        self.counts = Counter()
        self.fallbacks = Counter()

    def add(self, **kw):
        with self.lock:
            self.counts.update(kw)

    def fallback(self, reason):
        with self.lock:
            self.fallbacks[reason] += 1

    def snapshot(self):
        with self.lock:
            c = dict(self.counts)
            fb = dict(self.fallbacks)
        out = {k: c.get(k, 0) for k in (
            "sent", "sent_bytes", "redescribed", "copied", "copied_bytes", "received",
            "received_bytes", "swapped")}
        out["fallbacks"] = fb
        out["bytes_not_copied"] = out["sent_bytes"] - out["copied_bytes"] + out["received_bytes"]
        return out


class _State:
    """What an activated process shares with: its root, token, threshold and the arrays it
    copied into segments."""

    def __init__(self, root, min_bytes, worker):
        self.root = root
        self.public = token(root)
        self.key = None
        if self.public is not None:
            try:
                self.key = trust.load_key(root)
            except OSError as e:
                log.warning("stridemap.dask: no key to prove the sharing token (%s): arrays "
                            "take Dask's normal path", e)
        self.warned = set()  # peers whose unproven tokens were logged
        self.min_bytes = int(min_bytes)
        self.worker = weakref.ref(worker) if worker is not None else (lambda: None)
        self.lock = forksafe.RLock()
        self.entries = {}  # id(array) -> _Entry
        self.degraded = {}  # peer address -> monotonic time until which no token is sent

    @property
    def token(self):
        """The public part of the token, or None when this process cannot share."""
        return self.public if self.key is not None else None

    def proof(self, mine, theirs):
        """The token this process sends on a connection with these ends (its own first)."""
        return trust.prove(self.key, self.public, mine, theirs)

    # -- sending ------------------------------------------------------------------------------

    def decline_reason(self, x, context):
        if not context or not isinstance(context.get("recipient"), dict):
            return "no-recipient"  # spilling to disk, or a comm that passes no context
        if self.token is None:
            return "no-token"
        recipient = context["recipient"]
        theirs = recipient.get(TOKEN_KEY)
        if theirs is None:
            return "peer-without-stridemap"
        reason = trust.mismatch(self.public, theirs)
        sender = context.get("sender")
        ends = sender.get(ENDS_KEY) if isinstance(sender, dict) else None
        if reason is None and not trust.proven(self.key, self.public, theirs, ends):
            reason = "unproven-token"
        if reason == "unproven-token":
            peer = recipient.get("address")
            if peer not in self.warned and len(self.warned) < 1024:
                self.warned.add(peer)
                log.warning("stridemap.dask: the peer %s presented a sharing token that does "
                            "not prove this user's key on this connection: it gets arrays by "
                            "Dask's normal path", peer)
        if reason is not None:
            return reason
        if x.nbytes < self.min_bytes:
            return "small"
        if not _typestr_ok(x.dtype):
            return "dtype"
        if x.ndim > 32:
            return "ndim"
        return None

    def dumps(self, x, context):
        reason = self.decline_reason(x, context)
        if reason is not None:
            if reason != "no-recipient" or x.nbytes >= self.min_bytes:
                STATS.fallback(reason)
                log.debug("stridemap.dask: %s array %s of %d bytes takes the normal path (%s)",
                          x.dtype, x.shape, x.nbytes, reason)
            return None
        try:
            record, folder, copied = self.describe(x)
        except stridemap.NoSpace as e:
            STATS.fallback("no-space")
            log.debug("stridemap.dask: no room to share %s array %s: %s", x.dtype, x.shape, e)
            return None
        except (stridemap.StridemapError, OSError) as e:
            STATS.fallback("share-failed")
            log.debug("stridemap.dask: cannot share %s array %s: %s", x.dtype, x.shape, e)
            return None
        w = self.worker()
        header = {HEADER_KEY: 1, "folder": folder, "from": getattr(w, "address", None)}
        trust.sign(self.key, self.public, header, record)
        STATS.add(sent=1, sent_bytes=x.nbytes, redescribed=0 if copied else 1)
        log.debug("stridemap.dask: sent %s array %s (%d bytes) as a descriptor%s",
                  x.dtype, x.shape, x.nbytes, " (copied once)" if copied else "")
        return header, [record]

    def describe(self, x):
        """``(record, pool folder, copied)``: the descriptor of ``x``, the folder its segment
        lives in, and whether this call copied ``x`` into a new segment."""
        found = self._in_place(x)
        if found is not None:
            return found + (False,)
        with self.lock:
            entry = self.entries.get(id(x))
            if entry is not None and entry.ref() is x and _intact(segment_of(entry.shared)):
                ex = stridemap.export(entry.shared)
                return ex.record, entry.folder, False
            shared = stridemap.share(x, kind="file", temp_folder=self.root, reuse=False)
            view = shared.view(np.ndarray)
            seg = segment_of(view)
            entry = _Entry(x, view, os.path.dirname(seg.path))
            self.entries[id(x)] = entry
            weakref.finalize(x, self._forget, id(x), entry).atexit = False
        STATS.add(copied=1, copied_bytes=x.nbytes)
        self._swap_later(x, view)
        return stridemap.export(view).record, entry.folder, True

    def _in_place(self, x):
        """``(record, folder)`` of ``x`` in the segment that already backs it, when that is an
        intact named file in a pool folder of this temp root (anything else is copied)."""
        seg = segment_of(x)
        if seg is None or seg.kind != "file" or not seg.path:
            return None
        folder = _pool_folder(seg.path, self.root)
        if folder is None or not _intact(seg):
            return None
        ex = stridemap.export(x, mode="r")
        ex.close()
        return ex.record, folder

    def _forget(self, key, entry):
        with self.lock:
            if self.entries.get(key) is entry:
                del self.entries[key]

    def _swap_later(self, x, view):
        """Replace ``x`` by ``view`` wherever the worker holds it, in the event loop (which
        owns ``worker.data``), so the worker keeps the bytes once."""
        w = self.worker()
        if w is None:
            return
        ref = weakref.ref(x)
        del x

        def swap():
            x = ref()
            if x is None:
                return
            data = w.data
            fast = getattr(data, "fast", data)
            fast = getattr(fast, "d", fast)
            keys = [k for k, v in list(fast.items()) if v is x]
            for k in keys:
                data[k] = view
            if keys:
                STATS.add(swapped=len(keys))

        try:
            w.loop.add_callback(swap)
        except Exception as e:  # a closing loop: nothing to swap
            log.debug("stridemap.dask: cannot schedule the swap: %s", e)

    # -- receiving ----------------------------------------------------------------------------

    def is_degraded(self, peer):
        until = self.degraded.get(peer)
        if until is None:
            return False
        if time.monotonic() >= until:
            self.degraded.pop(peer, None)
            return False
        return True


STATS = _Stats()
_STATE = None
_STATE_LOCK = forksafe.Lock()


def segment_of(x):
    return stridemap.segment_of(x)


def _intact(seg):
    """Whether the named file of a segment this process maps is still that segment: same
    device and inode, same length, and a header of the same id and generation (nobody removed,
    replaced or recycled it under us; a receiver would refuse it, O8/O10)."""
    if seg is None or not seg.path:
        return False
    desc = getattr(seg, "_desc", None)  # a segment opened from a peer's descriptor
    if desc is not None:
        identity, file_len = (desc.device, desc.inode), desc.file_len
    else:
        identity, file_len = getattr(seg, "identity", None), getattr(seg, "file_len", None)
    try:
        fd = os.open(seg.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity or st.st_size != file_len:
            return False
        header = read_header(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return (header is not None and header.segment_id == seg.segment_id
            and header.generation == seg.generation)


def _is_pool_folder(folder, root):
    """Whether ``folder`` is ``<root>/stridemap-<pid>-<start>-<uuid>``."""
    from ..segments.roots import parse_folder_name

    parent, name = os.path.split(folder)
    return parent == root and parse_folder_name(name) is not None


def _pool_folder(path, root):
    """The pool folder holding the file ``path`` when it is a pool folder of ``root``, else
    None."""
    if not path:
        return None
    folder = os.path.dirname(path)
    return folder if _is_pool_folder(folder, root) else None


# ---------------------------------------------------------------------------------------------
# The serializer, the deserializer and sizeof (registered at import; inactive until activate())
# ---------------------------------------------------------------------------------------------

_numpy_serialize = dask_serialize.dispatch(np.ndarray)
_numpy_deserialize = dask_deserialize.dispatch(np.ndarray)
_numpy_sizeof = _sizeof_dispatch.dispatch(np.ndarray)


@dask_serialize.register(np.ndarray)
def _serialize(x, context=None):
    st = _STATE
    if st is not None:
        try:
            out = st.dumps(x, context)
        except Exception as e:  # never let sharing break a transfer
            STATS.fallback("error")
            log.warning("stridemap.dask: sharing a %s array %s failed, sending it normally: %r",
                        x.dtype, x.shape, e)
            out = None
        if out is not None:
            return out
    return _numpy_serialize(x, context=context)


@dask_deserialize.register(np.ndarray)
def _deserialize(header, frames):
    if header.get(HEADER_KEY) is None:
        return _numpy_deserialize(header, frames)
    return _open_received(header, frames)


def _open_received(header, frames):
    st = _STATE
    peer = header.get("from")
    try:
        record = bytes(frames[0]) if frames else b""
        if st is None or st.key is None:
            raise DescriptorRefused(
                "refused-inactive", f"a descriptor from {peer!r} reached a process that does "
                "not share (stridemap.dask is not active here, or has no key)")
        trust.check_signature(st.key, st.public, header, record)
        view = _open(record, header.get("folder"))
    except DescriptorRefused as e:
        STATS.fallback(e.reason)
        if st is not None and peer:
            st.degraded[peer] = time.monotonic() + DEGRADE_SECONDS
        log.warning("stridemap.dask: %s; the key is fetched again by the normal path", e)
        raise
    except (stridemap.StridemapError, OSError) as e:
        reason = _open_failure_reason(e)
        STATS.fallback(reason)
        if st is not None and peer:
            st.degraded[peer] = time.monotonic() + DEGRADE_SECONDS
        log.info("stridemap.dask: a segment from %s could not be opened (%s: %s); the key is "
                 "fetched again by the normal path", peer, reason, e)
        raise TransferFallback(
            getattr(e, "errno", None) or errno.ESTALE,
            f"stridemap: the segment from {peer} could not be opened ({reason}: {e}); Dask "
            "fetches the key again by its normal path",
        ) from e
    _track_peer_mapping(view)
    STATS.add(received=1, received_bytes=view.nbytes)
    log.debug("stridemap.dask: received %s array %s (%d bytes) from %s by mapping", view.dtype,
              view.shape, view.nbytes, peer)
    return view


def _open(record, folder):
    """Opens a received, signed descriptor whose header names ``folder``, with the checks of
    :func:`.dask_trust.open_received` (a module-level function, so that tests can fault it)."""
    st = _STATE
    return trust.open_received(record, folder, st.root if st is not None else default_root())


def _open_failure_reason(e):
    if isinstance(e, stridemap.StaleSegment):
        return "stale-segment"
    if isinstance(e, stridemap.SegmentBusy):
        return "segment-busy"
    if isinstance(e, stridemap.OpenFailed) and e.errno == errno.ENOENT:
        return "segment-gone"
    if isinstance(e, (stridemap.IdentityMismatch, stridemap.LengthMismatch)):
        return "segment-replaced"
    return "open-failed"


@_sizeof_dispatch.register(np.ndarray)
def _sizeof(x):
    n = _numpy_sizeof(x)
    if n < 4096 or _STATE is None:
        return n
    seg = segment_of(x)
    if seg is None:
        return n
    return 0 if _is_peer_segment(seg) else n


def _is_peer_segment(seg):
    """Whether a segment was made by another process (this one only maps it)."""
    from ..segments.roots import parse_folder_name

    path = getattr(seg, "path", None)
    if not path:
        return False
    parsed = parse_folder_name(os.path.basename(os.path.dirname(path)))
    return parsed is not None and parsed[0] != os.getpid()


# ---------------------------------------------------------------------------------------------
# Process memory: Dask's monitor reads RSS, which counts a peer's pages in every reader
# ---------------------------------------------------------------------------------------------

_peer_lock = forksafe.Lock()
_peer_mapped = [0]  # bytes of peers' segments this process maps now


def _track_peer_mapping(view):
    """Count the mapping behind a received view until it is unmapped."""
    obj = view
    while obj is not None and not isinstance(obj, mmap.mmap):
        obj = getattr(obj, "base", None)
    if obj is None:
        return
    size = len(obj)
    with _peer_lock:
        _peer_mapped[0] += size
    weakref.finalize(obj, _untrack_peer_mapping, size).atexit = False


def _untrack_peer_mapping(size):
    with _peer_lock:
        _peer_mapped[0] -= size


def _rss_shmem():
    """Resident shared memory (tmpfs, /dev/shm) mapped by this process, from
    ``/proc/self/status``; 0 where that is not available."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssShmem:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peer_resident_bytes():
    """What this process's RSS counts of other workers' segments, at most: the size of the
    peer mappings it holds, bounded by its resident shared memory."""
    peer = _peer_mapped[0]
    return min(peer, _rss_shmem()) if peer > 0 else 0


def _patch_monitor(worker):
    """Make the worker's process memory (what its spill and pause thresholds, and the
    scheduler, see) leave out the pages of peers' segments it maps: their owner counts them."""
    monitor = getattr(worker, "monitor", None)
    if monitor is None or "get_process_memory" in vars(monitor):
        return
    plain = monitor.get_process_memory

    def get_process_memory():
        return max(plain() - peer_resident_bytes(), 0)

    monitor.get_process_memory = get_process_memory


def _unpatch_monitor(worker):
    monitor = getattr(worker, "monitor", None)
    if monitor is not None and "get_process_memory" in vars(monitor):
        del monitor.get_process_memory


# ---------------------------------------------------------------------------------------------
# The handshake: the token travels with every connection this process makes or accepts
# ---------------------------------------------------------------------------------------------

_plain_handshake_info = Comm.handshake_info


def _handshake_info(self):
    info = _plain_handshake_info(self)
    st = _STATE
    if st is not None and st.token is not None:
        try:
            peer = self.peer_address
        except Exception:
            peer = None
        ends = trust.connection_ends(self)
        if ends is not None and not (peer and st.is_degraded(peer)):
            info[TOKEN_KEY] = st.proof(*ends)
            info[ENDS_KEY] = list(ends)
    return info


Comm.handshake_info = _handshake_info


# ---------------------------------------------------------------------------------------------
# Activation: the plugin, the preload, the client
# ---------------------------------------------------------------------------------------------

def activate(worker: Worker | None = None, *, min_bytes: int | None = None,
             temp_folder: str | os.PathLike[str] | None = None) -> str | None:
    """Share arrays from and to this process: sweep the temp root of dead owners' folders,
    compute the token and publish it in every later connection's handshake.

    ``worker`` is the :class:`distributed.Worker` of this process (None in a client).
    ``min_bytes`` (default: Dask config ``stridemap.dask.min-bytes``, else 1 MiB) is the
    smallest array shared; ``temp_folder`` the temp root (see :func:`default_root`).
    Returns the token's public part (None: this process cannot share, no boot id, root or
    key; everything takes the normal path).
    """
    import dask

    global _STATE
    if min_bytes is None:
        min_bytes = dask.config.get("stridemap.dask.min-bytes", None) or DEFAULT_MIN_BYTES
    root = default_root(temp_folder)
    with _STATE_LOCK:
        st = _STATE
        if st is not None and st.root == root:  # activated twice (plugin and preload)
            st.min_bytes = int(min_bytes)
            if worker is not None:
                st.worker = weakref.ref(worker)
                _patch_monitor(worker)
            return st.token
    try:
        report = stridemap.sweep(root)
        if report.removed:
            log.info("stridemap.dask: swept %d dead worker folder(s) in %s",
                     len(report.removed), root)
    except OSError as e:
        log.warning("stridemap.dask: cannot sweep %s: %s", root, e)
    state = _State(root, min_bytes, worker)
    with _STATE_LOCK:
        _STATE = state
    if state.public is None:
        log.warning("stridemap.dask: no sharing token (boot id or %s unreadable): arrays take "
                    "Dask's normal path", root)
    else:
        log.debug("stridemap.dask: active in %s, root %s, token %s, min %d bytes",
                  getattr(worker, "address", "a client"), root, state.token, state.min_bytes)
    if worker is not None:
        _patch_monitor(worker)
        # Idle connections were made before the token existed: let new ones carry it.
        try:
            worker.rpc.collect()
        except Exception as e:
            log.debug("stridemap.dask: cannot collect idle connections: %s", e)
    return state.token


def deactivate(worker: Worker | None = None) -> None:
    """Stop sharing (arrays already shared stay valid while they are held); logs the
    counters at debug level."""
    global _STATE
    with _STATE_LOCK:
        st, _STATE = _STATE, None
    if worker is not None:
        _unpatch_monitor(worker)
    if st is not None:
        log.debug("stridemap.dask: inactive; counters %s", STATS.snapshot())


def stats() -> dict[str, Any]:
    """This process's counters (``client.run(stridemap.dask.stats)`` for every worker):
    ``sent``/``sent_bytes`` (arrays described to a peer), ``received``/``received_bytes``
    (arrays mapped from a peer's segment), ``copied``/``copied_bytes`` (plain arrays copied
    once into a segment), ``redescribed`` (sends without a copy), ``swapped`` (keys whose
    in-memory value became the segment), ``fallbacks`` (normal-path transfers by reason) and
    ``bytes_not_copied`` (``sent_bytes - copied_bytes + received_bytes``), plus ``active``,
    ``token`` (its public part) and ``root``."""
    out = STATS.snapshot()
    st = _STATE
    out["active"] = st is not None
    out["token"] = st.token if st is not None else None
    out["root"] = st.root if st is not None else None
    log.debug("stridemap.dask: counters %s", out)
    return out


def reset_stats() -> None:
    """Zero this process's counters (``client.run(stridemap.dask.reset_stats)``)."""
    with STATS.lock:
        STATS.counts.clear()
        STATS.fallbacks.clear()


class StridemapPlugin(WorkerPlugin):
    """The worker plugin: ``client.register_plugin(StridemapPlugin())`` activates stridemap in
    every worker, now and later. ``min_bytes`` and ``temp_folder`` as for :func:`activate`."""

    name = "stridemap"

    def __init__(self, min_bytes: int | None = None,
                 temp_folder: str | os.PathLike[str] | None = None) -> None:
        self.min_bytes = min_bytes
        self.temp_folder = temp_folder

    def setup(self, worker: Worker) -> None:
        activate(worker, min_bytes=self.min_bytes, temp_folder=self.temp_folder)

    def teardown(self, worker: Worker) -> None:
        deactivate(worker)


def install(client: Client, **kwargs: Any) -> Any:
    """Register :class:`StridemapPlugin` (with ``kwargs``) on ``client``'s cluster."""
    return client.register_plugin(StridemapPlugin(**kwargs))


def dask_setup(server: Server) -> None:
    """The preload hook: ``--preload stridemap.dask`` activates stridemap in each worker."""
    if isinstance(server, Worker):
        activate(server)
    else:
        log.info("stridemap.dask: preloaded in a %s: only workers share arrays",
                 type(server).__name__)


def dask_teardown(server: Server) -> None:
    """The preload's teardown."""
    if isinstance(server, Worker):
        deactivate(server)
