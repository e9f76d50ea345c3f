"""MQTT sink: each batch published in order and confirmed by the broker before
``write_batch`` returns.

A batch is one crossing of the sink's :class:`~haive.dataflow.runtime.bridge.ThreadBridge`:
every message goes out on one connection in the batch's order (so in order per topic),
at most the broker's receive maximum in flight, then the sink waits for the confirmations:
PUBACK for QoS 1, PUBCOMP for QoS 2 (QoS 0: written to the socket). ``write_batch``
returns only when every message was confirmed, so an at-least-once source upstream
acknowledges nothing the broker does not hold.

When the connection is lost the sink reconnects with backoff (``retry``) and paho sends
the unconfirmed QoS 1/2 messages again, in their order, with the DUP flag (a subscriber may
then get a copy twice: at least once). A message the broker refuses (a reason code >=
0x80, e.g. not authorized) or one larger than the broker's maximum packet size is rejected
with the reason (:class:`~haive.dataflow.io.sinks.RejectedItems`: the pipeline
dead-letters it), the others are written.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.runtime.bridge import ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import (
    duration,
    instance_of,
    integer,
    invalid,
    size,
)

from .connection import (
    DEFAULT_URL,
    Endpoint,
    MqttAuthError,
    MqttConnectError,
    MqttError,
    MqttPublishError,
    Outgoing,
    Session,
    check_client_id,
    check_qos,
    new_properties,
)
from .message import MqttMessage, PayloadCodec, user_properties
from .topics import check_topic

DEFAULT_RETRY = RetryPolicy(attempts=10, backoff=0.1, max_backoff=5.0)
OWNER = "MqttSink"
#: Bytes of a PUBLISH packet besides payload and topic (fixed header, packet id,
#: properties length), counted when checking the broker's maximum packet size.
PUBLISH_OVERHEAD = 16


class PayloadTooLargeError(MqttError, ValueError):
    """An item's message is larger than the broker (or ``max_payload_size``) accepts."""


@attrs.define
class MqttSinkStats:
    """What an :class:`MqttSink` did."""

    published: int = 0  # confirmed by the broker
    reconnects: int = 0
    rejected: int = 0  # refused by the broker, or too large


class MqttSink(StreamSink):
    """Publishes each item to ``topic``: a topic name, a template such as
    ``"sensors/{room}/temp"`` (filled from the item's keys or attributes), or a function of
    the item. An :class:`~haive_plugin_mqtt.message.MqttMessage` item goes to its own topic
    unless ``topic`` is given, with its payload and user properties.

    ``qos`` 0, 1 or 2; ``retain`` (a bool or a function of the item) makes the broker keep
    the last message of a topic for new subscribers; ``properties`` is a function of the
    item giving MQTT 5 user properties. ``max_payload_size`` rejects bigger payloads before
    sending (the broker's announced maximum packet size is always checked).

    Example::

        >>> import trio, uuid
        >>> root = f"doc/{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     async with MqttSink(root + "/{room}", qos=2, retain=True) as sink:
        ...         await sink.write_batch([{"room": "hall", "c": 19}, {"room": "den", "c": 22}])
        ...         await sink.clear_retained([f"{root}/hall", f"{root}/den"])
        ...     return sink.stats.published
        >>> trio.run(main)
        2
    """

    PLUGIN_NAME = "mqtt"

    def __init__(
        self,
        topic: str | Callable[[Any], str] | None = None,
        *,
        url: str = DEFAULT_URL,
        qos: int = 1,
        retain: bool | Callable[[Any], bool] = False,
        properties: Callable[[Any], Mapping[str, str]] | None = None,
        codec: str | Serializer = "json",
        client_id: str | None = None,
        max_in_flight: int = 1000,
        max_payload_size: int | str | None = None,
        publish_timeout: Duration = "10s",
        connect_timeout: Duration = "10s",
        keepalive: Duration = "60s",
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._template: str | None = None
        if topic is None or callable(topic):
            self.topic: str | Callable[[Any], str] | None = topic
        elif isinstance(topic, str) and "{" in topic:
            fields = [name for _, name, _, _ in string.Formatter().parse(topic) if name]
            if not fields:
                raise ConfigError(invalid(OWNER, "topic", topic, "a template naming fields"))
            self._template = topic
            self.topic = topic
        else:
            self.topic = check_topic(OWNER, "topic", topic, wildcards=False)
        self.endpoint = Endpoint.parse(OWNER, url)
        self.url = url
        self.qos = check_qos(OWNER, "qos", qos)
        if not isinstance(retain, bool) and not callable(retain):
            raise ConfigError(invalid(OWNER, "retain", retain, "a bool or a function of the item"))
        self.retain = retain
        if properties is not None and not callable(properties):
            raise ConfigError(invalid(OWNER, "properties", properties,
                                      "a function of the item giving a mapping, or None"))
        self.properties = properties
        self.codec = PayloadCodec(codec, owner=OWNER)
        self.client_id = "" if client_id is None else check_client_id(OWNER, client_id)
        self.max_in_flight = integer(1, 65_535).check(OWNER, "max_in_flight", max_in_flight)
        self.max_payload_size = (None if max_payload_size is None
                                 else size(OWNER, "max_payload_size", max_payload_size))
        self.publish_timeout = duration(OWNER, "publish_timeout", publish_timeout)
        self.connect_timeout = duration(OWNER, "connect_timeout", connect_timeout)
        self.keepalive = integer(5, 65_535).check(
            OWNER, "keepalive", round(duration(OWNER, "keepalive", keepalive)))
        self.retry = instance_of(RetryPolicy, "a RetryPolicy").check(OWNER, "retry", retry)
        self.stats = MqttSinkStats()
        self._exit = AsyncExitStack()
        self._bridge: ThreadBridge | None = None
        self._session: Session | None = None

    def __repr__(self) -> str:
        topic = self.topic if isinstance(self.topic, str | None) else "<function>"
        return f"MqttSink({topic!r}, url={str(self.endpoint)!r})"

    async def open(self) -> None:
        self.stats = MqttSinkStats()
        bridge = await self._exit.enter_async_context(open_thread_bridge(name="mqtt-sink"))
        self._bridge = bridge
        # No session kept: what is unconfirmed lives in this process, and paho sends it
        # again itself after a reconnect.
        session = Session(
            self.endpoint, self.client_id, clean_start=True, session_expiry=0,
            receive_maximum=self.max_in_flight, keepalive=self.keepalive, manual_ack=False,
            connect_timeout=self.connect_timeout, max_in_flight=self.max_in_flight,
        )
        self._exit.push_async_callback(bridge.run, session.close)
        await bridge.run(session.connect)
        self._session = session

    async def aclose(self) -> None:
        self._session = None
        self._bridge = None
        await self._exit.aclose()

    def _topic_of(self, item: Any) -> str:
        if self._template is not None:
            try:
                if isinstance(item, Mapping):
                    topic = self._template.format_map(item)
                else:
                    topic = self._template.format_map(_Attributes(item))
            except (KeyError, AttributeError, IndexError, ValueError) as error:
                raise ValueError(
                    f"topic template {self._template!r} cannot be filled from the item: "
                    f"{type(error).__name__}: {error}") from None
        elif callable(self.topic):
            topic = self.topic(item)
        elif self.topic is not None:
            return self.topic
        elif isinstance(item, MqttMessage):
            topic = item.topic
        else:
            raise ValueError("MqttSink(topic=None) publishes MqttMessage items only "
                             f"(to their own topic), got {type(item).__name__}")
        return check_topic(OWNER, "topic", topic, wildcards=False)

    def _message(self, item: Any) -> Outgoing:
        topic = self._topic_of(item)
        extra: list[tuple[str, str]] = []
        if isinstance(item, MqttMessage):
            payload = item.payload
            extra = user_properties(item.properties)
        else:
            payload = self.codec.encode(item)
        if self.properties is not None:
            extra += user_properties(self.properties(item))
        limit = self.max_payload_size
        if limit is not None and len(payload) > limit:
            raise PayloadTooLargeError(
                f"payload of {len(payload)} bytes for topic {topic!r} is larger than "
                f"max_payload_size={limit}")
        packet_limit = self._session.max_packet_size if self._session is not None else None
        if packet_limit is not None and len(payload) + len(topic) + PUBLISH_OVERHEAD > packet_limit:
            raise PayloadTooLargeError(
                f"payload of {len(payload)} bytes for topic {topic!r} does not fit the maximum "
                f"packet size of {packet_limit} bytes the broker at {self.endpoint} accepts")
        props: Properties | None = None
        if extra:
            props = new_properties(PacketTypes.PUBLISH)
            props.UserProperty = extra
        retain = self.retain(item) if callable(self.retain) else self.retain
        return Outgoing(topic, payload, self.qos, bool(retain), props)

    async def write_batch(self, items: list[Any]) -> None:
        bridge, session = self._bridge, self._session
        if bridge is None or session is None:
            raise MqttConnectError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        messages: list[Outgoing] = []
        indexes: list[int] = []
        rejected: dict[int, BaseException] = {}
        for index, item in enumerate(items):
            try:
                messages.append(self._message(item))
                indexes.append(index)
            except Exception as error:
                rejected[index] = error
        await self._publish(bridge, session, messages)
        for index, message in zip(indexes, messages, strict=True):
            if message.error is not None:
                rejected[index] = MqttPublishError(
                    f"the broker at {self.endpoint} refused the message to {message.topic!r}: "
                    f"{message.error}")
        self.stats.published += sum(m.confirmed for m in messages)
        if rejected:
            self.stats.rejected += len(rejected)
            raise RejectedItems(rejected)

    async def clear_retained(self, topics: list[str]) -> None:
        """Delete the retained message of each topic (an empty retained message, QoS 1)."""
        assert self._bridge is not None and self._session is not None
        await self._publish(self._bridge, self._session, [
            Outgoing(check_topic(OWNER, "topics", t, wildcards=False), b"", 1, True, None)
            for t in topics])

    async def _publish(self, bridge: ThreadBridge, session: Session,
                       messages: list[Outgoing]) -> None:
        for attempt in range(1, self.retry.attempts + 1):
            if not session.connected:
                try:
                    await bridge.run(session.connect)
                    self.stats.reconnects += 1
                except MqttAuthError:
                    raise
                except MqttConnectError as error:
                    if attempt == self.retry.attempts:
                        raise MqttPublishError(
                            f"{sum(not m.confirmed for m in messages)} of {len(messages)} "
                            f"messages not confirmed: cannot reconnect to {self.endpoint} "
                            f"after {attempt} attempts ({error})") from error
                    await trio.sleep(self.retry.delay(attempt))
                    continue
            await bridge.run(session.publish, messages, self.publish_timeout)
            unconfirmed = sum(not m.confirmed and m.error is None for m in messages)
            if not unconfirmed:
                return
            if attempt == self.retry.attempts:
                raise MqttPublishError(
                    f"{unconfirmed} of {len(messages)} messages not confirmed by the broker "
                    f"at {self.endpoint} after {attempt} attempts")
            await trio.sleep(self.retry.delay(attempt))


class _Attributes:
    """Lets a topic template read an object's attributes: ``"{room}"`` -> ``item.room``."""

    def __init__(self, item: Any) -> None:
        self._item = item

    def __getitem__(self, name: str) -> Any:
        return getattr(self._item, name)
