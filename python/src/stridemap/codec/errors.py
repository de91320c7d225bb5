"""Exceptions: one class per rule of SPEC.md, each carrying the rule id in ``.rule``.

Decoding errors (SPEC §3 R1–R22 and §4 C1–C4) derive from :class:`DescriptorError`, a
``ValueError``. Open-time errors (SPEC §6 O1–O12) derive from :class:`OpenError`, an
``OSError``; ``.errno`` is set when a system call failed. One open-time error is not a rule:
:class:`SegmentBusy` (SPEC §7: a segment stayed locked by its producer), whose ``rule`` is "".

>>> from stridemap import decode, BadMagic
>>> try:
...     decode(b"\\x88" + bytes(1023))
... except BadMagic as e:
...     print(e.rule)
R2
"""


class StridemapError(Exception):
    """Base of every stridemap error; ``rule`` is the SPEC.md id ("R4", "C1", "O7", ...)."""

    rule = ""


class DescriptorError(StridemapError, ValueError):
    """The bytes are not a valid descriptor (SPEC §3, §4)."""


class Truncated(DescriptorError):
    """R1: fewer than 1024 bytes."""

    rule = "R1"


class BadMagic(DescriptorError):
    """R2: the fixed record's magic is wrong."""

    rule = "R2"


class UnsupportedVersion(DescriptorError):
    """R3: a major version other than 1."""

    rule = "R3"


class BadChecksum(DescriptorError):
    """R4: the CRC-32C does not match."""

    rule = "R4"


class UnknownFlags(DescriptorError):
    """R5: a flag bit 4–31 is set in a 1.0 record."""

    rule = "R5"


class BadMode(DescriptorError):
    """R6: the mode bits are 3."""

    rule = "R6"


class ReservedNotZero(DescriptorError):
    """R7: a reserved byte of a 1.0 record is not zero."""

    rule = "R7"


class UnknownKind(DescriptorError):
    """R8: the dtype kind is not one of b i u f c V."""

    rule = "R8"


class BadItemsize(DescriptorError):
    """R9: the itemsize is not allowed for the kind."""

    rule = "R9"


class BadByteOrder(DescriptorError):
    """R10: the byte order does not fit the kind and itemsize."""

    rule = "R10"


class TooManyAxes(DescriptorError):
    """R11: more than 32 axes."""

    rule = "R11"


class UnusedAxisNotZero(DescriptorError):
    """R12: a shape or stride slot at or beyond ndim is not zero."""

    rule = "R12"


class PathTooLong(DescriptorError):
    """R13: path_len > 256."""

    rule = "R13"


class PathPaddingNotZero(DescriptorError):
    """R14: a path byte at or after path_len is not zero."""

    rule = "R14"


class PathNotUtf8(DescriptorError):
    """R15: the path is not valid UTF-8."""

    rule = "R15"


class PathContainsNul(DescriptorError):
    """R16: the path contains a NUL byte."""

    rule = "R16"


class SourceMismatch(DescriptorError):
    """R17: a path source without a path, or an fd source with one."""

    rule = "R17"


class BufferOverflow(DescriptorError):
    """R18: buffer_offset + buffer_len exceeds 2**63 - 1."""

    rule = "R18"


class FileTooShort(DescriptorError):
    """R19: file_len is smaller than the end of the buffer."""

    rule = "R19"


class SizeOverflow(DescriptorError):
    """R20: the array's size in bytes exceeds 2**63 - 1."""

    rule = "R20"


class StrideTooLarge(DescriptorError):
    """R21: a stride's magnitude exceeds buffer_len."""

    rule = "R21"


class OutOfBounds(DescriptorError):
    """R22: the elements do not all lie inside the buffer."""

    rule = "R22"


class CompactMalformed(DescriptorError):
    """C1: the compact (postcard) form cannot be decoded."""

    rule = "C1"


class CompactBadMagic(DescriptorError):
    """C2: the compact form's magic is wrong."""

    rule = "C2"


class AxisCountMismatch(DescriptorError):
    """C3: shape and strides have different lengths."""

    rule = "C3"


class BadTypestr(DescriptorError):
    """C4: the dtype string is not a byte order, a kind and a decimal itemsize."""

    rule = "C4"


