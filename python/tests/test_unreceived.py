"""What a task is told when its array could not be received: the rule and what to do."""

import errno

import pytest

import stridemap
from stridemap.transport import unreceived


def test_out_of_fds_says_to_raise_the_limit():
    e = stridemap.MapFailed("O11: cannot map 1048576 bytes at 4096: Too many open files",
                            errno.EMFILE)
    got = unreceived.error_of(e)
    assert isinstance(got, stridemap.MapFailed) and got.__cause__ is e
    assert "ulimit -n" in str(got) and "address space" not in str(got)


def test_a_stand_in_raises_the_error_where_it_is_used():
    e = stridemap.NotSealed("O9: no")
    stand_in = unreceived.stand_in(e)
    with pytest.raises(stridemap.NotSealed, match="sealed against shrinking"):
        stand_in.sum()
