"""The session layer's frames: what crosses the data channel once both ends agreed on it.

Every frame is one binary data-channel message.  Two kinds (docs/session-layer.md):

- ``DATA``: ``u8 kind=1 | u8 flags | u64 seq | u64 ack | payload``.  ``seq`` numbers the
  frames of one direction of one session from 0; ``ack`` is the sender's cumulative
  acknowledgement of the other direction (every frame below it arrived), so a busy
  two-way stream needs no separate acks.  Flag bit 0: the message is text (UTF-8);
  bit 1: more chunks of the same message follow in the next ``seq``.
- ``ACK``: ``u8 kind=2 | u64 ack``.  A batched acknowledgement, and the heartbeat when
  the channel is otherwise idle.
- ``HELLO``: ``u8 kind=3 | u64 ack | u64 base | u64 sent``.  The first frame on every
  new channel: what this side has received (``ack``), the first of its frames the other
  side has not acknowledged (``base``: where its retransmission starts) and how many it
  has numbered (``sent``), so the other side can tell a peer that lost the session from
  one that resumes it.

Integers are big-endian.  Decoding is strict: an unknown kind or flag, a short frame or
trailing bytes after an ACK or a HELLO raise `ProtocolError`, which the machine reports and drops.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rondevu_core.errors import ProtocolError

__all__ = [
    "ACK_SIZE",
    "DATA_HEADER_SIZE",
    "AckFrame",
    "DataFrame",
    "Frame",
    "HelloFrame",
    "decode_frame",
    "encode_ack",
    "encode_data",
    "encode_hello",
]

KIND_DATA = 1
KIND_ACK = 2
KIND_HELLO = 3
FLAG_TEXT = 0x01
FLAG_MORE = 0x02
_KNOWN_FLAGS = FLAG_TEXT | FLAG_MORE

_DATA = struct.Struct(">BBQQ")
_ACK = struct.Struct(">BQ")
_HELLO = struct.Struct(">BQQQ")
DATA_HEADER_SIZE = _DATA.size
"""Bytes a DATA frame adds to its payload (18)."""
ACK_SIZE = _ACK.size
"""Bytes of an ACK frame (9)."""
_MAX_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFrame:
    """One chunk of one application message."""

    seq: int
    ack: int
    text: bool
    more: bool
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AckFrame:
    """A cumulative acknowledgement (also the heartbeat)."""

    ack: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloFrame:
    """Where this side stands, sent first on every new channel."""

    ack: int
    base: int
    sent: int


Frame = DataFrame | AckFrame | HelloFrame


def encode_data(
    *, seq: int, ack: int, text: bool, more: bool, payload: bytes | memoryview
) -> bytes:
    """The wire bytes of a DATA frame."""
    flags = (FLAG_TEXT if text else 0) | (FLAG_MORE if more else 0)
    return b"".join((_DATA.pack(KIND_DATA, flags, seq, ack), payload))


def encode_ack(ack: int) -> bytes:
    """The wire bytes of an ACK frame."""
    return _ACK.pack(KIND_ACK, ack)


def encode_hello(ack: int, base: int, sent: int) -> bytes:
    """The wire bytes of a HELLO frame."""
    return _HELLO.pack(KIND_HELLO, ack, base, sent)


def decode_frame(data: bytes) -> Frame:
    """Parse one received message; `ProtocolError` when it is not a valid frame."""
    if not data:
        raise ProtocolError("empty session frame")
    kind = data[0]
    if kind == KIND_DATA:
        if len(data) < _DATA.size:
            raise ProtocolError("short DATA frame")
        _, flags, seq, ack = _DATA.unpack_from(data)
        if flags & ~_KNOWN_FLAGS:
            raise ProtocolError("unknown DATA frame flags")
        return DataFrame(
            seq=seq,
            ack=ack,
            text=bool(flags & FLAG_TEXT),
            more=bool(flags & FLAG_MORE),
            payload=bytes(data[_DATA.size :]),
        )
    if kind == KIND_ACK:
        if len(data) != _ACK.size:
            raise ProtocolError("ACK frame of the wrong size")
        return AckFrame(ack=_ACK.unpack(data)[1])
    if kind == KIND_HELLO:
        if len(data) != _HELLO.size:
            raise ProtocolError("HELLO frame of the wrong size")
        _, ack, base, sent = _HELLO.unpack(data)
        return HelloFrame(ack=ack, base=base, sent=sent)
    raise ProtocolError("unknown session frame kind")
