"""Whom a Dask worker shares with, and which descriptors it opens (:mod:`stridemap.dask`).

**The key.** Every process of one user that shares below one temp root reads the same
random 32-byte key from ``<root>/.stridemap-dask-<uid>/key``: a folder of mode 0700 and a
file of mode 0600, both owned by the user, checked on the opened fds (no link followed). The
first process to need it makes it (written under a temporary name, then linked into place, so
that processes racing to make it all end with the one that won). Another user cannot read it;
a process that only reaches the workers over the network cannot either. A folder of that name
that is not the user's own private folder (another user made it first) is refused: that
user's processes then share nothing, and arrays take Dask's normal path. The key outlives
the workers (32 bytes per user and temp root; a tmpfs forgets it at reboot); removing it while
no worker runs is harmless, a new one is made.

**The token, per connection.** In the handshake of each connection a process sends
``stridemap-2:<boot id>:<device>:<inode>:<uid>:<proof>``: the public part says which host,
temp root and user it shares as (so that a mismatch has a precise fallback reason); the proof
is an HMAC-SHA256 with the key of the public part and of the connection's two ends as this
process sees them (``getsockname``, ``getpeername``), its own end first. A sender describes
an array only when the recipient's proof is the one the key gives for the same ends the other
way round. The proof thus shows that the peer read the key, for this connection alone: a token
copied from another connection (even from the worker's own handshake on this one) proves
nothing. The two ends must look the same from both sides, as they do on one host; through a
NAT or proxy they do not, and arrays take the normal path (``unproven-token``).

**The descriptor, signed.** The sender adds to its header an HMAC with the key of the record,
the folder and its own address. A receiver opens nothing it cannot verify (``refused-unsigned``).

**The checked open.** A signed descriptor is opened only when it names a segment (a path, a
generation) in a file directly in the folder its header names; that folder is a pool folder
(``stridemap-<pid>-<start>-<uuid>``) directly in the receiver's temp root, opened with
``O_NOFOLLOW`` through the root's fd, a folder of mode 0700 owned by the receiver's own uid;
the file is opened with ``O_NOFOLLOW`` through the folder's fd, is regular and owned by that
uid. Then SPEC §6 (O6–O8, O12, O10, O11) as :func:`stridemap.open` checks it. Anything else is
:class:`DescriptorRefused` (``refused-folder``, ``refused-file``, ``refused-descriptor``).

**What a truncation can still do.** A named file cannot be sealed: whoever can truncate a
segment while a reader maps it makes the reader fault (SIGBUS) when it reads the lost pages.
The checks above confine that to the receiver's own uid (and root): only they can write the
0700 folder and the files in it, and only they could have made the file. A process of that uid
can already kill or ptrace the worker, so the uid is the trust boundary, as it is for the
pools' named segments (README, Trust model).
"""

import errno
import hashlib
import hmac
import os
import secrets
import stat

import stridemap

from ..reader import open_opened
from ..segments.roots import parse_folder_name

VERSION = "stridemap-2"
KEY_BYTES = 32
KEY_NAME = "key"
PROOF_CHARS = 32  # hex: 128 bits of the HMAC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TransferFallback(OSError):
    """A descriptor arrived whose segment could not be opened (gone, recycled, replaced, busy).

    It is an ``OSError`` on purpose: the receiving worker's ``gather_dep`` handles it as a
    broken connection and fetches the key again; the next connection to that peer is made
    without the sharing token, so the key then travels by Dask's normal path.
    """


