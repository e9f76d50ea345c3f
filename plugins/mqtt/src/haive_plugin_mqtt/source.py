"""MQTT source: a persistent session subscribed to topic filters, acknowledged after the
sink wrote.

Reading: the source's paho client lives in its
:class:`~haive.dataflow.runtime.bridge.ThreadBridge`; each batch is one crossing that runs
paho's network loop until messages are ready (or ``poll_timeout`` passed) and decodes them
there. Nothing reads the socket between batches, so a busy pipeline holds messages in the
broker: it sends at most ``receive_maximum`` QoS 1/2 messages not yet acknowledged (the
in-flight bound announced in CONNECT), never an unbounded local queue.

Acknowledging follows the core's protocol (:attr:`DataSource.acknowledges`): the client
runs with paho's ``manual_ack=True``; the source yields an empty batch every ``ack_every``
items and whenever nothing new is ready, the pipeline waits until everything yielded so far
was written by the sink (or dead-lettered, or filtered out) and calls
:meth:`MqttSource.acknowledge`, which sends the PUBACKs (QoS 1) / PUBRECs (QoS 2) in one
crossing, in the order the messages came. A crash before that: the broker keeps the
messages in the client's session (``clean_start=False``, ``session_expiry``) and sends them
again when a worker with the same ``client_id`` connects: at least once.

Failures (:meth:`~haive.dataflow.io.sources.DataSource.reject`) and payloads that do not
decode are published to ``dead_letter`` with the reason in MQTT 5 user properties,
confirmed by the broker before the originals are acknowledged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio
from paho.mqtt.packettypes import PacketTypes

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.runtime.bridge import ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.results import Result
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import (
    duration,
    instance_of,
    integer,
    invalid,
    optional_duration,
)

from .connection import (
    DEFAULT_URL,
    NEVER_EXPIRES,
    Endpoint,
    MqttAuthError,
    MqttConnectError,
    MqttPublishError,
    Outgoing,
    Session,
    check_client_id,
    check_qos,
    new_properties,
)
from .message import MqttMessage, PayloadCodec, user_properties
from .topics import check_topic, matches

DEFAULT_RECONNECT = RetryPolicy(attempts=60, backoff=0.1, max_backoff=2.0)
OWNER = "MqttSource"


@attrs.define
class MqttSourceStats:
    """What an :class:`MqttSource` did, counted per run (``haive run`` prints it)."""

    received: int = 0
    acknowledged: int = 0  # PUBACK / PUBREC sent (QoS 0 messages need none)
    dead_lettered: int = 0
    reconnects: int = 0  # connections made again after the broker went away
    sessions_lost: int = 0  # reconnects where the broker had no session left for us
    stale_acks: int = 0  # acks not sent: their connection was gone (the broker resends them)
    left_unacknowledged: int = 0  # received, not acknowledged when the source closed


@attrs.define(eq=False)
class _Unacked:
    item: MqttMessage
    mid: int
    qos: int
    generation: int


@attrs.frozen
class _Polled:
    """One crossing's messages, decoded in the bridge thread: the items with their
    (mid, qos), and the messages that did not decode with the reason."""

    items: list[MqttMessage]
    ids: list[tuple[int, int]]
    undecodable: list[tuple[MqttMessage, int, int, str]]
    generation: int


class MqttSource(DataSource):
    """Reads the MQTT messages matching ``topics`` (filters with ``+`` and ``#``) in the
    persistent session ``client_id``.

    Items are :class:`~haive_plugin_mqtt.message.MqttMessage` objects (``data`` decoded
    with ``codec``; topic, QoS, retain flag, user properties and receive time beside it).
    ``qos`` is the subscription's maximum QoS: a message comes with the lower of it and the
    QoS it was published with. QoS 1 and 2 messages are acknowledged only after the pipeline
    wrote them; QoS 0 messages are at most once by definition (nothing to acknowledge).

    The session outlives the worker by ``session_expiry`` (``None``: never expires): a
    worker restarted with the same ``client_id`` gets what arrived meanwhile (as far as the
    broker queues it: Mosquitto's ``max_queued_messages``, 1000 by default, bounds that).
    ``stop_when_idle`` ends the stream once nothing arrived for that long and everything
    was acknowledged (for batch jobs and tests; by default a source runs until cancelled).

    Example::

        >>> import trio, uuid
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> from haive_plugin_mqtt import MqttSink
        >>> root = f"doc/{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     source = MqttSource(f"{root}/+/temp", client_id=f"{root}-reader",
        ...                         stop_when_idle="300ms", session_expiry="10s")
        ...     await source.subscribe_only()    # the session exists before anything is sent
        ...     async with MqttSink(lambda item: f"{root}/{item['room']}/temp") as sink:
        ...         await sink.write_batch([{"room": "hall", "c": 19}, {"room": "den", "c": 22}])
        ...     pipeline = StreamingPipeline("temperatures")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda m: (m.topic, m.data["c"]))
        ...     out = MemorySink()
        ...     pipeline.set_sink(out)
        ...     await pipeline.execute()
        ...     return out.items
        >>> trio.run(main)
        [('doc/.../hall/temp', 19), ('doc/.../den/temp', 22)]
    """

    PLUGIN_NAME = "mqtt"
    acknowledges = True

    def __init__(
        self,
        topics: str | Sequence[str],
        *,
        client_id: str,
        url: str = DEFAULT_URL,
        qos: int = 1,
        session_expiry: Duration | None = "1h",
        receive_maximum: int = 1000,
        batch_size: int = 500,
        poll_timeout: Duration = "100ms",
        ack_every: int | None = None,
        keepalive: Duration = "60s",
        connect_timeout: Duration = "10s",
        codec: str | Serializer = "json",
        dead_letter: str | None = None,
        dead_letter_qos: int = 1,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
        stop_when_idle: Duration | None = None,
    ) -> None:
        filters = [topics] if isinstance(topics, str) else topics
        if isinstance(filters, str | bytes) or not isinstance(filters, Sequence) or not filters:
            raise ConfigError(invalid(OWNER, "topics", topics,
                                      "a topic filter or a non-empty list of them"))
        self.topics = [check_topic(OWNER, "topics", t, wildcards=True) for t in filters]
        self.client_id = check_client_id(OWNER, client_id)
        self.endpoint = Endpoint.parse(OWNER, url)
        self.url = url
        self.qos = check_qos(OWNER, "qos", qos)
        expiry = optional_duration(OWNER, "session_expiry", session_expiry, positive=False)
        self.session_expiry = NEVER_EXPIRES if expiry is None else min(int(expiry),
                                                                       NEVER_EXPIRES - 1)
        self.receive_maximum = integer(1, 65_535).check(OWNER, "receive_maximum",
                                                        receive_maximum)
        self.batch_size = integer(1).check(OWNER, "batch_size", batch_size)
        self.poll_timeout = duration(OWNER, "poll_timeout", poll_timeout)
        self.ack_every = integer(1).check(
            OWNER, "ack_every",
            ack_every if ack_every is not None else max(1, self.receive_maximum // 2),
        )
        self.keepalive = integer(5, 65_535).check(
            OWNER, "keepalive", round(duration(OWNER, "keepalive", keepalive)))
        self.connect_timeout = duration(OWNER, "connect_timeout", connect_timeout)
        self.codec = PayloadCodec(codec, owner=OWNER)
        if dead_letter is None:
            dead_letter = f"haive/dead-letters/{self.client_id}"
        self.dead_letter = check_topic(OWNER, "dead_letter", dead_letter, wildcards=False)
        for topic in self.topics:
            if matches(topic, self.dead_letter):
                raise ConfigError(invalid(
                    OWNER, "dead_letter", dead_letter,
                    f"a topic the filter {topic!r} does not match (the source would read "
                    "its own dead letters)"))
        self.dead_letter_qos = check_qos(OWNER, "dead_letter_qos", dead_letter_qos)
        self.reconnect = instance_of(RetryPolicy, "a RetryPolicy").check(
            OWNER, "reconnect", reconnect)
        self.stop_when_idle = optional_duration(OWNER, "stop_when_idle", stop_when_idle)
        self.stats = MqttSourceStats()
        self._unacked: deque[_Unacked] = deque()
        self._by_item: dict[int, _Unacked] = {}
        self._exit = AsyncExitStack()
        self._bridge: ThreadBridge | None = None
        self._session: Session | None = None

    def __repr__(self) -> str:
        return (f"MqttSource({self.topics!r}, client_id={self.client_id!r}, "
                f"url={str(self.endpoint)!r})")

    def use_serializer(self, serializer: Serializer) -> None:
        """Decode payloads with the pipeline's serializer (``set_serializer``)."""
        self.codec = PayloadCodec(serializer, owner=OWNER)

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        self.stats = MqttSourceStats()
        bridge = await self._exit.enter_async_context(
            open_thread_bridge(name=f"mqtt-source-{self.client_id}"))
        self._bridge = bridge
        session = Session(
            self.endpoint, self.client_id, clean_start=False,
            session_expiry=self.session_expiry, receive_maximum=self.receive_maximum,
            keepalive=self.keepalive, manual_ack=True, connect_timeout=self.connect_timeout,
        )
        self._exit.push_async_callback(bridge.run, session.close)
        await bridge.run(session.connect)
        await bridge.run(session.subscribe, [(topic, self.qos) for topic in self.topics])
        self._session = session

    async def aclose(self) -> None:
        # What was received and not acknowledged stays in the session: the broker sends it
        # again to the next connection with this client id.
        self.stats.left_unacknowledged += len(self._unacked)
        self._unacked.clear()
        self._by_item.clear()
        self._session = None
        self._bridge = None
        await self._exit.aclose()

    async def subscribe_only(self) -> None:
        """Create the session and its subscriptions in the broker, then disconnect: from now
        on the broker keeps what arrives for ``client_id`` (until ``session_expiry``)."""
        async with self:
            pass

    # -- reading ------------------------------------------------------------------------
    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        if self._bridge is None or self._session is None:
            raise MqttConnectError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        count = max(1, min(self.batch_size, chunk_size))
        idle_since = trio.current_time()
        while True:
            bridge, session = self._bridge, self._session
            try:
                polled = await bridge.run(self._poll, session, count)
            except ConnectionError as error:
                await self._reconnect(error)
                continue
            if polled.items or polled.undecodable:
                idle_since = trio.current_time()
                items = await self._accept(polled)
                if items:
                    yield items
                if len(self._unacked) >= self.ack_every:
                    yield []
                continue
            if self._unacked:
                yield []  # nothing more ready: ask the pipeline to acknowledge
                continue
            if (self.stop_when_idle is not None
                    and trio.current_time() - idle_since >= self.stop_when_idle):
                return

    def _poll(self, session: Session, count: int) -> _Polled:
        """In the bridge thread: read and decode up to ``count`` messages."""
        received = session.poll(count, self.poll_timeout)
        items: list[MqttMessage] = []
        ids: list[tuple[int, int]] = []
        undecodable: list[tuple[MqttMessage, int, int, str]] = []
        decode = self.codec.decode
        for arrived in received:
            payload = arrived.payload
            try:
                data = decode(payload)
                error = None
            except Exception as failure:
                data, error = None, f"{type(failure).__name__}: {failure}"
            pairs = arrived.user_properties
            message = MqttMessage(
                topic=arrived.topic, data=data, payload=payload, qos=arrived.qos,
                retain=arrived.retain, properties=dict(pairs) if pairs else {},
                timestamp=arrived.received_at, duplicate=arrived.duplicate,
                content_type=arrived.content_type,
            )
            if error is None:
                items.append(message)
                ids.append((arrived.mid, arrived.qos))
            else:
                undecodable.append((message, arrived.mid, arrived.qos, error))
        return _Polled(items, ids, undecodable, session.generation)

    async def _accept(self, polled: _Polled) -> list[MqttMessage]:
        """Record polled messages as unacknowledged; dead-letter what did not decode
        (confirmed, then acknowledged)."""
        self.stats.received += len(polled.items) + len(polled.undecodable)
        unacked, by_item, generation = self._unacked, self._by_item, polled.generation
        for item, (mid, qos) in zip(polled.items, polled.ids, strict=True):
            entry = _Unacked(item, mid, qos, generation)
            unacked.append(entry)
            by_item[id(item)] = entry
        if polled.undecodable:
            # Acknowledged at once once dead-lettered: MQTT wants acks in arrival order, and
            # messages yielded before may still be unacknowledged, so these join the queue
            # as handled entries acknowledged in turn.
            await self._publish_dead_letters(
                [self._dead_letter_of(message, reason, "decode")
                 for message, _, _, reason in polled.undecodable])
            for message, mid, qos, _ in polled.undecodable:
                unacked.append(_Unacked(message, mid, qos, generation))
        return polled.items

    async def _reconnect(self, error: BaseException) -> None:
        """The connection is gone: connect again (same client id, so the same session),
        with backoff; a refused connection after every attempt raises."""
        assert self._bridge is not None and self._session is not None
        for attempt in range(1, self.reconnect.attempts + 1):
            await trio.sleep(self.reconnect.delay(attempt))
            try:
                present = await self._bridge.run(self._session.connect)
            except MqttAuthError:
                raise
            except MqttConnectError as failure:
                if attempt == self.reconnect.attempts:
                    raise MqttConnectError(
                        f"{self!r} lost its connection ({error}) and could not reconnect "
                        f"after {attempt} attempts: {failure}") from failure
                continue
            self.stats.reconnects += 1
            if not present:
                self.stats.sessions_lost += 1
            await self._bridge.run(self._session.subscribe,
                                   [(topic, self.qos) for topic in self.topics])
            return

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: PUBACK (QoS 1) / PUBREC (QoS 2)
        their messages (one crossing)."""
        unacked = self._unacked
        done: list[tuple[int, int, int]] = []
        handled = 0
        # Dead-lettered undecodable messages sit between yielded items: acknowledge those
        # in turn too (they were not counted by the pipeline, they were never yielded).
        while unacked and (handled < count or id(unacked[0].item) not in self._by_item):
            entry = unacked.popleft()
            if self._by_item.pop(id(entry.item), None) is not None:
                handled += 1
            if entry.qos:
                done.append((entry.mid, entry.qos, entry.generation))
        if handled != count:
            raise ConfigError(f"acknowledge({count}): only {handled} items were unacknowledged")
        if done and self._bridge is not None and self._session is not None:
            sent = await self._bridge.run(self._session.ack, done)
            self.stats.acknowledged += sent
            self.stats.stale_acks += len(done) - sent

    async def reject(self, failed: list[Result]) -> None:
        """Publish the messages of ``failed`` to the dead-letter topic with the reason,
        confirmed by the broker before this returns."""
        letters: list[Outgoing] = []
        for result in failed:
            reason = f"{type(result.error).__name__}: {result.error}"
            entry = self._by_item.get(id(result.data))
            if entry is not None:
                letters.append(self._dead_letter_of(entry.item, reason, result.node or ""))
                continue
            try:  # a derived item: its message cannot be traced, the item itself is kept
                payload = self.codec.encode(result.data)
            except Exception:
                payload = repr(result.data).encode()
            derived = MqttMessage(topic="", data=result.data, payload=payload, qos=0,
                                  retain=False, properties={}, timestamp=0.0)
            letters.append(self._dead_letter_of(derived, reason, result.node or ""))
        if letters:
            await self._publish_dead_letters(letters)

    def _dead_letter_of(self, message: MqttMessage, reason: str, node: str) -> Outgoing:
        properties = new_properties(PacketTypes.PUBLISH)
        properties.UserProperty = [
            *user_properties(message.properties),
            ("haive-reason", reason[:4096]),
            ("haive-node", node),
            ("haive-topic", message.topic),
            ("haive-client-id", self.client_id),
        ]
        return Outgoing(self.dead_letter, message.payload, self.dead_letter_qos, False,
                        properties)

    async def _publish_dead_letters(self, letters: list[Outgoing]) -> None:
        assert self._bridge is not None and self._session is not None
        for _ in range(self.reconnect.attempts):
            try:
                await self._bridge.run(self._session.publish, letters, self.connect_timeout)
            except ConnectionError as error:
                await self._reconnect(error)
                continue
            refused = [m.error for m in letters if m.error is not None]
            if refused:
                raise MqttPublishError(
                    f"the broker at {self.endpoint} refused {len(refused)} dead letters to "
                    f"{self.dead_letter!r} ({refused[0]}); their messages stay "
                    "unacknowledged and come again")
            if all(m.confirmed for m in letters):
                self.stats.dead_lettered += len(letters)
                return
            if not self._session.connected:
                await self._reconnect(ConnectionError("connection lost while dead-lettering"))
        raise MqttPublishError(
            f"{sum(not m.confirmed for m in letters)} dead letters to {self.dead_letter!r} "
            f"were not confirmed by {self.endpoint}; their messages stay unacknowledged")

