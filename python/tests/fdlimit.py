"""The start of the scripts that tests run in a child at a low fd limit (issue #19, #21):
``RLIMIT_NOFILE`` lowered before anything else is imported, and how the child counts its fds
and its mappings."""

import textwrap

LIMIT = 1024


def prelude(mapped="stridemap"):
    """Python source: the soft fd limit set to :data:`LIMIT`; ``fds()``, this process's open
    fds; ``maps()``, its mappings whose line in ``/proc/self/maps`` names ``mapped``.

    >>> "RLIMIT_NOFILE" in prelude() and "memfd:x" in prelude("memfd:x")
    True
    """
    return textwrap.dedent(f"""
        import os, resource
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           ({LIMIT}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


        def fds():
            return len(os.listdir("/proc/self/fd"))


        def maps():
            with open("/proc/self/maps") as f:
                return sum(1 for line in f if {mapped!r} in line)
    """)
