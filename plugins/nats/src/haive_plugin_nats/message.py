"""The item a :class:`~haive_plugin_nats.source.JetStreamSource` yields, and payload codecs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from haive.dataflow.errors import (
    ConfigError,
    SerializationError,
    UnknownPluginError,
    UnknownSettingError,
)
from haive.dataflow.io.serializers import JsonSerializer, Serializer, typed_event_fields


@attrs.frozen(eq=False)
class NatsMessage:
    """One JetStream message as the source yields it: the decoded ``data`` and where it
    came from.

    ``timestamp`` is when JetStream stored the message (seconds since the epoch): the
    event time window nodes read by default (``item.timestamp``). ``sequence`` is its
    stream sequence, ``deliveries`` how often it was delivered (1 the first time).
    Messages compare by identity: the pipeline traces a failed item to its message that way.

    Example::

        >>> m = NatsMessage(subject="orders.eu", data={"n": 1}, payload=b'{"n":1}',
        ...                 headers={"trace": "t1"}, timestamp=1700000000.5, sequence=7,
        ...                 deliveries=1, stream="ORDERS")
        >>> m.data["n"], m.subject, m.timestamp
        (1, 'orders.eu', 1700000000.5)
    """

    subject: str
    data: Any
    payload: bytes
    headers: Mapping[str, str]
    timestamp: float
    sequence: int
    deliveries: int
    stream: str
    consumer_sequence: int = 0


class PayloadCodec:
    """Turns items into message payloads and back: a serializer name (``"json"``,
    ``"msgpack"``, any registered one), a :class:`Serializer`, or ``"bytes"`` (payloads
    as they are; ``str`` items are encoded as UTF-8 when published).

    Example::

        >>> codec = PayloadCodec("json")
        >>> codec.decode(codec.encode({"a": 1}))
        {'a': 1}
        >>> PayloadCodec("bytes").encode("héllo")
        b'h\\xc3\\xa9llo'
    """

    def __init__(self, codec: str | Serializer) -> None:
        self.name = codec if isinstance(codec, str) else type(codec).__name__
        self.serializer: Serializer | None
        if codec == "bytes":
            self.serializer = None
        elif isinstance(codec, Serializer):
            self.serializer = codec
        elif isinstance(codec, str):
            from haive.dataflow.plugins import get_registry

            try:
                self.serializer = get_registry().serializer(codec)()
            except UnknownPluginError as error:
                raise UnknownSettingError(f"codec={codec!r}: {error}; or 'bytes'") from None
        else:
            raise ConfigError(
                f"codec must be a serializer name, a Serializer or 'bytes', got {codec!r}"
            )
        # orjson itself for plain JSON: no Python frame per message.
        self._loads: Callable[[bytes], Any]
        self._dumps: Callable[[Any], bytes]
        if type(self.serializer) is JsonSerializer and self.serializer.max_size is None:
            self._loads = orjson.loads
            self._dumps = functools.partial(
                orjson.dumps, default=typed_event_fields, option=orjson.OPT_SERIALIZE_NUMPY
            )
        elif self.serializer is not None:
            self._loads = self.serializer.loads
            self._dumps = self.serializer.dumps

    def decode(self, payload: bytes) -> Any:
        if self.serializer is None:
            return payload
        try:
            return self._loads(payload)
        except SerializationError:
            raise
        except Exception as error:
            raise SerializationError(
                f"payload is not valid {self.name}: {type(error).__name__}: {error}"
            ) from error

    def encode(self, item: Any) -> bytes:
        if self.serializer is None:
            if isinstance(item, bytes):
                return item
            if isinstance(item, str):
                return item.encode()
            raise SerializationError(
                f"codec 'bytes' publishes bytes or str items, got {type(item).__name__}"
            )
        try:
            return self._dumps(item)
        except SerializationError:
            raise
        except Exception as error:
            raise SerializationError(
                f"item cannot be encoded as {self.name}: {type(error).__name__}: {error}"
            ) from error


def user_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` without JetStream's control headers (``Nats-Msg-Id``,
    ``Nats-Expected-*``...): copied onto a new message they would make JetStream drop it as
    a duplicate or refuse it.

    Example::

        >>> user_headers({"Nats-Msg-Id": "a-1", "trace": "t1"})
        {'trace': 't1'}
    """
    return {k: v for k, v in (headers or {}).items() if not k.lower().startswith("nats-")}
