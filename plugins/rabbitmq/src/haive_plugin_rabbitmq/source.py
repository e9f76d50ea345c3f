"""RabbitMQ source: a queue consumed with manual acks, sent only after the sink wrote.

Reading: the source consumes ``queue`` on a channel whose ``basic.qos`` prefetch count is
``prefetch``: the broker delivers at most that many messages not yet acknowledged, so the
prefetch is the backpressure bound. The deliveries wait in the source's
:class:`~haive.dataflow.runtime.bridge.AsyncioBridge` (never more than ``prefetch`` of them)
and cross to trio in batches of up to ``batch_size``, decoded in the bridge's loop, one
crossing per batch. A full pipeline stops acknowledging, so the broker stops delivering and
the messages stay in the queue.

Acknowledging follows the core's protocol (:attr:`DataSource.acknowledges`): the source
yields an empty batch every ``ack_every`` items and whenever nothing new is ready; the
pipeline waits until everything yielded so far is written by the sink (or dead-lettered, or
filtered out) and calls :meth:`RabbitMQSource.acknowledge`, which sends one
``basic.ack(multiple=True)`` for those messages (one per channel, should the connection
have been restored in between). A crash before that makes the broker redeliver them (with
``redelivered`` set): at least once.

Failures (the pipeline's :meth:`~haive.dataflow.io.sources.DataSource.reject`) and bodies
that do not decode are **published to the dead-letter exchange** with the reason in the
``x-haive-reason`` header, mandatory and confirmed by the broker, and only then
acknowledged. The alternative, ``basic.nack(requeue=False)`` with the queue's
``x-dead-letter-exchange``, was not chosen: a nack carries no reason, and a queue without a
dead-letter exchange (or one whose dead letters route nowhere) drops the message silently;
a classic queue's own dead-lettering is not confirmed either. Publishing first, then
acknowledging, never loses a message: a crash in between dead-letters it twice.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiormq.abc
import aiormq.exceptions
import attrs
import trio
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    ExchangeType,
)

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.runtime.bridge import AsyncioBridge, open_asyncio_bridge
from haive.dataflow.runtime.results import Result
from haive.dataflow.runtime.units import Duration, parse_duration

from .connection import (
    DEFAULT_URL,
    RabbitMQError,
    check_connect_options,
    check_name,
    check_url,
    close,
    close_raw,
    connect,
    not_found,
    queue_counts,
    raw_channel,
    redacted,
)
from .message import PayloadCodec, RabbitMessage
from .publishing import Outgoing, publish_all

EXCHANGE_TYPES = tuple(kind.value for kind in ExchangeType)
HEADER_PREFIX = "x-haive-"


def positive_int(owner: str, name: str, value: object, *, limit: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 1
        or (limit is not None and value > limit)
    ):
        bound = f" and <= {limit}" if limit is not None else ""
        raise ConfigError(f"{owner}: {name} must be an integer >= 1{bound}, got {value!r}")
    return value


@attrs.define
class RabbitMQSourceStats:
    """What a :class:`RabbitMQSource` did, counted per run (``haive run`` prints it).

    Example::

        >>> stats = RabbitMQSourceStats(received=10, acknowledged=8)
        >>> stats.received - stats.acknowledged  # held unacknowledged
        2
    """

    received: int = 0
    acknowledged: int = 0
    dead_lettered: int = 0  # failures and malformed bodies, confirmed on the dead-letter exchange
    malformed: int = 0  # bodies the codec could not decode (dead-lettered)
    ack_errors: int = 0  # acks that could not be sent (their messages come back: duplicates)
    dropped_stale: int = 0  # delivered on a channel lost before they were read: redelivered
    left_unacknowledged: int = 0  # read, not acknowledged when the source closed


@attrs.define(eq=False)
class _Unacked:
    item: RabbitMessage
    raw: AbstractIncomingMessage


class RabbitMQSource(DataSource):
    """Consumes the RabbitMQ queue ``queue`` with manual acks (at least once).

    Every worker consuming the same queue shares its messages (each goes to one of them).
    Items are :class:`~haive_plugin_rabbitmq.message.RabbitMessage` objects (``body``
    decoded with ``codec``; routing key, exchange, headers, message id, redelivered flag and
    timestamp beside it).

    With ``declare=True`` the queue is declared (``durable``, ``queue_arguments``) and, when
    ``exchange`` is given, that exchange too (``exchange_type``, durable); otherwise both
    must exist (:class:`~haive_plugin_rabbitmq.connection.UnknownQueueError`,
    :class:`~haive_plugin_rabbitmq.connection.UnknownExchangeError`). With ``exchange`` the
    queue is bound to it with each of ``routing_keys``. Dead letters go to
    ``dead_letter_exchange`` (default: the default exchange) with ``dead_letter_routing_key``
    (default ``<queue>.dead``, the queue of that name, declared with ``declare=True``).

    Example::

        >>> import trio, uuid
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> from haive_plugin_rabbitmq import RabbitMQSink, delete_queues
        >>> queue = f"doc-{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     source = RabbitMQSource(queue, declare=True, stop_when_drained=True)
        ...     async with source:  # declares the queue
        ...         pass
        ...     async with RabbitMQSink(routing_key=queue) as producer:
        ...         await producer.write_batch([{"n": n} for n in range(5)])
        ...     pipeline = StreamingPipeline("copy")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda m: m.body["n"] * 10)
        ...     sink = MemorySink()
        ...     pipeline.set_sink(sink)
        ...     report = await pipeline.execute()
        ...     await delete_queues(queue, f"{queue}.dead")
        ...     return report.processed, sink.items
        >>> trio.run(main)
        (5, [0, 10, 20, 30, 40])
    """

    PLUGIN_NAME = "rabbitmq"
    acknowledges = True

    def __init__(
        self,
        queue: str,
        *,
        url: str = DEFAULT_URL,
        connect_options: Mapping[str, Any] | None = None,
        declare: bool = False,
        durable: bool = True,
        queue_arguments: Mapping[str, Any] | None = None,
        exchange: str | None = None,
        exchange_type: str = "topic",
        routing_keys: Sequence[str] = (),
        prefetch: int = 1000,
        batch_size: int = 250,
        fetch_timeout: Duration = "100ms",
        ack_every: int | None = None,
        codec: str | Serializer = "json",
        dead_letter_exchange: str = "",
        dead_letter_routing_key: str | None = None,
        confirm_timeout: Duration = "30s",
        stop_when_drained: bool = False,
    ) -> None:
        owner = "RabbitMQSource"
        self.queue = check_name(owner, "queue", queue)
        self.url = check_url(owner, url)
        self.connect_options = check_connect_options(owner, connect_options)
        if not isinstance(declare, bool):
            raise ConfigError(f"{owner}: declare must be True or False, got {declare!r}")
        self.declare = declare
        self.durable = bool(durable)
        if queue_arguments is not None and not isinstance(queue_arguments, Mapping):
            raise ConfigError(
                f"{owner}: queue_arguments must be a mapping (x-queue-type...), got "
                f"{queue_arguments!r}"
            )
        self.queue_arguments = dict(queue_arguments or {})
        if self.queue_arguments and not declare:
            raise ConfigError(
                f"{owner}: queue_arguments={self.queue_arguments!r} needs declare=True (an "
                "existing queue is used as it is)"
            )
        if exchange is not None:
            exchange = check_name(owner, "exchange", exchange)
        self.exchange = exchange
        if exchange_type not in EXCHANGE_TYPES:
            raise ConfigError(
                f"{owner}: exchange_type must be one of {EXCHANGE_TYPES}, got {exchange_type!r}"
            )
        self.exchange_type = exchange_type
        if isinstance(routing_keys, str):
            raise ConfigError(
                f"{owner}: routing_keys must be a list of routing keys, got the string "
                f"{routing_keys!r} (write [{routing_keys!r}])"
            )
        self.routing_keys = tuple(
            check_name(owner, "routing_keys[]", key, empty=True) for key in routing_keys
        )
        if exchange is None and self.routing_keys:
            raise ConfigError(
                f"{owner}: routing_keys={list(self.routing_keys)!r} needs exchange='...' "
                "(the exchange to bind the queue to)"
            )
        if exchange is not None and not self.routing_keys:
            raise ConfigError(
                f"{owner}: exchange={exchange!r} needs routing_keys (e.g. ['#'] for every "
                "message of a topic exchange, [''] for a fanout exchange)"
            )
        self.prefetch = positive_int(owner, "prefetch", prefetch, limit=65535)
        self.batch_size = positive_int(owner, "batch_size", batch_size)
        self.fetch_timeout = parse_duration(fetch_timeout, what="fetch_timeout")
        self.ack_every = positive_int(
            owner, "ack_every",
            ack_every if ack_every is not None else max(1, self.prefetch // 2),
        )
        if self.ack_every > self.prefetch:
            raise ConfigError(
                f"{owner}: ack_every={self.ack_every} must be <= prefetch={self.prefetch}: the "
                "broker delivers nothing more once prefetch messages are unacknowledged"
            )
        self.codec = PayloadCodec(codec)
        self.dead_letter_exchange = check_name(
            owner, "dead_letter_exchange", dead_letter_exchange, empty=True
        )
        # The default follows the queue, also when `haive worker --group` names another.
        self._dead_letter_key_follows_queue = dead_letter_routing_key is None
        if dead_letter_routing_key is None:
            dead_letter_routing_key = f"{self.queue}.dead"
        self.dead_letter_routing_key = check_name(
            owner, "dead_letter_routing_key", dead_letter_routing_key, empty=True
        )
        if not self.dead_letter_exchange and self.dead_letter_routing_key == self.queue:
            raise ConfigError(
                f"{owner}: dead_letter_routing_key {self.queue!r} is the queue itself: the "
                "source would read its own dead letters"
            )
        self.confirm_timeout = parse_duration(confirm_timeout, what="confirm_timeout")
        self.stop_when_drained = stop_when_drained
        #: This member's name (``haive worker --consumer``): its connection's name.
        self.member_name: str | None = None
        self.stats = RabbitMQSourceStats()
        self._unacked: deque[_Unacked] = deque()
        self._by_item: dict[int, _Unacked] = {}
        self._dead_id_prefix = f"dead-{secrets.token_hex(8)}"
        self._dead_ids = itertools.count(1)
        self._exit = AsyncExitStack()
        self._bridge: AsyncioBridge | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None

    def __repr__(self) -> str:
        return f"RabbitMQSource({self.queue!r}, url={redacted(self.url)!r})"

    # -- haive worker: the consumers of one queue are the group -------------------------
    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Consume queue ``group`` (RabbitMQ's competing consumers share a queue, so the
        queue is the group) as member ``consumer`` (its connection's name), before opening
        (``haive worker --group QUEUE --consumer NAME``). A default dead-letter routing key
        (``<queue>.dead``) follows the queue."""
        if self._bridge is not None:
            raise ConfigError(f"{self!r}.join: the source is already open")
        if group is not None:
            self.queue = check_name("RabbitMQSource", "group", group)
            if self._dead_letter_key_follows_queue:
                self.dead_letter_routing_key = f"{self.queue}.dead"
        if consumer is not None:
            if not isinstance(consumer, str) or not consumer:
                raise ConfigError(
                    f"RabbitMQSource: consumer must be a non-empty string, got {consumer!r}"
                )
            self.member_name = consumer

    def membership(self) -> dict[str, Any]:
        """What ``haive worker`` prints about this member when it stops."""
        return {
            "group": self.queue,
            "consumer": self.member_name or repr(self),
            "queue": self.queue,
            "delivery": "at_least_once",
            **attrs.asdict(self.stats),
        }

    def use_serializer(self, serializer: Serializer) -> None:
        """Decode bodies with the pipeline's serializer (``set_serializer``)."""
        self.codec = PayloadCodec(serializer)

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            # A failed open leaves nothing behind: the bridge's thread and the connection
            # are closed here (``async with`` does not call aclose when open raises).
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def _open(self) -> None:
        self.stats = RabbitMQSourceStats()
        bridge = await self._exit.enter_async_context(
            open_asyncio_bridge(name=f"rabbitmq-source-{self.queue}")
        )
        self._bridge = bridge
        connection = await connect(
            bridge, self.url, self.connect_options, name=self.member_name or repr(self)
        )
        self._connection = connection
        self._exit.push_async_callback(bridge.run, close, connection)
        try:
            self._channel, self._queue = await bridge.run(_set_up, self, connection)
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            text = str(error)
            if "exchange" in text:
                name = self.exchange if f"'{self.exchange}'" in text else self.dead_letter_exchange
                raise not_found(error, "exchange", name or "", self.url) from error
            name = self.queue if f"'{self.queue}'" in text else self.dead_letter_routing_key
            raise not_found(error, "queue", name, self.url) from error
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            raise RabbitMQError(
                f"RabbitMQ refused to declare or bind {self.queue!r} as configured (durable="
                f"{self.durable}, queue_arguments={self.queue_arguments}, exchange_type="
                f"{self.exchange_type!r}): it exists with other settings ({error})"
            ) from error
        except aiormq.exceptions.ChannelAccessRefused as error:
            raise RabbitMQError(
                f"RabbitMQ refused {redacted(self.url)}'s user access to {self.queue!r} or its "
                f"exchanges ({error})"
            ) from error

    async def aclose(self) -> None:
        # What was read and not acknowledged is requeued by the broker when the connection
        # closes, and delivered again (redelivered=True).
        self.stats.left_unacknowledged += len(self._unacked)
        self._unacked.clear()
        self._by_item.clear()
        self._queue = None
        self._channel = None
        self._connection = None
        self._bridge = None
        await self._exit.aclose()

    # -- reading ------------------------------------------------------------------------
    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        bridge, queue, connection = self._bridge, self._queue, self._connection
        if bridge is None or queue is None or connection is None:
            raise RabbitMQError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        count = max(1, min(self.batch_size, chunk_size))
        consumer = _Consumer(queue, self.codec, self.stats)
        await bridge.run(consumer.start)
        # One decoded batch waits at most; every message counts against the prefetch anyway.
        stream = bridge.stream(consumer.batches, count, self.fetch_timeout, max_buffered=1)
        # Drained: twice in a row nothing came, nothing is unacknowledged, nothing waits in
        # the loop and the queue has nothing ready. Twice, because a delivery the broker
        # sent after an ack may still be on its way when the queue already counts 0.
        drained_checks = 0
        async with stream as delivered:
            async for batch in delivered:
                if batch.raws or batch.undecodable:
                    drained_checks = 0
                    items = await self._accept(batch)
                    if items:
                        yield items
                    if len(self._unacked) >= self.ack_every:
                        yield []
                    continue
                if self._unacked:
                    yield []  # nothing more ready: ask the pipeline to acknowledge
                    continue
                if self.stop_when_drained:
                    if not await self._drained(connection, consumer):
                        drained_checks = 0
                    elif (drained_checks := drained_checks + 1) >= 2:
                        return

    async def _accept(self, batch: _Delivered) -> list[RabbitMessage]:
        """Record a batch as unacknowledged; dead-letter what did not decode (confirmed,
        then acked)."""
        self.stats.received += len(batch.raws) + len(batch.undecodable)
        unacked, by_item = self._unacked, self._by_item
        for item, raw in zip(batch.items, batch.raws, strict=True):
            entry = _Unacked(item, raw)
            unacked.append(entry)
            by_item[id(item)] = entry
        if batch.undecodable:
            self.stats.malformed += len(batch.undecodable)
            letters = [self._dead_letter_of(raw, reason, "decode") for raw, reason in batch.undecodable]
            await self._publish_dead_letters(letters)
            assert self._bridge is not None
            failed = await self._bridge.run(_ack_each, [raw for raw, _ in batch.undecodable])
            self.stats.ack_errors += failed
        return batch.items

    async def _drained(self, connection: AbstractRobustConnection, consumer: _Consumer) -> bool:
        assert self._bridge is not None
        try:
            ready, _ = await self._bridge.run(queue_counts, connection, self.queue)
        except (aiormq.exceptions.AMQPError, ConnectionError, TimeoutError, RuntimeError):
            return False  # the broker is away (restarting): not drained, read on
        return ready == 0 and not consumer.pending

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: ack their messages with one
        ``basic.ack(multiple=True)`` (one crossing)."""
        if count < 0 or count > len(self._unacked):
            raise ConfigError(
                f"acknowledge({count}): only {len(self._unacked)} items are unacknowledged"
            )
        if count == 0:
            return
        done = [self._unacked.popleft() for _ in range(count)]
        for entry in done:
            del self._by_item[id(entry.item)]
        assert self._bridge is not None
        failed = await self._bridge.run(_ack_up_to, [entry.raw for entry in done])
        self.stats.acknowledged += count - failed
        self.stats.ack_errors += failed

    async def reject(self, failed: list[Result]) -> None:
        """Publish the messages of ``failed`` to the dead-letter exchange with the reason,
        confirmed by the broker before this returns; the acknowledgment that follows acks
        the originals."""
        letters: list[Outgoing] = []
        for result in failed:
            reason = f"{type(result.error).__name__}: {result.error}"
            node = result.node or ""
            entry = self._by_item.get(id(result.data))
            if entry is None:  # a derived item: its message cannot be traced
                try:
                    payload = self.codec.encode(result.data)
                except Exception:
                    payload = repr(result.data).encode()
                letters.append(self._letter(payload, {}, reason, node, None))
                continue
            letters.append(self._dead_letter_of(entry.raw, reason, node))
        if letters:
            await self._publish_dead_letters(letters)

    def _dead_letter_of(self, raw: AbstractIncomingMessage, reason: str, node: str) -> Outgoing:
        return self._letter(raw.body, dict(raw.headers or {}), reason, node, raw)

    def _letter(
        self,
        payload: bytes,
        headers: dict[str, Any],
        reason: str,
        node: str,
        raw: AbstractIncomingMessage | None,
    ) -> Outgoing:
        headers.update({
            f"{HEADER_PREFIX}reason": " ".join(reason.split())[:4096],
            f"{HEADER_PREFIX}node": node,
            f"{HEADER_PREFIX}queue": self.queue,
            f"{HEADER_PREFIX}exchange": raw.exchange if raw is not None else "",
            f"{HEADER_PREFIX}routing-key": (raw.routing_key or "") if raw is not None else "",
            f"{HEADER_PREFIX}redelivered": bool(raw.redelivered) if raw is not None else False,
            f"{HEADER_PREFIX}message-id": (raw.message_id or "") if raw is not None else "",
        })
        return Outgoing(
            exchange=self.dead_letter_exchange,
            routing_key=self.dead_letter_routing_key,
            body=payload,
            message_id=f"{self._dead_id_prefix}-{next(self._dead_ids)}",
            headers=headers,
            content_type=raw.content_type if raw is not None else self.codec.content_type,
            correlation_id=raw.correlation_id if raw is not None else None,
            timestamp=raw.timestamp.timestamp() if raw is not None and raw.timestamp else None,
        )

    async def _publish_dead_letters(self, letters: list[Outgoing]) -> None:
        assert self._bridge is not None and self._channel is not None
        outcomes = await self._bridge.run(publish_all, self._channel, letters,
                                          self.confirm_timeout)
        errors = [f"{type(o).__name__}: {o}" for o in outcomes if o is not None]
        if errors:
            raise RabbitMQError(
                f"{len(errors)} of {len(letters)} dead letters to exchange "
                f"{self.dead_letter_exchange or '(default)'!r} with routing key "
                f"{self.dead_letter_routing_key!r} were not confirmed by RabbitMQ (first: "
                f"{errors[0]}); their messages stay unacknowledged and are redelivered"
            )
        self.stats.dead_lettered += len(letters)


# -- in the bridge's loop --------------------------------------------------------------------


async def _set_up(
    source: RabbitMQSource, connection: AbstractRobustConnection
) -> tuple[AbstractRobustChannel, AbstractQueue]:
    """The consuming channel (confirms on, for the dead letters; qos = prefetch), the
    queue, its bindings and the dead-letter target, declared or checked.

    What must exist already is checked first on a plain channel (a 404 closes it; the
    robust channel would reopen itself and try again)."""
    declare = source.declare
    check = await raw_channel(connection)
    try:
        if not declare:
            await check.queue_declare(source.queue, passive=True)
            if source.exchange is not None:
                await check.exchange_declare(source.exchange, passive=True)
        if source.dead_letter_exchange:
            await check.exchange_declare(source.dead_letter_exchange, passive=True)
        elif declare:
            await check.queue_declare(source.dead_letter_routing_key, durable=source.durable)
        else:
            await check.queue_declare(source.dead_letter_routing_key, passive=True)
    finally:
        await close_raw(check)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    assert isinstance(channel, AbstractRobustChannel)
    await channel.set_qos(prefetch_count=source.prefetch)
    queue = await channel.declare_queue(
        source.queue,
        durable=source.durable,
        arguments=source.queue_arguments or None,
        passive=not declare,
    )
    if source.exchange is not None:
        exchange = await channel.declare_exchange(
            source.exchange, ExchangeType(source.exchange_type), durable=True, passive=not declare
        )
        for key in source.routing_keys:
            await queue.bind(exchange, routing_key=key)
    return channel, queue


@attrs.frozen
class _Delivered:
    """One batch of deliveries, decoded in the bridge's loop: the items with their messages,
    and the messages that did not decode with the reason."""

    items: list[RabbitMessage]
    raws: list[AbstractIncomingMessage]
    undecodable: list[tuple[AbstractIncomingMessage, str]]


class _Consumer:
    """The queue's consumer, in the bridge's loop. The broker delivers at most ``prefetch``
    unacknowledged messages, so ``pending`` never holds more than that."""

    def __init__(self, queue: AbstractQueue, codec: PayloadCodec,
                 stats: RabbitMQSourceStats) -> None:
        self.queue = queue
        self.codec = codec
        self.stats = stats
        self.pending: deque[AbstractIncomingMessage] = deque()
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        # The robust channel consumes again with the same callback after a reconnection.
        await self.queue.consume(self.on_message, no_ack=False)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.pending.append(message)
        self.arrived.set()

    async def batches(self, count: int, wait: float) -> AsyncIterator[_Delivered]:
        """Forever: what was delivered (up to ``count``), or an empty batch when nothing
        came within ``wait`` seconds."""
        pending = self.pending
        while True:
            if not pending:
                self.arrived.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self.arrived.wait()
                except TimeoutError:
                    pass
            taken = [pending.popleft() for _ in range(min(count, len(pending)))]
            yield self.decode(taken)

    def decode(self, messages: list[AbstractIncomingMessage]) -> _Delivered:
        items: list[RabbitMessage] = []
        raws: list[AbstractIncomingMessage] = []
        undecodable: list[tuple[AbstractIncomingMessage, str]] = []
        decode = self.codec.decode
        now = time.time()
        for message in messages:
            if _channel_of(message) is None:
                # Its channel was lost (a broker restart): the broker requeued it, and it
                # cannot be acked any more. It comes again on the restored channel.
                self.stats.dropped_stale += 1
                continue
            try:
                body = decode(message.body)
            except Exception as error:
                undecodable.append((message, f"{type(error).__name__}: {error}"))
                continue
            stamp = message.timestamp
            items.append(
                RabbitMessage(
                    body=body,
                    payload=message.body,
                    routing_key=message.routing_key or "",
                    exchange=message.exchange or "",
                    headers=message.headers,
                    message_id=message.message_id,
                    redelivered=bool(message.redelivered),
                    timestamp=stamp.timestamp() if stamp is not None else now,
                    content_type=message.content_type,
                    correlation_id=message.correlation_id,
                )
            )
            raws.append(message)
        return _Delivered(items, raws, undecodable)


def _channel_of(message: AbstractIncomingMessage) -> aiormq.abc.AbstractChannel | None:
    """The channel ``message`` came on, or None once that channel is closed."""
    try:
        return message.channel
    except aiormq.exceptions.ChannelInvalidStateError:
        return None


async def _ack_up_to(messages: list[AbstractIncomingMessage]) -> int:
    """Ack ``messages`` (in delivery order) with one ``basic.ack(multiple=True)`` per
    channel; returns how many could not be acked (their channel was lost: the broker
    redelivers them, duplicates, never losses).

    Acking up to the last delivery tag covers exactly these: everything delivered earlier
    on the channel was acked already (acknowledgments come in order) or dead-lettered and
    acked, and everything later is not covered.
    """
    failed = 0
    start = 0
    while start < len(messages):
        channel = _channel_of(messages[start])
        end = start
        while end + 1 < len(messages) and _channel_of(messages[end + 1]) is channel:
            end += 1
        tag = messages[end].delivery_tag
        try:
            if channel is None or tag is None:
                raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
            await channel.basic_ack(tag, multiple=True)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
            failed += end + 1 - start
        start = end + 1
    return failed


async def _ack_each(messages: list[AbstractIncomingMessage]) -> int:
    """Ack each message on its own (the malformed ones, dead-lettered before the items
    around them are handled); returns how many failed."""
    failed = 0
    for message in messages:
        try:
            await message.ack()
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
            failed += 1
    return failed
