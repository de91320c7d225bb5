"""Opening a descriptor (SPEC §6): the checks O1–O12 and a zero-copy numpy view of the mapping.

The checks run in the order of SPEC §6: O5 first (the open flags depend on the granted mode),
then O1, O2, O3/O4 for a path (a symbolic link met on the walk is O3, any other failure to open
is O4), O6, O7, O8, O9 for an fd, O12, O10 (after taking the segment's lock, SPEC §7) and O11.

>>> import os, tempfile, numpy as np
>>> from stridemap import Descriptor, encode, open as sm_open
>>> root = tempfile.mkdtemp()
>>> np.arange(12, dtype="<f8").tofile(os.path.join(root, "a.bin"))
>>> rec = encode(Descriptor(dtype="<f8", shape=(3, 4), strides=(-32, 8), offset=64,
...                         buffer_len=96, file_len=96, path=os.path.join(root, "a.bin")))
>>> sm_open(rec, allowed_roots=[root])[0].tolist()
[8.0, 9.0, 10.0, 11.0]
"""

import errno
import fcntl
import mmap
import os
import stat
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from .codec import errors
from .codec.decode import decode
from .codec.descriptor import Descriptor, Mode
from .codec.record import BYTES_LIKE, BytesLike, encode, require_buffer
from .segments import backing, header
from .segments.mapfd import map_fd

# What each granted mode maps with: (prot, flags).
_MAPPING = {
    "r": (mmap.PROT_READ, mmap.MAP_SHARED),
    "r+": (mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED),
    "c": (mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE),
}
# Folders on the walk need only be searchable: O_PATH where the system has it.
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY
# O_NONBLOCK: opening a FIFO must not hang before O6 refuses it; O_NOCTTY: nor adopt a terminal.
_FILE_FLAGS = os.O_NOCTTY | os.O_NONBLOCK


class HasFileno(Protocol):
    """An object with a file descriptor (a socket, a file), which ``open(fd=...)`` takes."""

    def fileno(self) -> int: ...


Root = str | os.PathLike[str]


def open(desc: Descriptor | BytesLike, *, fd: int | HasFileno | None = None,
         allowed_roots: Root | Iterable[Root] = (), mode: Mode | None = None,
         allow_unsealed: bool = False, default_roots: bool = True) -> np.ndarray:
    """Map a descriptor's buffer and return the array it describes, without copying.

    ``desc`` is a :class:`Descriptor` or the bytes of either form. For an fd source pass the
    received ``fd`` (it is not closed: close it once this returns, the mapping does not need
    it). For a path source, the path must lie below one of ``allowed_roots`` (absolute folder
    names; their own components are trusted, may be symbolic links, and a path below the
    root as given or as resolved is below it; every component below them is opened with
    ``O_NOFOLLOW``) or, unless ``default_roots`` is false, below a *default root* (SPEC §6):
    a ``stridemap-*`` folder directly in ``$STRIDEMAP_TEMP_FOLDER``, ``/dev/shm`` or
    ``$TMPDIR`` (else ``/tmp``) that is owned by this process's effective uid with mode 0700,
    checked on the opened folder. Another user's producer's folder must be allowed explicitly.

    A descriptor of a segment (``generation`` != 0) is locked shared (SPEC §7: waiting up to
    two seconds for its producer, then :class:`~stridemap.SegmentBusy`) and its header
    checked (O10). The lock lives as long as the returned array (and every view of it): the
    producer cannot delete or recycle the segment under it. It is held by the open file
    description of the file, so for an fd source it also lasts while ``fd`` stays open, and a
    refused open leaves it on ``fd`` until you close it. Files that are not segments are
    locked only if that is possible at once.

    ``mode`` is what the caller asks for: ``None`` or ``"r"`` (read-only), ``"c"`` (private
    copy-on-write) or ``"r+"`` (shared writes, only when the descriptor is ``r+``). An fd that
    cannot be sealed is refused unless ``allow_unsealed`` (SPEC §6 O9).

    Raises the :class:`~stridemap.DescriptorError` of an invalid descriptor, or the
    :class:`~stridemap.OpenError` of the first open-time check that fails.
    """
    if isinstance(desc, Descriptor):
        encode(desc)  # validates it, as decode() would have
    else:
        require_buffer(desc, f"open() takes a Descriptor or the bytes of one ({BYTES_LIKE})")
        desc = decode(desc)
    granted = _grant(desc, mode)
    if desc.source == "fd":
        if fd is None:
            raise TypeError("the descriptor's file travels as an fd: pass fd=")
        file_fd, owned = _fd_number(fd), False
    else:
        if fd is not None:
            raise TypeError("the descriptor names a path: do not pass fd=")
        file_fd, owned = _open_path(desc.path, allowed_roots, granted, default_roots), True
    try:
        _check_file(file_fd, desc)
        if desc.source == "fd":
            _check_seals(file_fd, allow_unsealed)
        _check_allocated(file_fd, desc)
        header.enter(file_fd, desc)  # SPEC §7 lock, O10
        return _map(file_fd, desc, granted)
    finally:
        if owned:
            os.close(file_fd)


