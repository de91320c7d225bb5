"""The pickle of a :func:`stridemap.share_many` container through a pool: one handoff of its
segment (a descriptor and an fd, :mod:`.handoff`) and a manifest of its arrays, instead of one
handoff per array. Outside a pool (no :func:`stridemap.pools.install`), or once an entry no
longer lies in the segment, it pickles as a plain dict or list of its arrays.
"""

from ..segments.pack import PackedDict, PackedList, manifest_of, views_of
from . import handoff, unreceived


def reduce_packed(container, items):
    """``__reduce__`` of a :class:`~stridemap.segments.pack.PackedDict` or ``PackedList``."""
    plain = dict if isinstance(container, PackedDict) else list
    policy = handoff.installed()
    base = container.base
    manifest = manifest_of(base, items) if base is not None and policy is not None else None
    shared = handoff.handoff(base, policy) if manifest is not None else None
    if shared is None:
        return (plain, (items if plain is dict else [v for _, v in items],))
    return _rebuild_packed, (plain is dict, shared[1], manifest)


def _rebuild_packed(is_dict, args, manifest):
    """The receiving end: the segment once, then every view the manifest names (a failed
    receive: the stand-in of :func:`.handoff._rebuild`, which raises where it is used)."""
    base = handoff._rebuild(*args)
    if isinstance(base, unreceived.Unreceived):
        return base
    try:
        views = views_of(base, manifest)
    except (ValueError, TypeError) as e:
        return unreceived.stand_in(e)
    out = PackedDict(views) if is_dict else PackedList(v for _, v in views)
    out.base = base
    return out