class OpenError(StridemapError, OSError):
    """A valid descriptor could not be opened (SPEC §6)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class BadPath(OpenError):
    """O1: the path is not absolute or has '.', '..' or empty components."""

    rule = "O1"


class PathNotAllowed(OpenError):
    """O2: the path is not below an allowed root."""

    rule = "O2"


class SymlinkInPath(OpenError):
    """O3: a component below the root is a symbolic link."""

    rule = "O3"


class OpenFailed(OpenError):
    """O4: the file (or a folder on the way to it) could not be opened."""

    rule = "O4"


class ModeNotAllowed(OpenError):
    """O5: the requested mode is not granted by the descriptor."""

    rule = "O5"


class NotRegularFile(OpenError):
    """O6: ``fstat`` of the file fails (``errno`` EBADF: the fd passed is not open) or it is
    not a regular file."""

    rule = "O6"


class LengthMismatch(OpenError):
    """O7: the file's length is not the descriptor's file_len."""

    rule = "O7"


class IdentityMismatch(OpenError):
    """O8: the file's device and inode are not the descriptor's."""

    rule = "O8"


class NotSealed(OpenError):
    """O9: a passed fd is not sealed against shrinking."""

    rule = "O9"


class Sparse(OpenError):
    """O12: a file in shared memory (a tmpfs, a memfd) has fewer bytes allocated
    (``st_blocks`` * 512) than its buffer: reading its holes would allocate memory in this
    process (a peer's sealed memfd made by ``ftruncate`` alone)."""

    rule = "O12"


class StaleSegment(OpenError):
    """O10: the file's segment header is not valid, or does not match the descriptor (another
    segment, another generation: the segment was recycled, or the buffer is outside its data
    area). ``found`` is the header read (a :class:`~stridemap.segments.header.SegmentHeader`), or
    ``None`` when there is no valid one."""

    rule = "O10"

    def __init__(self, message: str, errno: int | None = None, found: object = None) -> None:
        super().__init__(message, errno)
        self.found = found


class SegmentBusy(OpenError):
    """The segment stayed locked exclusively by its producer (recycling or deleting it) for
    longer than the reader waits (SPEC §7). Not a verdict on the descriptor, so no rule id
    (``rule`` is ""): ask the producer for a fresh descriptor. ``errno`` is ``EWOULDBLOCK``."""

    rule = ""


class MapFailed(OpenError):
    """O11: mapping the buffer failed."""

    rule = "O11"


class ProducerError(StridemapError, OSError):
    """Sharing an array failed for a reason of the system (no file descriptor left, no memfd,
    an I/O error); ``errno`` is set when a system call failed. Nothing is left behind."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NoSpace(ProducerError):
    """There is no room for a segment: ``folder`` (a path, or "memfd" for anonymous shared
    memory), ``needed`` and ``available`` bytes, and ``limit``: the memory limit that refused it
    ("MemAvailable", or a cgroup's file), or None for a filesystem's free space. Nothing is
    left behind."""

    def __init__(self, message: str, folder: str | None = None, needed: int = 0,
                 available: int = 0, limit: str | None = None) -> None:
        import errno as _errno

        super().__init__(message, _errno.ENOSPC)
        self.folder = folder
        self.needed = needed
        self.available = available
        self.limit = limit

    @classmethod
    def make(cls, folder: str, needed: int, available: int,
             filesystem: tuple[str, str, int] | None = None) -> "NoSpace":
        """The error with a message that says what to do, which depends on the filesystem
        that holds ``folder``: ``filesystem`` is ``(mount point, type, size in bytes)``, or
        None when unknown."""
        where = folder
        other = "set STRIDEMAP_TEMP_FOLDER to a folder with room"
        point, fstype, size = filesystem or (None, None, 0)
        if folder == "memfd":
            fix = f"free memory, or share with kind='file' and {other}"
            where = "anonymous shared memory (memfd)"
        elif fstype == "tmpfs":
            bigger = _size_option(size + needed - min(available, needed))
            fix = f"{other}, or make the tmpfs bigger (`mount -o remount,size={bigger} {point}`)"
        elif fstype == "hugetlbfs":
            fix = (f"{other}, or reserve more huge pages (/proc/sys/vm/nr_hugepages) or mount "
                   f"{point} with a bigger size=")
        elif point is not None:
            fix = f"{other}, or free space on {point} ({fstype})"
        else:
            fix = other
        return cls(
            f"no space for a {needed}-byte stridemap segment in {where}: {available} bytes "
            f"available; {fix}",
            folder, needed, available,
        )

    @classmethod
    def memory(cls, folder: str, needed: int, available: int, limit: str,
               margin: int) -> "NoSpace":
        """A segment of shared memory that ``limit`` cannot hold with its ``margin`` (the
        admission check, SPEC §7, rule 6)."""
        where = ("anonymous shared memory (memfd)" if folder == "memfd"
                 else f"shared memory (the tmpfs {folder})")
        return cls(
            f"no memory for a {needed}-byte stridemap segment in {where}: {limit} leaves "
            f"{available} bytes available, and {margin} of them are kept free (64 MiB and 1/32 "
            "of the limit); free memory or raise the limit (a container's memory limit), or "
            "share a smaller array (with kind='file' and STRIDEMAP_TEMP_FOLDER on a disk "
            "folder, a segment takes no memory)",
            folder, needed, available, limit,
        )


def _size_option(nbytes):
    """A tmpfs ``size=`` of at least ``nbytes``: whole GiB from 1 GiB, else whole MiB."""
    if nbytes >= 1 << 30:
        return f"{-(-nbytes // (1 << 30))}G"
    return f"{-(-nbytes // (1 << 20))}M"


class NotShareable(StridemapError, ValueError):
    """The array cannot travel as a stridemap descriptor: its dtype has no stridemap typestr
    (object, structured, strings, datetimes), it has more than 32 axes, or (for ``export``) no
    stridemap segment or memory-mapped file backs it. Pools pickle such arrays instead."""


__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and issubclass(value, StridemapError)]

# Every class is public as ``stridemap.<Name>``: tracebacks and pickles name it there, so a
# caller catches what the traceback says, and a worker's exception unpickles in any process.
for _name in __all__:
    globals()[_name].__module__ = "stridemap"
del _name