class DescriptorRefused(TransferFallback):
    """A descriptor the receiver does not open: not signed with this user's key, or naming a
    file that is not a segment of this user in a private pool folder of this user in this
    process's temp root. ``reason`` is the fallback counter it is counted under. As a
    :class:`TransferFallback` it makes Dask fetch the key again by its normal path."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(errno.EACCES, message)
        self.reason = reason


def key_folder_name(uid=None):
    return f".stridemap-dask-{os.geteuid() if uid is None else uid}"


def load_key(root):
    """This user's key for ``root`` (made if there is none yet), or an ``OSError`` saying why
    it cannot be had."""
    me = os.geteuid()
    name = key_folder_name(me)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    made = False
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            made = True
        except FileExistsError:
            pass
        try:
            dir_fd = os.open(name, _DIR, dir_fd=root_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(e.errno, f"{os.path.join(root, name)} is not a folder (a link, "
                              "or a file): no key, nothing is shared") from None
            raise
    finally:
        os.close(root_fd)
    try:
        st = os.fstat(dir_fd)
        if made and st.st_uid == me and stat.S_IMODE(st.st_mode) != 0o700:  # the umask's
            os.fchmod(dir_fd, 0o700)
            st = os.fstat(dir_fd)
        if st.st_uid != me or stat.S_IMODE(st.st_mode) != 0o700:
            raise OSError(errno.EPERM, f"{os.path.join(root, name)} belongs to uid {st.st_uid} "
                          f"with mode {stat.S_IMODE(st.st_mode):04o}, not to this user (uid "
                          f"{me}) with mode 0700: no key, nothing is shared (remove it)")
        return _read_or_make_key(dir_fd, os.path.join(root, name))
    finally:
        os.close(dir_fd)


def _read_or_make_key(dir_fd, where):
    for _ in range(3):
        try:
            fd = os.open(KEY_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except FileNotFoundError:
            _make_key(dir_fd)
            continue
        try:
            st = os.fstat(fd)
            if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                    or stat.S_IMODE(st.st_mode) & 0o077 or st.st_size != KEY_BYTES):
                raise OSError(errno.EPERM, f"{where}/{KEY_NAME} is not a {KEY_BYTES}-byte "
                              "regular file of this user that only this user can read: "
                              "nothing is shared (remove it)")
            key = os.pread(fd, KEY_BYTES, 0)
        finally:
            os.close(fd)
        if len(key) == KEY_BYTES:
            return key
    raise OSError(errno.EIO, f"cannot read or make the key in {where}")


def _make_key(dir_fd):
    """Write a new key under a temporary name and link it into place: a process that loses
    the race unlinks its own and reads the winner's."""
    tmp = f"{KEY_NAME}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        if os.write(fd, secrets.token_bytes(KEY_BYTES)) != KEY_BYTES:
            raise OSError(errno.EIO, "short write of the key")
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, KEY_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None


def public_token(root):
    """``stridemap-2:<boot id>:<device>:<inode>:<uid>`` for ``root``, or None when the boot id
    or the root cannot be read."""
    boot = _boot_id()
    try:
        st = os.stat(root)
    except OSError:
        return None
    if not boot:
        return None
    return f"{VERSION}:{boot}:{st.st_dev}:{st.st_ino}:{os.geteuid()}"


def mismatch(public, theirs):
    """Why the recipient's token ``theirs`` differs from ours in its public part (the fallback
    reason), or None when only the proof is left to check."""
    a, b = public.split(":"), str(theirs).split(":")
    if a[0] != b[0]:
        return "token-version"
    if len(b) != len(a) + 1:
        return "unproven-token"
    if a[1] != b[1]:
        return "other-host"
    if a[2:4] != b[2:4]:
        return "other-temp-root"
    if a[4] != b[4]:
        return "other-user"
    return None


def _mac(key, label, *parts):
    h = hmac.new(key, label.encode(), hashlib.sha256)
    for p in parts:
        p = p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogatepass")
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def prove(key, public, mine, theirs):
    """The token sent on a connection whose ends are ``mine`` (this process's) and
    ``theirs``."""
    return f"{public}:{_mac(key, 'stridemap-dask token', public, mine, theirs)[:PROOF_CHARS]}"


def proven(key, public, token, ends):
    """Whether the peer's ``token`` proves the key on the connection whose ends this process
    sees as ``ends`` (its own first)."""
    if not (isinstance(ends, (list, tuple)) and len(ends) == 2):
        return False
    return hmac.compare_digest(str(token), prove(key, public, ends[1], ends[0]))


def _inet(addr):
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        if host.startswith("::ffff:") and "." in host:  # an IPv4 peer of a dual-stack socket
            host = host[7:]
        return f"{host}:{addr[1]}"
    return addr.decode("utf-8", "surrogateescape") if isinstance(addr, bytes) else str(addr)


def connection_ends(comm):
    """``(this end, the peer's end)`` of a Dask comm: the socket's addresses for TCP and TLS,
    else the comm's addresses (in-process comms); None when there are none."""
    sock = getattr(getattr(comm, "stream", None), "socket", None)
    if sock is not None:
        try:
            return _inet(sock.getsockname()), _inet(sock.getpeername())
        except OSError:
            return None
    try:
        return str(comm.local_address), str(comm.peer_address)
    except Exception:
        return None


def sign(key, public, header, record):
    """Add the signature of ``record`` (bytes), ``header["folder"]`` and ``header["from"]``."""
    header["mac"] = _signature(key, public, header, record)


def _signature(key, public, header, record):
    return _mac(key, "stridemap-dask descriptor", public, header.get("folder"),
                header.get("from"), bytes(record))


def check_signature(key, public, header, record):
    """:class:`DescriptorRefused` unless the header carries the signature the key gives."""
    mac = header.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(
            mac, _signature(key, public, header, record)):
        raise DescriptorRefused(
            "refused-unsigned",
            f"a descriptor from {header.get('from')!r} is not signed with this user's key "
            "(it does not come from a process of this user on this host): it is not opened")


def _refuse(reason, path, why):
    raise DescriptorRefused(reason, f"refusing the descriptor of {path!r}: {why}")


def open_received(record, folder, root):
    """Map a received descriptor's segment, read-only, after the checks of the module's
    docstring (``record`` bytes, ``folder`` from the header, ``root`` this process's temp
    root)."""
    desc = stridemap.decode(record)
    path = desc.path
    if desc.source != "path" or desc.generation == 0:
        _refuse("refused-descriptor", path, "it names no segment of a pool folder (an fd, or "
                "a file that is not a segment)")
    if (not isinstance(folder, str) or os.path.dirname(folder) != root
            or parse_folder_name(os.path.basename(folder)) is None):
        _refuse("refused-folder", path, f"the folder {folder!r} is not a pool folder directly "
                f"in this worker's temp root {root}")
    name = path[len(folder) + 1:] if path.startswith(folder + "/") else ""
    if name in ("", ".", "..") or "/" in name:
        _refuse("refused-file", path, f"it is not a file directly in the folder {folder!r}")
    me = os.geteuid()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            dir_fd = os.open(os.path.basename(folder), _DIR, dir_fd=root_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                _refuse("refused-folder", path, f"{folder!r} is a link or not a folder")
            raise stridemap.OpenFailed(f"cannot open the folder {folder!r}: {e.strerror}",
                                       e.errno) from None
    finally:
        os.close(root_fd)
    try:
        st = os.fstat(dir_fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != me or stat.S_IMODE(st.st_mode) != 0o700:
            _refuse("refused-folder", path, f"the folder {folder!r} belongs to uid {st.st_uid} "
                    f"with mode {stat.S_IMODE(st.st_mode):04o}, not to this worker's uid {me} "
                    "with mode 0700")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                _refuse("refused-file", path, "it is a symbolic link")
            raise stridemap.OpenFailed(f"cannot open {path!r}: {e.strerror}", e.errno) from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != me:
            _refuse("refused-file", path, f"it belongs to uid {st.st_uid}, not to this "
                    f"worker's uid {me}" if stat.S_ISREG(st.st_mode) else "not a regular file")
        return open_opened(desc, fd, mode="r")
    finally:
        os.close(fd)