def open_handed(record, fd, *, mode, named):
    """What a pool's receiver maps: ``record`` (source "fd") and the fd its sender handed it,
    which the sender made for this receiver alone (SPEC §7.4). ``fd`` is not closed.

    ``named`` is the sender's word for what the fd is. False: a memfd, checked as SPEC §6 says
    for a passed fd, O9 included (``F_SEAL_SHRINK`` must be set; an fd that cannot be sealed is
    refused). True: a named file (a segment in a temp root, an ``np.memmap``'s file) that the
    sender opened by its path, with the flags of O4, and found to be the file it described
    (O8): the receiver checks what it would check had it opened that path itself, O6-O8, O10
    and O11, and not O9, which is for passed fds; a named file cannot be sealed (an fd of a
    tmpfs file, in /dev/shm, answers ``F_GET_SEALS`` with ``F_SEAL_SEAL`` alone: no seal can
    ever be added). One that can still be sealed is a memfd whatever the sender says, and is
    held to O9. Views of the array are handed on the same way (``stridemap.segment_of(...)
    .kind`` is "file" for a named one).
    """
    desc = decode(record)
    if desc.source != "fd":
        raise errors.SourceMismatch(
            "a pool's descriptor must travel with its fd; one naming a path is refused (a pool "
            "worker opens no paths)")
    granted = _grant(desc, mode)
    _check_file(fd, desc)
    if named:
        _check_seals_of_named(fd)
    else:
        _check_seals(fd, allow_unsealed=False)
    header.enter(fd, desc)  # SPEC §7 lock, O10
    return _map(fd, desc, granted, named=named)


def open_opened(desc: Descriptor | BytesLike, fd: int, *, mode: Mode | None = None) -> np.ndarray:
    """What :func:`open` does once it has opened a path descriptor's file, for a caller that
    opened the file itself, through checks of its own that are stricter than O1–O4 (the Dask
    receiver opens only a file of its user in a private folder of its user, through the
    folder's fd): O5, then O6–O8, O12, O10 (the segment's lock) and O11 on ``fd``, which must
    be open for the granted access (read-only for ``"r"`` and ``"c"``). ``fd`` is not closed;
    the mapping keeps what it needs."""
    if not isinstance(desc, Descriptor):
        require_buffer(desc, f"open_opened() takes a Descriptor or the bytes of one ({BYTES_LIKE})")
        desc = decode(desc)
    if desc.source != "path":
        raise errors.SourceMismatch("the descriptor's file travels as an fd: use open(fd=...)")
    granted = _grant(desc, mode)
    _check_file(fd, desc)
    _check_allocated(fd, desc)
    header.enter(fd, desc)  # SPEC §7 lock, O10
    return _map(fd, desc, granted)


def _grant(desc, mode):
    """O5: the mode the caller gets."""
    wanted = "r" if mode is None else mode
    if wanted in ("r", "c") or (wanted == "r+" and desc.mode == "r+"):
        return wanted
    raise errors.ModeNotAllowed(
        f"O5: mode {wanted!r} is not granted by a descriptor of mode {desc.mode!r}"
    )


def _path_components(path):
    """O1: the components of an absolute path without '.', '..' or empty components."""
    if not path.startswith("/"):
        raise errors.BadPath(f"O1: path {path!r} is not absolute")
    parts = path[1:].split("/")
    for p in parts:
        if p in ("", ".", ".."):
            what = "an empty" if p == "" else f"a {p!r}"
            raise errors.BadPath(f"O1: path {path!r} has {what} component")
    return parts


def _root_components(root):
    root = os.fsdecode(root)
    parts = [p for p in root.split("/") if p]
    if not root.startswith("/") or "." in parts or ".." in parts:
        raise ValueError(f"allowed root {root!r} must be absolute, without '.' or '..'")
    return parts


#: A default root's folders are named so (SPEC §6).
FOLDER_PREFIX = "stridemap-"


def default_bases():
    """The folders whose ``stridemap-*`` entries are default roots (SPEC §6), in order:
    ``$STRIDEMAP_TEMP_FOLDER`` (if set), ``/dev/shm``, ``$TMPDIR`` (if set, else ``/tmp``);
    only absolute ones."""
    bases = []
    env = os.environ.get("STRIDEMAP_TEMP_FOLDER")
    if env:
        bases.append(env)
    bases.append("/dev/shm")
    bases.append(os.environ.get("TMPDIR") or "/tmp")
    return [b for b in bases if b.startswith("/")]


