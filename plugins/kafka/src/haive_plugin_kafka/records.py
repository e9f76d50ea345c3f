"""What a Kafka source yields: decoded values, or :class:`KafkaRecord` with the metadata."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import JsonSerializer, Serializer

#: Kafka's timestamp types (``Message.timestamp()[0]``).
TIMESTAMP_TYPES = {0: "not_available", 1: "create_time", 2: "log_append_time"}


@attrs.frozen(slots=True)
class KafkaRecord:
    """One Kafka record as a pipeline item: the decoded ``value`` and where it came from.

    ``timestamp`` is in seconds (Kafka's milliseconds / 1000), so a window node reads it as
    event time with its default ``timestamp="timestamp"``; ``key`` is the record key as
    bytes (None without one), ``headers`` a tuple of ``(name, bytes)`` pairs in order.

    Example::

        >>> from haive.dataflow.streaming import WindowedAggregateNode, TumblingWindow
        >>> record = KafkaRecord("clicks", 0, 41, b"ada", {"page": "/"}, (), 1700000000.5)
        >>> record.timestamp, record.key
        (1700000000.5, b'ada')
        >>> node = WindowedAggregateNode(name="per_user", window=TumblingWindow("1m"),
        ...                              key="key")   # event time from record.timestamp
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: float | None = None
    timestamp_type: str = "create_time"

    def header(self, name: str) -> bytes | None:
        """The value of the last header called ``name`` (None when there is none)."""
        found: bytes | None = None
        for header_name, value in self.headers:
            if header_name == name:
                found = value
        return found


class ValueCodec:
    """Turns record values (bytes) into items and items into values.

    ``None`` or ``"json"``: JSON (orjson); ``"bytes"``: values pass through as bytes; any
    other serializer name registered with the core (``"msgpack"``) or a
    :class:`~haive.dataflow.io.serializers.Serializer`.

    Example::

        >>> codec = ValueCodec("json")
        >>> codec.loads(codec.dumps({"n": 1}))
        {'n': 1}
        >>> ValueCodec("bytes").dumps(b"raw")
        b'raw'
    """

    def __init__(self, codec: str | Serializer | None = None) -> None:
        #: False when no codec was given (JSON then): a pipeline's serializer may replace it.
        self.chosen = codec is not None
        self.serializer: Serializer | None
        if codec is None or codec == "json":
            self.serializer = JsonSerializer()
        elif codec == "bytes":
            self.serializer = None
        elif isinstance(codec, Serializer):
            self.serializer = codec
        elif isinstance(codec, str):
            from haive.dataflow.plugins import get_registry

            self.serializer = get_registry().serializer(codec)()
        else:
            raise ConfigError(
                f"codec must be 'bytes', a serializer name or a Serializer, got {codec!r}"
            )
        self.loads: Callable[[bytes], Any]
        self.dumps: Callable[[Any], bytes]
        if self.serializer is None:
            self.loads = _identity
            self.dumps = _as_bytes
        elif type(self.serializer) is JsonSerializer and self.serializer.max_size is None:
            # orjson itself, no Python frame per item (errors are re-raised by the caller).
            self.loads = orjson.loads
            self.dumps = functools.partial(orjson.dumps, option=orjson.OPT_SERIALIZE_NUMPY)
        else:
            self.loads = self.serializer.loads
            self.dumps = self.serializer.dumps

    def __repr__(self) -> str:
        name = type(self.serializer).__name__ if self.serializer is not None else "bytes"
        return f"ValueCodec({name})"

    def adopt(self, serializer: Serializer, owner: str) -> ValueCodec:
        """The codec to use under a pipeline's ``set_serializer(serializer)``."""
        if self.chosen and self.serializer is not serializer:
            raise ConfigError(
                f"{owner}: its codec ({self!r}) conflicts with the pipeline's "
                f"set_serializer({type(serializer).__name__}()); give only one of them"
            )
        return ValueCodec(serializer)


def _identity(value: bytes) -> Any:
    return value


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str):
        return item.encode()
    raise TypeError(f"codec 'bytes' writes bytes or str values, got {type(item).__name__}")
