"""The SPEC codec: the descriptor (:mod:`.descriptor`), its fixed record (:mod:`.record`, SPEC
§1) and compact form (:mod:`.compact`, SPEC §3), decoding either (:mod:`.decode`), the checks
of every rule (:mod:`.rules`) and one exception class per rule (:mod:`.errors`). Pure
functions of bytes: no files, no maps.
"""
