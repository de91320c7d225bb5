"""Where an array's bytes live in this process (``/proc/self/maps``), for tests run in pool
workers. It imports nothing of stridemap."""


def _fields(array):
    """The fields of the ``/proc/self/maps`` line of the mapping that holds ``array``'s first
    byte, or None."""
    addr = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields
    return None


def mapping(array):
    """``(perms, name)`` of the mapping that holds ``array``'s first byte: perms such as
    "r--s" (read-only, shared), "rw-s" (writes shared), "rw-p" (private: copy-on-write or the
    heap); ``(None, "[unmapped]")`` when no mapping holds it."""
    fields = _fields(array)
    if fields is None:
        return None, "[unmapped]"
    return fields[1], fields[5].strip() if len(fields) > 5 else "[anonymous]"


def inode(array):
    """The inode of the file whose mapping holds ``array``'s first byte (0: anonymous); an
    AssertionError when no mapping holds it."""
    fields = _fields(array)
    if fields is None:
        raise AssertionError("the array lies in no mapping")
    return int(fields[4])
