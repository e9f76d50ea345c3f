"""The haive WebSocket wire protocol: typed messages, negotiated extensions, frames.

Every message is an object with a ``"type"`` string: ``{"type": "chat", "text": "hi"}``,
sent as a JSON text frame (default) or a MessagePack binary frame. A plain WebSocket peer
that only speaks JSON objects works as is. Three extensions are *negotiated* during the
opening handshake and never assumed: the client offers them in the ``X-Haive-Features``
request header (or the ``haive_features`` query parameter, for browsers), the server
answers with the subset it accepts in the same response header, and each side uses only
what was accepted:

``batch``
    Messages queued together travel in one frame ``{"type": "batch", "messages": [...]}``:
    one frame per flush instead of one per message (trio pays per frame, so this is what
    lifts throughput past 100 k messages/s).
``recovery``
    Room messages carry a per-room sequence number ``"seq"``; a client re-joining a room
    with ``"since": <last seq>`` gets what it missed replayed from a bounded history, or a
    ``{"type": "gap"}`` notice when that is too old.
``msgpack``
    Messages travel as MessagePack in binary frames.

Control messages a client may send: ``join``, ``leave``, ``members``, ``rooms``,
``publish``, ``direct``, ``ping``. The server sends ``welcome``, ``joined``, ``left``,
``members``, ``rooms``, ``pong``, ``gap``, ``user_joined``, ``user_left`` and ``error``
(``{"type": "error", "code": ..., "message": ...}``, with the request's ``"id"`` if it had
one); a peer cannot relay messages of those types (:data:`SERVER_TYPES`) to others, and
the ``from``, ``room`` and ``seq`` of what it relays are the server's. A raw binary frame (without ``msgpack``) reaches handlers as
``{"type": "binary", "data": b"..."}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgpack
import orjson

from haive.dataflow.errors import SerializationError
from haive.dataflow.io.serializers import (
    JsonSerializer,
    MessagePackSerializer,
    typed_event_fields,
)

FEATURES_HEADER: Final = "X-Haive-Features"
CLIENT_ID_HEADER: Final = "X-Haive-Client-Id"
FEATURES_QUERY: Final = "haive_features"

#: Close codes. 1008 and 1009 are RFC 6455's; 4000-4999 are for applications.
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_TOO_BIG: Final = 1009
#: The requested client id is bound to another authenticated identity (its owner's).
CLOSE_CLIENT_ID_FORBIDDEN: Final = 4003
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_REPLACED: Final = 4009

#: Error codes of ``{"type": "error"}`` frames (also the keys of the server's error counters).
ERROR_CODES: Final = (
    "malformed",
    "invalid_message",
    "unknown_type",
    "invalid_room",
    "forbidden",
    "rate_limited",
    "too_many_rooms",
    "unknown_client",
    "handler_error",
    "too_big",
    "unauthorized",
    "slow_consumer",
    "client_id_forbidden",
    "reserved_type",
)

CONTROL_TYPES: Final = frozenset(
    {"batch", "join", "leave", "members", "rooms", "publish", "direct", "ping"}
)

#: Types only the server may send: a client acts on them (its id, its rooms' positions),
#: so a peer's ``publish`` or ``direct`` may not relay a message of one of these types.
SERVER_TYPES: Final = frozenset(
    {
        "welcome",
        "joined",
        "left",
        "members",
        "rooms",
        "pong",
        "gap",
        "user_joined",
        "user_left",
        "error",
        "batch",
        "binary",
    }
)

#: Fields of a relayed message that only the server sets (``from``, ``room``) or that the
#: receiving client trusts for deduplication (``seq``): a peer's values are replaced/dropped.
SERVER_FIELDS: Final = ("from", "room", "seq")

# fullmatch, not match with "$": "$" also matches before a trailing newline, which let
# "ada\n" pass for a client id (or a room) distinct from "ada" that prints the same.
_ROOM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}")


def valid_room(name: object) -> bool:
    """True for 1-128 characters of letters, digits and ``_.:@/+-``, starting alnum.

    Example::

        >>> valid_room("market_analysis"), valid_room("team/42"), valid_room(""), valid_room("a b")
        (True, True, False, False)
        >>> valid_room("lobby\\n")
        False
    """
    return isinstance(name, str) and _ROOM.fullmatch(name) is not None


def valid_client_id(name: object) -> bool:
    """True for 1-64 characters of letters, digits and ``_.:@+-``, starting alnum.

    Example::

        >>> valid_client_id("client-123"), valid_client_id("../x"), valid_client_id("ada\\n")
        (True, False, False)
    """
    return isinstance(name, str) and _CLIENT_ID.fullmatch(name) is not None


def parse_features(value: str | None) -> frozenset[str]:
    """The feature names of a header or query value such as ``"batch, recovery"``.

    Example::

        >>> sorted(parse_features(" batch,recovery ,, x"))
        ['batch', 'recovery', 'x']
    """
    if not value:
        return frozenset()
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())


class Codec:
    """One wire format: how a message becomes a frame and back.

    Example::

        >>> JSON.dumps({"type": "a"}), JSON.text
        (b'{"type":"a"}', True)
        >>> JSON.loads(JSON.batch([b'{"type":"a"}', b'{"type":"b"}']))
        {'type': 'batch', 'messages': [{'type': 'a'}, {'type': 'b'}]}
        >>> MSGPACK.loads(MSGPACK.batch([MSGPACK.dumps({"type": "a"})]))
        {'type': 'batch', 'messages': [{'type': 'a'}]}
    """

    __slots__ = ("_serializer", "name", "text")

    def __init__(self, name: str, text: bool) -> None:
        self.name = name
        self.text = text
        self._serializer = JsonSerializer() if name == "json" else MessagePackSerializer()

    def dumps(self, value: Any) -> bytes:
        """Encode a message; SerializationError names the type that cannot be encoded."""
        if self.text:
            return json_dumps(value)
        return self._serializer.dumps(value)

    def loads(self, data: str | bytes) -> Any:
        """Decode a frame; SerializationError says what is malformed."""
        return self._serializer.loads(data)

    def batch(self, parts: Sequence[bytes]) -> bytes:
        """One frame carrying already encoded messages, without decoding them again."""
        if self.text:
            return b'{"type":"batch","messages":[' + b",".join(parts) + b"]}"
        return _MP_BATCH_PREFIX + _mp_array_header(len(parts)) + b"".join(parts)

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"


_MP_BATCH_PREFIX: Final[bytes] = msgpack.packb({"type": "batch", "messages": None})[:-1]


def _mp_array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


JSON: Final = Codec("json", text=True)
MSGPACK: Final = Codec("msgpack", text=False)


class OutMessage:
    """A message on its way out, encoded at most once per wire variant.

    A room broadcast creates one ``OutMessage`` shared by every member's queue: each
    variant (JSON or MessagePack, with or without the sequence number) is encoded the
    first time a connection needs it and reused by the others.

    ``payload`` is a message dict, or ``bytes`` for a binary message.

    Example::

        >>> out = OutMessage({"type": "tick", "room": "r"}, seq=7)
        >>> out.encode(JSON, with_seq=True), out.encode(JSON, with_seq=False)
        (b'{"type":"tick","room":"r","seq":7}', b'{"type":"tick","room":"r"}')
        >>> OutMessage(b"\\x01").frame(JSON, False)
        (False, b'\\x01')
    """

    __slots__ = ("_json", "_json_seq", "_mp", "_mp_seq", "is_binary", "payload", "seq")

    def __init__(
        self, payload: dict[str, Any] | bytes, seq: int | None = None, json: bytes | None = None
    ) -> None:
        self.payload = payload
        self.seq = seq
        self.is_binary = type(payload) is not dict
        # ``json``: the payload already encoded (json_dumps), for a caller that had to.
        self._json: bytes | None = json
        self._json_seq: bytes | None = None
        self._mp: bytes | None = None
        self._mp_seq: bytes | None = None

    def encode(self, codec: Codec, with_seq: bool) -> bytes:
        """The encoded message for ``codec``, with ``"seq"`` if asked and known."""
        if codec is JSON:
            plain = self._json
            if plain is None:
                plain = self._json = json_dumps(self._value(False))
            if not with_seq or self.seq is None:
                return plain
            if self._json_seq is None:
                # Splice the number into the encoded object instead of encoding it again.
                tail = b'"seq":%d}' % self.seq
                self._json_seq = plain[:-1] + (tail if plain == b"{}" else b"," + tail)
            return self._json_seq
        if with_seq and self.seq is not None:
            if self._mp_seq is None:
                self._mp_seq = codec.dumps(self._value(True))
            return self._mp_seq
        if self._mp is None:
            self._mp = codec.dumps(self._value(False))
        return self._mp

    def _value(self, with_seq: bool) -> Any:
        payload = self.payload
        if not isinstance(payload, dict):
            return {"type": "binary", "data": bytes(payload)}
        if with_seq:
            return {**payload, "seq": self.seq}
        return payload

    def frame(self, codec: Codec, with_seq: bool) -> tuple[bool, bytes]:
        """(is_text, data) of this message alone in a frame."""
        if codec is JSON and self.is_binary:
            return False, bytes(self.payload)  # type: ignore[arg-type]
        return codec.text, self.encode(codec, with_seq)


def json_dumps(value: Any) -> bytes:
    # The hot path: orjson directly, with the errors of the core's JsonSerializer.
    try:
        data = orjson.dumps(value, default=typed_event_fields, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        raise SerializationError(f"json: cannot encode {type(value).__name__}: {exc}") from exc
    # orjson's result keeps its 4 KiB working buffer: a 50-byte message would hold 4 KiB
    # for as long as it is queued or kept in a room's history. Copy it to its real size
    # (one formatting copy: half the cost of the two slices and a concatenation).
    return b"%b" % data


def _as_codec(data: bytes, codec: Codec) -> bytes:
    # A message queued already encoded as JSON, for a connection that speaks ``codec``.
    return data if codec is JSON else codec.dumps(orjson.loads(data))


def encode_frames(
    items: Iterable[OutMessage | bytes],
    codec: Codec,
    *,
    with_seq: bool,
    batch: bool,
    max_batch_bytes: int,
) -> list[tuple[bool, bytes]]:
    """Frames for queued messages, in order: coalesced into batch frames when ``batch``.

    An item is an :class:`OutMessage`, or ``bytes``: a message (a dict, not binary data)
    already encoded as JSON, as a client queues what it sends.

    A batch frame holds messages up to ``max_batch_bytes``; a message bigger than that
    travels alone. Raw binary messages (JSON codec) always travel alone, in order.

    Example::

        >>> items = [OutMessage({"type": "m", "n": n}) for n in range(3)]
        >>> encode_frames(items, JSON, with_seq=False, batch=False, max_batch_bytes=100)[0]
        (True, b'{"type":"m","n":0}')
        >>> frames = encode_frames(items, JSON, with_seq=False, batch=True, max_batch_bytes=100)
        >>> len(frames), JSON.loads(frames[0][1])["messages"][2]
        (1, {'type': 'm', 'n': 2})
    """
    frames: list[tuple[bool, bytes]] = []
    if not batch:
        for out in items:
            if type(out) is bytes:
                frames.append((codec.text, _as_codec(out, codec)))
            else:
                frames.append(out.frame(codec, with_seq))  # type: ignore[union-attr]
        return frames
    parts: list[bytes] = []
    size = 0
    text = codec.text

    def flush() -> None:
        nonlocal size
        if len(parts) == 1:
            frames.append((text, parts[0]))
        elif parts:
            frames.append((text, codec.batch(parts)))
        parts.clear()
        size = 0

    for out in items:
        if type(out) is bytes:
            data = out if codec is JSON else _as_codec(out, codec)
        elif codec is JSON and out.is_binary:  # type: ignore[union-attr]
            flush()
            frames.append(out.frame(codec, with_seq))  # type: ignore[union-attr]
            continue
        else:
            data = out.encode(codec, with_seq)  # type: ignore[union-attr]
        if parts and size + len(data) > max_batch_bytes:
            flush()
        parts.append(data)
        size += len(data) + 1
    flush()
    return frames


def parse_frame(raw: str | bytes, *, msgpack_frames: bool, batch: bool) -> list[Any]:
    """The messages of one received frame (a batch frame yields several).

    Text frames are JSON; binary frames are MessagePack when that was negotiated, else a raw
    binary message. Raises SerializationError for a frame that cannot be decoded.

    Example::

        >>> parse_frame('{"type":"batch","messages":[{"type":"a"}]}', msgpack_frames=False, batch=True)
        [{'type': 'a'}]
        >>> parse_frame('{"type":"batch","messages":[]}', msgpack_frames=False, batch=False)
        [{'type': 'batch', 'messages': []}]
        >>> parse_frame(b"\\x00", msgpack_frames=False, batch=True)
        [{'type': 'binary', 'data': b'\\x00'}]
        >>> parse_frame(b"\\x81\\x91\\x01\\x01", msgpack_frames=True, batch=True)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.SerializationError: msgpack: message has a map key Python cannot use: unhashable type: 'list'

    """
    if type(raw) is str:
        # The common case, straight to orjson (Codec.loads and the core serializer add two
        # calls and a size check the connection's max_size already made).
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"json: malformed message: {exc}") from exc
        if type(value) is dict and batch and value.get("type") == "batch":
            messages = value.get("messages")
            if not isinstance(messages, list):
                raise SerializationError("batch frame: 'messages' must be a list")
            return messages
        return [value]
    if not isinstance(raw, str) and not msgpack_frames:
        return [{"type": "binary", "data": raw}]
    codec = JSON if isinstance(raw, str) else MSGPACK
    try:
        value = codec.loads(raw)
    except SerializationError:
        raise
    except Exception as exc:  # e.g. a MessagePack map keyed by an array: unhashable
        raise SerializationError(
            f"{codec.name}: malformed message: {type(exc).__name__}: {exc}"
        ) from exc
    if batch and type(value) is dict and value.get("type") == "batch":
        messages = value.get("messages")
        if not isinstance(messages, list):
            raise SerializationError("batch frame: 'messages' must be a list")
        return messages
    return [value]


class TokenBucket:
    """A rate limiter: ``rate`` tokens per second, holding at most ``burst``.

    :meth:`take` returns how many of ``n`` requested tokens are granted at time ``now``
    (seconds, e.g. ``trio.current_time()``).

    Example::

        >>> bucket = TokenBucket(rate=10, burst=5, now=0.0)
        >>> bucket.take(8, now=0.0), bucket.take(1, now=0.0), bucket.take(2, now=0.2)
        (5, 0, 2)
    """

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, n: int, now: float) -> int:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted
