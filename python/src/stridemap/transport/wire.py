"""The wire of the fd channel between the processes of a pool (:mod:`.channel` sends,
:mod:`.fetch` receives): what both ends must agree on.

- the sender greets each new connection with :data:`_MAGIC` and a 32-byte random nonce ``S``;
- the receiver answers a 32-byte random nonce ``C`` and ``HMAC-SHA256(authkey, b"c" + S + C)``;
- the sender answers ``b"\\x01"`` and ``HMAC-SHA256(authkey, b"s" + S + C)`` (its own proof of
  the key), or ``b"\\x00"`` (a wrong key) and closes;
- then requests, each an op byte and an id (16 bytes): ``b"\\x01"`` (fetch) is answered
  ``b"\\x01"`` plus the fd or ``b"\\x00"``; ``b"\\x02"`` (release: the receiver maps the
  segment already and needs no fd) is not answered: the sender lets go of what it offered;
  ``b"\\x03"`` (mailbox, id all zero) turns the connection into the receiver's *mailbox*
  (:mod:`.channel`).


Ids are :data:`ID_SIZE` random bytes.

>>> len(_mac(b"key", b"c", bytes(_NONCE), bytes(_NONCE))) == _MAC
True
"""

import hmac
from multiprocessing import process as _mp_process

HANDSHAKE_TIMEOUT = 5.0  # seconds a connection may take to authenticate, then it is closed
CONNECT_DEADLINE = 30.0  # seconds a receiver keeps trying to connect and authenticate
ID_SIZE = 16  # bytes of an offer's random id

_MAGIC = b"stridemap-fdch/1"
_NONCE = 32
_MAC = 32  # HMAC-SHA256
_HELLO = len(_MAGIC) + _NONCE
_ANSWER = _NONCE + _MAC
_ACCEPTED, _REFUSED = b"\x01", b"\x00"
_FOUND, _MISSING = b"\x01", b"\x00"
_FETCH, _RELEASE, _MAILBOX = b"\x01", b"\x02", b"\x03"
_REQUEST = 1 + ID_SIZE


def _mac(key, side, server_nonce, client_nonce):
    return hmac.digest(key, side + server_nonce + client_nonce, "sha256")


def _authkey():
    return bytes(_mp_process.current_process().authkey)
