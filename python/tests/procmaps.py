"""Where an array's bytes live in this process (``/proc/self/maps``), for tests run in pool
workers. It imports nothing of stridemap."""


def mapping(array):
    """``(perms, name)`` of the mapping that holds ``array``'s first byte: perms such as
    "r--s" (read-only, shared), "rw-s" (writes shared), "rw-p" (private: copy-on-write or the
    heap); ``(None, "[unmapped]")`` when no mapping holds it."""
    addr = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields[1], fields[5].strip() if len(fields) > 5 else "[anonymous]"
    return None, "[unmapped]"
