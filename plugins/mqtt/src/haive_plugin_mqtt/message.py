"""The item an :class:`~haive_plugin_mqtt.source.MqttSource` yields, and payload codecs."""

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
from haive.dataflow.io.serializers import JsonSerializer, Serializer


@attrs.frozen(eq=False)
class MqttMessage:
    """One MQTT message as the source yields it: the decoded ``data`` and where it came from.

    ``timestamp`` is when the worker received it (seconds since the epoch, MQTT carries no
    broker time): the event time window nodes read by default (``item.timestamp``).
    ``properties`` are the MQTT 5 user properties; ``duplicate`` is the DUP flag (a
    redelivery after a reconnect). Messages compare by identity: the pipeline traces a
    failed item to its message that way.

    Example::

        >>> m = MqttMessage(topic="sensors/kitchen/temp", data={"c": 21.5}, payload=b'{"c":21.5}',
        ...                 qos=1, retain=False, properties={"unit": "C"},
        ...                 timestamp=1700000000.5)
        >>> m.data["c"], m.topic, m.properties["unit"]
        (21.5, 'sensors/kitchen/temp', 'C')
    """

    topic: str
    data: Any
    payload: bytes
    qos: int
    retain: bool
    properties: Mapping[str, str]
    timestamp: float
    duplicate: bool = False
    content_type: str | None = None


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

    def __init__(self, codec: str | Serializer, *, owner: str = "PayloadCodec") -> None:
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
                raise UnknownSettingError(
                    f"{owner}(codec={codec!r}): {error}; or 'bytes'"
                ) from None
        else:
            raise ConfigError(
                f"{owner}(codec={codec!r}): codec must be a serializer name, a Serializer or "
                f"'bytes', got {codec!r}"
            )
        # orjson itself for plain JSON: no Python frame per message.
        self._loads: Callable[[bytes], Any]
        self._dumps: Callable[[Any], bytes]
        if type(self.serializer) is JsonSerializer and self.serializer.max_size is None:
            self._loads = orjson.loads
            self._dumps = functools.partial(orjson.dumps, option=orjson.OPT_SERIALIZE_NUMPY)
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


def user_properties(properties: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """MQTT 5 user properties as paho takes them (a list of pairs).

    Example::

        >>> user_properties({"trace": "t1"})
        [('trace', 't1')]
    """
    return [(str(k), str(v)) for k, v in (properties or {}).items()]
