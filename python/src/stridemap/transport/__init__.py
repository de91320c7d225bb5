"""The transport: descriptors and fds over a Unix socket (:mod:`.fdpass`), and between the
processes of a pool, the reducers that hand an array over as a record plus an fd
(:mod:`.handoff`) through the sender's authenticated fd channel (:mod:`.channel` sends,
:mod:`.fetch` receives, :mod:`.wire` is what both agree on); the receiver's kept mappings are
:mod:`.mapcache`; what a receiver gets in place of an array it could not receive is
:mod:`.unreceived`.
"""