def _spellings(root):
    """A root's components as given and as resolved (its own symbolic links followed)."""
    given = _root_components(root)
    resolved = _root_components(os.path.realpath(os.fsdecode(root)))
    return [given] if resolved == given else [given, resolved]


def _check_private_folder(fd, folder, path):
    """O2 for a default root: the ``stridemap-*`` entry is this user's folder, mode 0700."""
    st = os.fstat(fd)
    why = None
    if not stat.S_ISDIR(st.st_mode):
        why = "it is not a folder"
    elif st.st_uid != os.geteuid():
        why = f"it belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    elif stat.S_IMODE(st.st_mode) != 0o700:
        why = f"its mode is {stat.S_IMODE(st.st_mode):04o}, not 0700"
    if why:
        raise errors.PathNotAllowed(
            f"O2: refusing {path!r}: {folder!r} is not a private stridemap folder of this "
            f"user ({why}); to accept another user's producer, pass its folder in allowed_roots"
        )


def _open_path(path, allowed_roots, granted, default_roots=True):
    """O1–O4: walk from the deepest allowed root that holds ``path``, one component at a time."""
    parts = _path_components(path)
    if isinstance(allowed_roots, (str, bytes, os.PathLike)):
        allowed_roots = [allowed_roots]
    # (components, is a default root): a default root holds a path whose first component
    # below it is a stridemap-* folder, with at least a file below that.
    roots = [(sp, False) for r in allowed_roots for sp in _spellings(r)]
    if default_roots:
        roots += [(sp, True) for b in default_bases() for sp in _spellings(b)]
    holders = [
        (r, d) for r, d in roots
        if len(r) < len(parts) and parts[:len(r)] == r
        and (not d or parts[len(r)].startswith(FOLDER_PREFIX))
    ]
    if not holders:
        raise errors.PathNotAllowed(f"O2: path {path!r} is not below an allowed root")
    root, default = max(holders, key=lambda h: len(h[0]))
    if default and len(parts) < len(root) + 2:
        raise errors.PathNotAllowed(
            f"O2: refusing {path!r}: it names a stridemap folder itself, not a file in it"
        )
    root_path = "/" + "/".join(root)
    try:
        fd = os.open(root_path, _DIR_FLAGS | os.O_CLOEXEC)
    except OSError as e:
        raise errors.OpenFailed(
            f"O4: cannot open the allowed root {root_path!r}: {e.strerror}", e.errno
        ) from None
    try:
        for i, name in enumerate(parts[len(root):-1]):
            if default and i == 0:
                below = _open_private_folder(fd, name, path)
            else:
                below = _open_below(fd, name, _DIR_FLAGS, path)
            os.close(fd)
            fd = below
        access = os.O_RDWR if granted == "r+" else os.O_RDONLY
        return _open_below(fd, parts[-1], access | _FILE_FLAGS, path)
    finally:
        os.close(fd)


