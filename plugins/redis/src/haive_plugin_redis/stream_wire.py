"""Stream entries on the wire: items to entry fields and back, and hand-packed commands.

:class:`EntryCodec` turns an item into an entry's field/value pairs and back.
:func:`pack_xadds` / :func:`pack_payload_xadds` build ``XADD`` commands as raw RESP bytes
so that a whole batch goes out in one write with its replies read at once (the source's
dead letters, the sink's outputs, the exactly-once commit). Shared by the source, the
sink, the replay tools and the benchmarks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import ResponseError

from haive.dataflow.errors import (
    ConfigError,
    HaiveError,
    InvalidMessageError,
    SerializationError,
)
from haive.dataflow.io.serializers import JsonSerializer, Serializer, typed_event_fields
from haive.dataflow.io.trace_headers import TRACE_HEADER_NAMES

from ._resp import bulk

#: Entry IDs per ``XACK`` command.
_XACK_CHUNK = 10_000


class EntryCodec:
    """Turns items into stream entry fields and back.

    With a serializer (``"json"``, ``"msgpack"``, any registered name or a
    :class:`~haive.dataflow.io.serializers.Serializer`) an item is one field (``field``,
    default ``"data"``) holding its encoding. With ``"fields"`` an item is a flat mapping
    whose keys become the entry's fields (values as text), for interoperating with
    producers that write several fields.

    Example::

        >>> codec = EntryCodec("json")
        >>> codec.decode(codec.encode({"a": 1}))
        {'a': 1}
        >>> EntryCodec("fields").decode([b"k", b"v"])
        {'k': 'v'}
        >>> codec.decode([b"other", b"x"])
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.InvalidMessageError: entry has no 'data' field (fields: other)
    """

    def __init__(self, codec: str | Serializer | None = None, field: str = "data") -> None:
        if not isinstance(field, str) or not field:
            raise ConfigError(f"field must be a non-empty string, got {field!r}")
        #: False when no codec was given (JSON then), so a pipeline's serializer may replace it.
        self.chosen = codec is not None
        codec = "json" if codec is None else codec
        self.field = field
        self.field_bytes = field.encode()
        self.serializer: Serializer | None
        if codec == "fields":
            self.serializer = None
        elif isinstance(codec, Serializer):
            self.serializer = codec
        elif isinstance(codec, str):
            from haive.dataflow.plugins import get_registry

            self.serializer = get_registry().serializer(codec)()
        else:
            raise ConfigError(
                f"codec must be a serializer name, a Serializer or 'fields', got {codec!r}"
            )
        #: Hot-path encoders: orjson itself for the plain JSON serializer (no Python frame per
        #: item); errors from them are re-raised through the serializer for a clear message.
        self.fast_loads: Callable[[bytes], Any] | None = None
        self.fast_dumps: Callable[[Any], bytes] | None = None
        if type(self.serializer) is JsonSerializer and self.serializer.max_size is None:
            self.fast_loads = orjson.loads
            self.fast_dumps = functools.partial(
                orjson.dumps, default=typed_event_fields, option=orjson.OPT_SERIALIZE_NUMPY
            )
        elif self.serializer is not None:
            self.fast_loads = self.serializer.loads
            self.fast_dumps = self.serializer.dumps

    def adopt(self, serializer: Serializer, owner: str) -> EntryCodec:
        """The codec to use under a pipeline's ``set_serializer(serializer)``."""
        if self.chosen and self.serializer is not serializer:
            chosen = type(self.serializer).__name__ if self.serializer else "'fields'"
            raise ConfigError(
                f"{owner}: its codec ({chosen}) conflicts with the pipeline's "
                f"set_serializer({type(serializer).__name__}()); give only one of them"
            )
        return EntryCodec(serializer, self.field)

    def encode(self, item: Any) -> list[bytes]:
        """Field/value pairs, flattened."""
        if self.serializer is not None:
            return [self.field_bytes, self.serializer.dumps(item)]
        if not isinstance(item, Mapping) or not item:
            raise SerializationError(
                f"codec 'fields' needs a non-empty mapping per item, got {type(item).__name__}"
            )
        out: list[bytes] = []
        for key, value in item.items():
            if isinstance(value, bool) or not isinstance(value, bytes | str | int | float):
                raise SerializationError(
                    f"codec 'fields': field {key!r} must be bytes, str, int or float, "
                    f"got {type(value).__name__}"
                )
            out.append(str(key).encode())
            out.append(value if isinstance(value, bytes) else str(value).encode())
        return out

    def decode(self, fields: Sequence[bytes]) -> Any:
        """The item of one entry; SerializationError / InvalidMessageError when it is bad.

        The trace context fields (``traceparent``, ``tracestate``) a traced sink adds are
        not part of the item."""
        if self.serializer is None:
            return {
                fields[i].decode(errors="replace"): _text(fields[i + 1])
                for i in range(0, len(fields) - 1, 2)
                if fields[i] not in _TRACE_FIELDS
            }
        target = self.field_bytes
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == target:
                return self.serializer.loads(fields[i + 1])
        names = ", ".join(fields[i].decode(errors="replace") for i in range(0, len(fields), 2))
        raise InvalidMessageError(f"entry has no {self.field!r} field (fields: {names or 'none'})")


