"""The sweep: removing what dead producers left below a temp root (SPEC §7.5).

A sweep takes ``LOCK_EX | LOCK_NB`` on each pool folder (:mod:`.roots`); if that fails the
owner is alive. If it succeeds the owner is gone; then if every entry is a regular file (not a
mount point) that can be locked exclusively (readers hold ``LOCK_SH`` while they map one, SPEC
§7), the files are unlinked under those locks and the folder removed; otherwise the folder is
kept, with the reason. Files are locked and unlinked in batches of :data:`SWEEP_BATCH`, so that a
sweep needs a bounded number of fds whatever a folder holds. Every step is relative to a directory fd (``O_NOFOLLOW``, ``fstatat``,
``unlinkat``), and only folders of the caller's effective uid are touched. Rust's ``stridemap
gc`` follows the same rules, so each cleans up the other's orphans.

>>> import tempfile
>>> from stridemap.segments.roots import PoolFolder
>>> root = tempfile.mkdtemp()
>>> folder = PoolFolder.create(root)
>>> sweep(root).alive == [folder.path]       # locked by this process: left alone
True
>>> folder.remove()
>>> sweep(root).removed
[]
"""

import errno
import fcntl
import logging
import os
import stat
from dataclasses import dataclass, field

from .roots import _DIR, parse_folder_name, segment_bases

log = logging.getLogger("stridemap")


@dataclass
class SweepReport:
    """What a sweep found, as Rust's ``stridemap gc`` reports it: folders ``removed`` (or, with
    ``dry_run``, that would be); folders whose owner is ``alive`` (it holds the folder's lock);
    folders of a dead owner ``in_use`` (a reader maps one of its files); folders of a dead
    owner ``kept`` for another reason, as ``(path, reason)`` (an entry stridemap never makes);
    folders of ``other_users``; and ``failed`` roots, folders or files, as ``(path, message)``
    (the sweep goes on after each)."""

    removed: list = field(default_factory=list)
    alive: list = field(default_factory=list)
    in_use: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    other_users: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def succeeded(self) -> bool:
        """Whether every folder looked at was handled (nothing ``failed``)."""
        return not self.failed


def sweep(root: str | os.PathLike[str] | None = None, *, dry_run: bool = False,
          all_users: bool = False) -> SweepReport:
    """Removes the pool folders of dead producers directly below ``root`` (default: every
    base of :func:`segment_bases`) by SPEC §7.5, the rules of the module docstring: a folder
    nobody holds locked whose entries are all segment files nobody maps is removed with them;
    anything else is left and reported. Only folders of this process's effective uid, unless
    ``all_users``. Returns a :class:`SweepReport`; never raises for one folder's failure."""
    roots = segment_bases() if root is None else [os.fspath(root)]
    report = SweepReport()
    me = os.geteuid()
    for r in roots:
        try:  # the root is the caller's configuration: it may be reached through a link
            root_fd = os.open(r, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            report.failed.append((r, f"cannot open: {e.strerror or e}"))
            continue
        try:
            try:
                with os.scandir(root_fd) as it:
                    names = sorted(e.name for e in it if parse_folder_name(e.name) is not None)
            except OSError as e:
                report.failed.append((r, f"cannot list: {e.strerror or e}"))
                continue
            for name in names:
                _sweep_folder(root_fd, name, os.path.join(r, name), me, all_users, dry_run,
                              report)
        finally:
            os.close(root_fd)
    if report.removed:
        log.info("stridemap: swept %d orphaned folder(s)", len(report.removed))
    return report


SWEEP_BATCH = 32  # files of a folder a sweep holds open (and locked) at once

_KINDS = {stat.S_IFDIR: "folder", stat.S_IFLNK: "symbolic link", stat.S_IFIFO: "FIFO",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}


def _sweep_folder(root_fd, name, path, me, all_users, dry_run, report):
    """One candidate folder: opened relative to the root without following a link, checked,
    locked, emptied and removed, or the reason it was not in ``report``."""
    try:
        fd = os.open(name, _DIR | os.O_NONBLOCK, dir_fd=root_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return  # a symlink or a file named like a folder (not ours to follow), or gone
        report.failed.append((path, f"cannot open: {e.strerror or e}"))
        return
    try:
        st = os.fstat(fd)
        if st.st_uid != me and not all_users:
            report.other_users.append(path)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.alive.append(path)
            return
        # The owner is gone. Removing needs write access to the folder and to the root (a dry
        # run says so too, rather than promising a removal that would fail).
        for dfd, what in ((fd, "the folder"), (root_fd, "the root")):
            if not os.access(".", os.W_OK | os.X_OK, dir_fd=dfd, effective_ids=True):
                report.failed.append((path, f"cannot remove: {what} is not writable"))
                return
        with os.scandir(fd) as it:
            entries = [e.name for e in it]
        files = []
        for entry in entries:  # every entry must be a segment file (types first, no fd)
            try:
                est = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = stat.S_IFMT(est.st_mode)
            if kind != stat.S_IFREG:
                what = _KINDS.get(kind, "file of unknown type")
                report.kept.append((path, f"owner dead, holds a {what} ({entry}) stridemap "
                                          "did not make; remove it by hand"))
                return
            if est.st_dev != st.st_dev:
                report.failed.append((os.path.join(path, entry),
                                      "a mount point: cannot be removed (unmount it first)"))
                return
            files.append((entry, est))
        # Then nobody may map them: in batches of SWEEP_BATCH (SPEC §7.5), so that a sweep
        # needs a bounded number of fds whatever the folder holds.
        for i in range(0, len(files), SWEEP_BATCH):
            if not _lock_and_unlink(fd, files[i:i + SWEEP_BATCH], path, dry_run, report):
                return
        if not dry_run:
            now = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                report.failed.append((path, "replaced while being swept"))
                return
            os.rmdir(name, dir_fd=root_fd)
            log.debug("stridemap: swept orphaned folder %s", path)
        report.removed.append(path)
    except OSError as e:
        report.failed.append((path, f"{e.strerror or e}"))
        log.warning("stridemap: sweep: %s: %s", path, e)
    finally:
        os.close(fd)


def _lock_and_unlink(fd, batch, path, dry_run, report):
    """Opens and locks ``LOCK_EX | LOCK_NB`` each ``(name, stat)`` of ``batch``, then unless
    ``dry_run`` unlinks them while the locks are held, and closes them. False (the reason in
    ``report``) when the folder must be kept: a reader maps a file, or one was replaced."""
    locked = []
    try:
        for entry, est in batch:
            try:
                efd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                              | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                continue
            locked.append((entry, efd))
            now = os.fstat(efd)
            if (now.st_dev, now.st_ino) != (est.st_dev, est.st_ino):
                report.failed.append((os.path.join(path, entry), "replaced while being checked"))
                return False
            try:
                fcntl.flock(efd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.in_use.append(path)
                report.kept.append((path, f"owner dead, {entry} still mapped by a reader"))
                return False
        if not dry_run:
            # Unlinked while the locks are held: no reader can start on a file being removed.
            for entry, _ in locked:
                try:
                    os.unlink(entry, dir_fd=fd)
                except FileNotFoundError:
                    pass
        return True
    finally:
        for _, efd in locked:
            os.close(efd)