def _open_private_folder(dir_fd, name, path):
    """A default root's ``stridemap-*`` entry: opened without following a link, then checked
    on the opened fd (O2)."""
    folder = name
    try:
        fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise errors.PathNotAllowed(
                f"O2: refusing {path!r}: {name!r} is not a private stridemap folder of this "
                "user (it is not a folder: a plain file or a symbolic link)"
            ) from None
        raise errors.OpenFailed(
            f"O4: cannot open component {name!r} of {path!r}: {e.strerror}", e.errno
        ) from None
    try:
        _check_private_folder(fd, folder, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_below(dir_fd, name, flags, path):
    """O3/O4: open one component with O_NOFOLLOW; a symbolic link there is O3."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if _is_symlink(dir_fd, name):
            raise errors.SymlinkInPath(
                f"O3: component {name!r} of {path!r} is a symbolic link"
            ) from None
        raise errors.OpenFailed(
            f"O4: cannot open component {name!r} of {path!r}: {e.strerror}", e.errno
        ) from None
    if stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH | O_NOFOLLOW can open a link itself
        os.close(fd)
        raise errors.SymlinkInPath(f"O3: component {name!r} of {path!r} is a symbolic link")
    return fd


def _is_symlink(dir_fd, name):
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _fd_number(fd):
    """The number of the ``fd=`` argument: an int, or an object's ``fileno()``."""
    if isinstance(fd, int) and not isinstance(fd, bool):
        return fd
    fileno = getattr(fd, "fileno", None)
    if fileno is None:
        raise TypeError(f"fd must be a file descriptor (an int, or an object with fileno()), "
                        f"not {type(fd).__name__}")
    return fileno()


def _check_file(fd, desc):
    """O6, O7, O8 on the opened (or received) fd."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        if e.errno == errno.EBADF:
            raise errors.NotRegularFile(
                f"O6: fd {fd} is not an open file descriptor (EBADF): pass the fd that came "
                "with the descriptor, and close it only once open() has returned", e.errno,
            ) from None
        raise errors.NotRegularFile(f"O6: cannot fstat the file: {e.strerror}", e.errno) from None
    if not stat.S_ISREG(st.st_mode):
        raise errors.NotRegularFile(
            f"O6: not a regular file (mode {stat.filemode(st.st_mode)})"
        )
    if st.st_size != desc.file_len:
        raise errors.LengthMismatch(
            f"O7: the file is {st.st_size} bytes long, the descriptor says {desc.file_len}"
        )
    if desc.inode and (st.st_dev, st.st_ino) != (desc.device, desc.inode):
        raise errors.IdentityMismatch(
            f"O8: the file is device {st.st_dev} inode {st.st_ino}, the descriptor says "
            f"device {desc.device} inode {desc.inode}"
        )


def _check_seals(fd, allow_unsealed):
    """O9: the fd must be sealed against shrinking, unless ``allow_unsealed`` (the consumer
    trusts its sender: a file that can shrink under the mapping is then its own risk)."""
    if allow_unsealed:
        return
    get_seals = getattr(fcntl, "F_GET_SEALS", None)
    try:
        if get_seals is None:
            raise OSError(None, "this system has no file seals")
        seals = fcntl.fcntl(fd, get_seals)
    except OSError as e:
        raise errors.NotSealed(
            f"O9: the fd cannot be sealed ({e.strerror}); pass allow_unsealed=True to accept it",
            e.errno,
        ) from None
    if not seals & fcntl.F_SEAL_SHRINK:
        raise errors.NotSealed("O9: the fd is not sealed against shrinking (F_SEAL_SHRINK); "
                               "pass allow_unsealed=True to accept it from a sender you trust")


def _sealed_against_shrinking(fd):
    """Whether ``fd``'s file carries ``F_SEAL_SHRINK`` (a sealed memfd)."""
    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK)
    except OSError:  # not sealable: not a memfd
        return False


def _check_allocated(fd, desc):
    """O12: a file sealed against shrinking (a sealed memfd, a peer's) must have its buffer's
    bytes allocated, so that reading its holes cannot allocate more here than its producer
    already did."""
    allocated = os.fstat(fd).st_blocks * 512
    if allocated < desc.buffer_len and _sealed_against_shrinking(fd):
        raise errors.Sparse(
            f"O12: the file is a sealed memfd and has {allocated} bytes allocated, fewer "
            f"than its {desc.buffer_len}-byte buffer: reading its holes would allocate memory "
            "here; the producer must write (or fallocate) the buffer before sending it"
        )


def _check_seals_of_named(fd):
    """An fd handed as a named file's: one that cannot be sealed (a regular file on disk, a
    tmpfs file, which reports ``F_SEAL_SEAL``) is what it says; one that can still be sealed
    is a memfd, and must be sealed against shrinking (O9)."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except (OSError, AttributeError):
        return
    if not seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL):
        raise errors.NotSealed(
            "O9: the fd was handed as a named file's, but it can still be sealed: it is a memfd, "
            "and F_SEAL_SHRINK is not set")


def _map(fd, desc, granted, named=False):
    """O11: map exactly the buffer (its start rounded down to the page) and view it."""
    if desc.buffer_len == 0:  # not mapped: the array is empty
        buf, delta = (b"" if granted == "r" else bytearray()), 0
    else:
        start = desc.buffer_offset - desc.buffer_offset % mmap.ALLOCATIONGRANULARITY
        delta = desc.buffer_offset - start
        try:
            prot, flags = _MAPPING[granted]
            buf = map_fd(fd, delta + desc.buffer_len, offset=start, prot=prot, flags=flags)
        except (OSError, ValueError, OverflowError) as e:
            raise errors.MapFailed(
                f"O11: cannot map {desc.buffer_len} bytes at {desc.buffer_offset}: {e}",
                getattr(e, "errno", None),
            ) from None
        if granted != "c":
            from .segments.huge import advise_consumer

            advise_consumer(buf, fd)
    view = np.ndarray(
        desc.shape, np.dtype(desc.dtype), buffer=buf, offset=delta + desc.offset,
        strides=desc.strides,
    )
    if desc.buffer_len:  # views of it can be described again (stridemap.describe, export)
        backing.register_opened(buf, desc, granted, fd if desc.source == "fd" else None,
                                named=named)
    return view
