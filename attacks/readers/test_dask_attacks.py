"""Attacks on the Dask plugin (issue 19 item 4): a peer that talks Dask's protocol to a worker,
as anything that can reach the worker's port can.

- It presents a sharing token it computed (boot id, the temp root's stat, the uid: what the
  token was) or copied from the worker's own handshake, and asks for a key: it must get the
  bytes, never a descriptor.
- It sends the worker a descriptor (``update_data``) of a file it should not make the worker
  map: another user's file, a file outside the folder the header names, a folder reached
  through a link, a folder that is not private; then asks for the key back (``get_data``). The
  worker must refuse the descriptor, never map the file, and never hand its bytes back.
- It truncates such a file after describing it: the worker must not die of SIGBUS (it never
  mapped it).

The worker runs as root here, so the old code could read every user's files for the peer.
Run by `bash scripts/test.sh attacks` with the repository's .venv (root: the planted files
belong to uid 65534).
"""

import asyncio
import dataclasses
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import uuid

import numpy as np
import pytest

dask = pytest.importorskip("dask")
pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402
from distributed.comm.registry import backends  # noqa: E402
from distributed.comm.addressing import parse_address  # noqa: E402
from distributed.protocol.serialize import Serialized  # noqa: E402

import stridemap  # noqa: E402
import stridemap.dask as sd  # noqa: E402
from stridemap import encode  # noqa: E402

NOBODY = 65534
MIN = 64 << 10
N = 1 << 17  # the worker's array: 1 MiB of int64
SECRET = b"another user's data. " * 3000  # 66 KB, above MIN

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files of uid 65534: root only")


@pytest.fixture(scope="module")
def root():
    """The workers' temp root: a folder of its own in /dev/shm, sticky and world-writable as
    /dev/shm is (so that another user could plant folders in it)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="stridemap-attack-dask-", dir=base)
    os.chmod(path, 0o1777)
    old = os.environ.get("STRIDEMAP_TEMP_FOLDER")
    os.environ["STRIDEMAP_TEMP_FOLDER"] = path
    yield os.path.realpath(path)
    if old is None:
        del os.environ["STRIDEMAP_TEMP_FOLDER"]
    else:
        os.environ["STRIDEMAP_TEMP_FOLDER"] = old
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(root):
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
        with LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                          dashboard_address=":0", silence_logs=50) as c, Client(c) as cl:
            sd.install(cl, min_bytes=MIN)
            yield cl


def worker(client):
    return sorted(client.scheduler_info()["workers"])[0]


# ---------------------------------------------------------------------------------------------
# A peer speaking Dask's protocol by hand


async def _session(addr, token, messages):
    """Connect to ``addr`` as Dask does, but read the worker's handshake before sending ours,
    whose ``stridemap-token`` is ``token(worker's handshake)`` (None: no token). Then send
    each message and read its reply (frames are not deserialized: arrays come back as
    ``Serialized``). Returns the worker's handshake and the replies."""
    scheme, loc = parse_address(addr)
    comm = await backends[scheme].get_connector().connect(loc, deserialize=False)
    try:
        theirs = await comm.read()
        mine = dict(comm.handshake_info())
        mine.pop(sd.TOKEN_KEY, None)
        tok = token(theirs)
        if tok is not None:
            mine[sd.TOKEN_KEY] = tok
        await comm.write(mine)
        comm.remote_info, comm.local_info = dict(theirs), mine
        comm.handshake_options = comm.handshake_configuration(mine, theirs)
        replies = []
        for msg in messages:
            await comm.write(msg)
            try:
                reply = await asyncio.wait_for(comm.read(), 30)
            except Exception as e:  # the worker closed the connection: refused
                replies.append(e)
                break
            replies.append(reply)
            if msg.get("op") == "get_data":
                await comm.write("OK")
        return theirs, replies
    finally:
        comm.abort()


def session(addr, token, *messages):
    return asyncio.run(_session(addr, token, list(messages)))


def get_data(key):
    return {"op": "get_data", "keys": [key], "who": None}


def fetched(reply, key):
    """``(header, bytes)`` of ``key`` in a get_data reply, or None."""
    if not isinstance(reply, dict) or reply.get("status") != "OK" or key not in reply["data"]:
        return None
    s = reply["data"][key]
    assert isinstance(s, Serialized), s
    header = s.header.get("sub-header", s.header)  # the numpy or stridemap serializer's
    return header, b"".join(bytes(f) for f in s.frames)


# ---------------------------------------------------------------------------------------------
# Forged and replayed tokens


def test_a_forged_or_replayed_token_gets_no_descriptor(cluster, root):
    """Issue 19 item 4: the token was the boot id, the temp root's device and inode and the
    uid, which anyone on the host computes: such a peer was sent descriptors. Now a token must
    prove, for this connection, the key only the user's processes can read. Each forged token
    here gets the array's bytes by Dask's normal path, and the worker counts the refusal."""
    w = worker(cluster)
    cluster.run(sd.reset_stats)
    fut = cluster.submit(np.arange, N, dtype="<i8", workers=[w], pure=False)
    fut.result()
    want = np.arange(N, dtype="<i8").tobytes()

    # What anyone on the host computes (the old token itself, now only its public part).
    computed = sd.token(root)
    # The worker's own token, read from its handshake on one connection, replayed on another.
    seen, _ = session(w, lambda theirs: None)
    replayed = seen.get(sd.TOKEN_KEY)
    assert replayed, seen
    attempts = {
        "computed": lambda theirs: computed,
        "public part with a made-up proof": lambda theirs: computed + ":" + "0" * 32,
        "replayed from another connection": lambda theirs: replayed,
        "reflected on the same connection": lambda theirs: theirs.get(sd.TOKEN_KEY),
    }
    got = {}
    for name, token in attempts.items():
        _, replies = session(w, token, get_data(fut.key))
        out = fetched(replies[0], fut.key)
        assert out is not None, (name, replies)
        header, data = out
        got[name] = "descriptor" if sd.HEADER_KEY in header else (
            "bytes" if data == want else f"wrong bytes: {header}")
    print(f"\nforged tokens: {got}")
    assert got == {name: "bytes" for name in attempts}, got
    stats = cluster.run(sd.stats)[w]
    assert stats["sent"] == 0, stats
    assert stats["fallbacks"].get("unproven-token") == len(attempts), stats


def test_the_key_is_readable_by_its_user_only(cluster, root):
    """The key the tokens prove lives in ``<root>/.stridemap-dask-<uid>/key``: a 0700 folder
    and a 0600 file of the user; another user cannot read it."""
    folder = os.path.join(root, f".stridemap-dask-{os.geteuid()}")
    st = os.lstat(folder)
    assert (st.st_uid, oct(st.st_mode & 0o7777)) == (os.geteuid(), "0o700")
    assert os.path.isdir(folder) and not os.path.islink(folder)
    st = os.lstat(os.path.join(folder, "key"))
    assert (st.st_uid, oct(st.st_mode & 0o7777), st.st_size) == (os.geteuid(), "0o600", 32)
    probe = ("import os, sys; os.setgid(65534); os.setuid(65534)\n"
             "try:\n open(sys.argv[1], 'rb').read(); print('read')\n"
             "except PermissionError: print('refused')\n")
    out = subprocess.run([sys.executable, "-c", probe, os.path.join(folder, "key")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "refused", (out.stdout, out.stderr)


# ---------------------------------------------------------------------------------------------
# Descriptors the worker must not open


def pool_folder(root, owner=None, mode=0o700):
    """A folder named as a pool folder below ``root``."""
    path = os.path.join(root, f"stridemap-{os.getpid()}-1-{uuid.uuid4().hex}")
    os.mkdir(path, mode)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def plant(folder, owner=None, via=None):
    """A copy of a real segment holding SECRET (header and all, so that the old code's checks
    passed) in ``folder``, owned by ``owner``: ``(path, its descriptor)``, the descriptor
    naming it through the folder ``via`` (a link to ``folder``) if given."""
    with tempfile.TemporaryDirectory() as producer:
        src = stridemap.share(np.frombuffer(SECRET, "u1"), kind="file", temp_folder=producer)
        ex = stridemap.export(src)
        desc = stridemap.decode(ex.record)
        ex.close()
        path = os.path.join(folder, f"seg-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(desc.path, path)
        del src
    os.chmod(path, 0o600)
    if owner is not None:
        os.chown(path, owner, owner)
    st = os.stat(path)
    named = path if via is None else os.path.join(via, os.path.basename(path))
    return path, encode(dataclasses.replace(desc, path=named, device=st.st_dev, inode=st.st_ino))


def signed(header, record, root):
    """Sign the header as a process holding the user's key does (the checks behind the
    signature must hold even then). The old code signed nothing and checked no signature."""
    trust = getattr(sd, "trust", None)
    if trust is not None:
        trust.sign(trust.load_key(root), sd.token(root), header, record)


def update_data(key, folder, record, sign, root=None):
    header = {sd.HEADER_KEY: 1, "folder": folder, "from": "tcp://127.0.0.1:9"}
    if sign:
        signed(header, record, root)
    wrapped = {"serializer": "dask", "type-serialized": pickle.dumps(np.ndarray),
               "sub-header": header}  # what Dask's "dask" family puts around it
    return {"op": "update_data", "data": {key: Serialized(wrapped, [record])}, "reply": True}


def worker_maps(client, w, path):
    pid = client.run(os.getpid, workers=[w])[w]
    with open(f"/proc/{pid}/maps") as f:
        return path in f.read()


CASES = {  # case: the reason the worker counts its refusal under
    "unsigned, another user's folder": "refused-unsigned",
    "signed, another user's folder": "refused-folder",
    "signed, another user's file in a folder of ours": "refused-file",
    "signed, a link to another user's folder": "refused-folder",
    "signed, a 0755 folder of ours": "refused-folder",
    "signed, the file in another folder than the one named": "refused-file",
}


@pytest.mark.parametrize("case", CASES)
def test_a_descriptor_of_a_file_the_worker_should_not_map_is_refused(cluster, root, case):
    """Issue 19 item 4: the receiver checked neither a token nor the folder's owner, so a
    peer made a worker map another user's file and read it back with get_data. Now the worker
    opens a descriptor only when it is signed with the key, and only for a file of its own
    user directly in the named folder, itself a private (0700, not a link) pool folder of its
    own user in its temp root. Each case is refused: the key never holds the file's bytes and
    the worker never maps the file."""
    w = worker(cluster)
    cluster.run(sd.reset_stats)
    sign = case.startswith("signed")
    if "another user's folder" in case:
        theirs = folder = pool_folder(root, owner=NOBODY)
        if "link" in case:
            folder = os.path.join(root, f"stridemap-{os.getpid()}-2-{uuid.uuid4().hex}")
            os.symlink(theirs, folder)
        path, record = plant(theirs, owner=NOBODY, via=folder)
    elif "another user's file" in case:
        folder = pool_folder(root)
        path, record = plant(folder, owner=NOBODY)
    elif "0755" in case:
        folder = pool_folder(root, mode=0o755)
        path, record = plant(folder)
    else:  # the header names one private folder of ours, the descriptor a file in another
        folder = pool_folder(root)
        path, record = plant(pool_folder(root))
    key = f"stolen-{uuid.uuid4().hex[:8]}"
    _, replies = session(w, lambda theirs: None,
                         update_data(key, folder, record, sign, root), get_data(key))
    back = fetched(replies[-1], key) if len(replies) == 2 else None
    assert back is None or SECRET not in back[1], f"{case}: the peer read the file back"
    assert not worker_maps(cluster, w, path), f"{case}: the worker mapped {path}"
    stats = cluster.run(sd.stats)[w]
    print(f"\n{case}: {stats['fallbacks']}")
    assert stats["received"] == 0, stats
    assert stats["fallbacks"] == {CASES[case]: 1}, stats


def test_a_planted_file_truncated_after_it_was_described_kills_no_worker(cluster, root):
    """Issue 19 item 4: a planted file, truncated after the worker mapped it, killed the worker
    with SIGBUS when get_data read it. A file of another user is never mapped now, so its
    truncation cannot reach the worker: the worker lives on (same pid) and still computes.
    (A file of the worker's own user, in its own private folder, can still be truncated under
    a mapping by that user, who could kill the worker anyway: README, Trust model.)"""
    w = worker(cluster)
    pid = cluster.run(os.getpid, workers=[w])[w]
    theirs = pool_folder(root, owner=NOBODY)
    path, record = plant(theirs, owner=NOBODY)
    key = f"truncated-{uuid.uuid4().hex[:8]}"
    session(w, lambda theirs: None, update_data(key, theirs, record, sign=False))
    os.truncate(path, 0)
    try:
        session(w, lambda theirs: None, get_data(key))
    except OSError:
        pass  # the connection broke: the worker died
    try:
        alive = list(cluster.run(os.getpid).values())
    except Exception as e:  # the worker is gone (the nanny starts another)
        alive = repr(e)
    assert alive == [pid], f"the worker {pid} died: {alive}"
    assert cluster.submit(sum, [1, 2, 3], pure=False).result(timeout=60) == 6