_TRACE_FIELDS = frozenset(name.encode() for name in TRACE_HEADER_NAMES)


def entry_trace_headers(fields: Sequence[bytes]) -> dict[str, str] | None:
    """The trace context fields of an entry (``traceparent``, ``tracestate``), or ``None``.

    Example::

        >>> entry_trace_headers([b"data", b"1", b"traceparent", b"00-ab-cd-01"])
        {'traceparent': '00-ab-cd-01'}
        >>> entry_trace_headers([b"data", b"1"]) is None
        True
    """
    if len(fields) <= 2:
        return None
    found: dict[str, str] = {}
    for i in range(0, len(fields) - 1, 2):
        if fields[i] in _TRACE_FIELDS:
            found[fields[i].decode()] = fields[i + 1].decode(errors="replace")
    return found if "traceparent" in found else None


def with_trace_fields(fields: list[bytes], headers: Mapping[str, str]) -> list[bytes]:
    """``fields`` with the trace headers appended as fields of the entry."""
    for name, value in headers.items():
        fields.append(name.encode())
        fields.append(value.encode())
    return fields


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _xadd_head(stream: bytes, maxlen: int | None, approximate: bool, nfields: int) -> bytes:
    trim: list[bytes] = []
    if maxlen is not None:
        trim = [b"MAXLEN", b"~", b"%d" % maxlen] if approximate else [b"MAXLEN", b"%d" % maxlen]
    parts = [b"XADD", stream, *trim, b"*"]
    return b"*%d\r\n" % (len(parts) + nfields) + b"".join(bulk(p) for p in parts)


def pack_xadds(
    stream: str, entries: Sequence[Sequence[bytes]], maxlen: int | None, approximate: bool
) -> bytes:
    """``XADD`` commands for ``entries`` (flat field/value lists), packed for one write.

    Example::

        >>> pack_xadds("s", [[b"data", b"1"]], None, True)
        b'*5\\r\\n$4\\r\\nXADD\\r\\n$1\\r\\ns\\r\\n$1\\r\\n*\\r\\n$4\\r\\ndata\\r\\n$1\\r\\n1\\r\\n'
    """
    key = stream.encode()
    heads: dict[int, bytes] = {}
    out: list[bytes] = []
    for fields in entries:
        n = len(fields)
        head = heads.get(n)
        if head is None:
            head = heads[n] = _xadd_head(key, maxlen, approximate, n)
        out.append(head)
        out.extend(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
    return b"".join(out)


def pack_payload_xadds(
    stream: str, field: bytes, payloads: Sequence[bytes], maxlen: int | None, approximate: bool
) -> bytes:
    """``XADD stream * field payload`` for each payload: the single-field fast path.

    Example::

        >>> pack_payload_xadds("s", b"data", [b"1"], None, True) == pack_xadds(
        ...     "s", [[b"data", b"1"]], None, True)
        True
    """
    prefix = _xadd_head(stream.encode(), maxlen, approximate, 2) + bulk(field)
    return b"".join([b"%s$%d\r\n%s\r\n" % (prefix, len(p), p) for p in payloads])


def _check_replies(replies: list[Any], what: str) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise HaiveError(f"{what}: Redis replied {reply}")
