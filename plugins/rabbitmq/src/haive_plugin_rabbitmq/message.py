"""The item a :class:`~haive_plugin_rabbitmq.source.RabbitMQSource` yields, and payload codecs."""

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
class RabbitMessage:
    """One RabbitMQ message as the source yields it: the decoded ``body`` and where it came
    from.

    ``timestamp`` (seconds since the epoch) is the message's AMQP ``timestamp`` property
    when the publisher set one (:class:`~haive_plugin_rabbitmq.sink.RabbitMQSink` does),
    else when the source received it: the event time window nodes read by default
    (``item.timestamp``). ``redelivered`` is the broker's flag: the message was delivered
    before and not acknowledged (a worker died, a connection dropped). Messages compare by
    identity: the pipeline traces a failed item to its message that way.

    Example::

        >>> m = RabbitMessage(body={"n": 1}, payload=b'{"n":1}', routing_key="orders.eu",
        ...                   exchange="orders", headers={"trace": "t1"}, message_id="m-1",
        ...                   redelivered=False, timestamp=1700000000.0)
        >>> m.body["n"], m.routing_key, m.timestamp
        (1, 'orders.eu', 1700000000.0)
    """

    body: Any
    payload: bytes
    routing_key: str
    exchange: str
    headers: Mapping[str, Any]
    message_id: str | None
    redelivered: bool
    timestamp: float
    content_type: str | None = None
    correlation_id: str | None = None


class PayloadCodec:
    """Turns items into message bodies and back: a serializer name (``"json"``, the
    default, through orjson; ``"msgpack"``; any registered one), a :class:`Serializer`, or
    ``"bytes"`` (bodies as they are; ``str`` items are encoded as UTF-8 when published).

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

    @property
    def content_type(self) -> str | None:
        """The AMQP ``content_type`` the sink sets for this codec."""
        if self.serializer is None:
            return None
        if self.name == "json" or isinstance(self.serializer, JsonSerializer):
            return "application/json"
        return f"application/x-{self.name}"

    def decode(self, payload: bytes) -> Any:
        if self.serializer is None:
            return payload
        try:
            return self._loads(payload)
        except SerializationError:
            raise
        except Exception as error:
            raise SerializationError(
                f"body is not valid {self.name}: {type(error).__name__}: {error}"
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
