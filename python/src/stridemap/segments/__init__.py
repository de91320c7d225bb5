"""Segments and their producer.

:func:`stridemap.share` runs one way through these modules: plan the segment (:mod:`.plan`:
temp root from :mod:`.roots`, huge pages from :mod:`.huge`), make it (:mod:`.make`: the memfd
or named file, its header from :mod:`.header`), fill it (:mod:`.fill`, with :mod:`.fresh` and
:mod:`.uffd` for fresh pages), freeze it, map and wrap it (:mod:`.share`). What backs an array
and the record of a view of it are :mod:`.backing`; handing views on is :mod:`.export` and
:mod:`.describe`; a segment's life in its process is :mod:`.lifetime`, and what dead producers
left behind is removed by :mod:`.sweep`.
"""
