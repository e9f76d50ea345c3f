"""JetStream source: a durable pull consumer read in batches, acknowledged after the sink wrote.

Reading: the consumer's messages are fetched ``batch_size`` at a time by an async generator
in the source's :class:`~haive.dataflow.runtime.bridge.AsyncioBridge`, carried to trio by
``bridge.stream(..., max_buffered=prefetch)``: at most ``prefetch`` fetched batches wait
for the pipeline, so a full pipeline stops the fetching and the messages stay in the broker
(backpressure reaches it; nothing queues up unbounded in the worker).

Acknowledging follows the core's protocol (:attr:`DataSource.acknowledges`): the source
yields an empty batch every ``ack_every`` items and whenever nothing new is ready; the
pipeline waits until everything yielded so far is written by the sink (or dead-lettered,
or filtered out) and calls :meth:`JetStreamSource.acknowledge`, which acks those messages
in one crossing. A crash before that redelivers them after ``ack_wait``: at least once.

Failures (the pipeline's :meth:`~haive.dataflow.io.sources.DataSource.reject`), as the
Redis Streams source's ``on_failure``: ``"dead_letter"`` publishes the message to the
dead-letter subject with the reason, and JetStream confirms it before the original is
acknowledged; ``"redeliver"`` naks it (redelivered at once, to this worker or another) and
dead-letters it once delivered ``max_deliveries`` times. A payload that does not decode is
dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import TraceHeaderLog, trace_headers_of
from haive.dataflow.runtime.bridge import AsyncioBridge, open_asyncio_bridge
from haive.dataflow.runtime.results import Result
from haive.dataflow.runtime.units import Duration, parse_duration

from .connection import (
    DEFAULT_URL,
    NatsError,
    check_connect_options,
    check_stream,
    check_url,
    connect,
    redacted,
    stream_for_subject,
)
from .message import NatsMessage, PayloadCodec, user_headers
from .publishing import publish_all
from .subjects import check_subject, matches

FAILURE_MODES = ("dead_letter", "redeliver")
DELIVER_POLICIES = ("all", "new")


def positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return value


@attrs.define
class JetStreamSourceStats:
    """What a :class:`JetStreamSource` did, counted per run (``haive run`` prints it)."""

    fetched: int = 0
    acknowledged: int = 0
    dead_lettered: int = 0
    redelivered: int = 0  # nak'ed for redelivery (on_failure="redeliver")
    fetch_errors: int = 0  # fetches that failed (broker restarting...) and were retried
    ack_errors: int = 0  # acks that could not be sent (their messages come back: duplicates)
    left_unacknowledged: int = 0  # read, not acknowledged when the source closed


@attrs.define(eq=False)
class _Unacked:
    item: NatsMessage
    raw: Msg
    settled: bool = False  # nak'ed: not to be acked


class JetStreamSource(DataSource):
    """Reads the JetStream messages on ``subject`` as the durable pull consumer ``durable``.

    Every worker running a pipeline with the same ``durable`` shares its messages (each
    message goes to one of them). Items are :class:`~haive_plugin_nats.message.NatsMessage`
    objects (``data`` decoded with ``codec``; subject, headers, timestamp, sequence and
    delivery count beside it). The consumer is created if missing (explicit acks,
    ``ack_wait``, ``deliver_policy``); an existing one is used as it is.

    Example::

        >>> import trio, uuid
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> from haive_plugin_nats import JetStreamSink, delete_stream, ensure_stream
        >>> name = f"DOC-{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     await ensure_stream(name, [f"{name}.in", f"{name}.in.dead"])
        ...     async with JetStreamSink(f"{name}.in") as producer:
        ...         await producer.write_batch([{"n": n} for n in range(5)])
        ...     pipeline = StreamingPipeline("copy")
        ...     pipeline.set_source(JetStreamSource(f"{name}.in", durable="doc",
        ...                                         stop_when_drained=True))
        ...     pipeline.add_processor(lambda m: m.data["n"] * 10)
        ...     sink = MemorySink()
        ...     pipeline.set_sink(sink)
        ...     report = await pipeline.execute()
        ...     await delete_stream(name)
        ...     return report.processed, sink.items
        >>> trio.run(main)
        (5, [0, 10, 20, 30, 40])
    """

    PLUGIN_NAME = "nats_jetstream"
    acknowledges = True

    def __init__(
        self,
        subject: str,
        *,
        durable: str = "haive",
        stream: str | None = None,
        url: str = DEFAULT_URL,
        connect_options: Mapping[str, Any] | None = None,
        batch_size: int = 256,
        prefetch: int = 2,
        fetch_timeout: Duration = "100ms",
        ack_every: int | None = None,
        ack_wait: Duration = "30s",
        max_ack_pending: int = 20_000,
        deliver_policy: str = "all",
        codec: str | Serializer = "json",
        dead_letter: str | None = None,
        on_failure: str = "dead_letter",
        max_deliveries: int | None = None,
        stop_when_drained: bool = False,
    ) -> None:
        owner = "JetStreamSource"
        self.subject = check_subject(owner, "subject", subject, wildcards=True)
        self.durable = check_durable(owner, durable)
        if stream is not None and (not isinstance(stream, str) or not stream):
            raise ConfigError(f"{owner}: stream must be a non-empty string or None, got {stream!r}")
        self.stream = stream
        self.url = check_url(owner, url)
        self.connect_options = check_connect_options(owner, connect_options)
        self.batch_size = positive_int(owner, "batch_size", batch_size)
        self.prefetch = positive_int(owner, "prefetch", prefetch)
        self.fetch_timeout = parse_duration(fetch_timeout, what="fetch_timeout")
        self.ack_every = positive_int(
            owner, "ack_every", ack_every if ack_every is not None else 4 * self.batch_size
        )
        self.ack_wait = parse_duration(ack_wait, what="ack_wait")
        self.max_ack_pending = positive_int(owner, "max_ack_pending", max_ack_pending)
        if deliver_policy not in DELIVER_POLICIES:
            raise ConfigError(
                f"{owner}: deliver_policy must be one of {DELIVER_POLICIES}, got {deliver_policy!r}"
            )
        self.deliver_policy = deliver_policy
        self.codec = PayloadCodec(codec)
        if dead_letter is None:
            if "*" in self.subject or ">" in self.subject:
                raise ConfigError(
                    f"{owner}: subject {self.subject!r} has wildcards, so there is no default "
                    "dead-letter subject (<subject>.dead); give dead_letter='...'"
                )
            dead_letter = f"{self.subject}.dead"
        self.dead_letter = check_subject(owner, "dead_letter", dead_letter, wildcards=False)
        if matches(self.subject, self.dead_letter):
            raise ConfigError(
                f"{owner}: dead_letter {self.dead_letter!r} matches subject {self.subject!r}: "
                "the consumer would read its own dead letters"
            )
        if on_failure not in FAILURE_MODES:
            raise ConfigError(
                f"{owner}: on_failure must be one of {FAILURE_MODES}, got {on_failure!r}"
            )
        if max_deliveries is not None and on_failure != "redeliver":
            raise ConfigError(
                f"{owner}: max_deliveries={max_deliveries!r} needs on_failure='redeliver' "
                f"(with on_failure={on_failure!r} a failed message is dead-lettered at once)"
            )
        self.on_failure = on_failure
        self.max_deliveries = positive_int(
            owner, "max_deliveries", max_deliveries if max_deliveries is not None else 5
        )
        self.stop_when_drained = stop_when_drained
        #: This member's name (``haive worker --consumer``): the connection's name on the
        #: server; the durable consumer itself is shared by every member.
        self.member_name: str | None = None
        self.stats = JetStreamSourceStats()
        self._unacked: deque[_Unacked] = deque()
        #: Each yielded message's trace headers, kept only while tracing is on.
        self._trace_log = TraceHeaderLog()
        self._by_item: dict[int, _Unacked] = {}
        self._exit = AsyncExitStack()
        self._bridge: AsyncioBridge | None = None
        self._client: NatsClient | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    def __repr__(self) -> str:
        return (
            f"JetStreamSource({self.subject!r}, durable={self.durable!r}, "
            f"stream={self.stream!r}, url={redacted(self.url)!r})"
        )

    def _consumer_config(self, policy: DeliverPolicy, start: int | None = None) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            deliver_policy=policy,
            opt_start_seq=start,
            max_deliver=-1,  # redelivery is bounded by max_deliveries here, then dead-lettered
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.subject,
        )

    # -- haive worker: a member of the durable consumer's group --------------------------
    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Use the durable consumer ``group`` and name this member ``consumer`` (its
        connection's name) before opening (``haive worker --group G --consumer NAME``)."""
        if self._bridge is not None:
            raise ConfigError(f"{self!r}.join: the source is already open")
        if group is not None:
            self.durable = check_durable("JetStreamSource", group)
        if consumer is not None:
            if not isinstance(consumer, str) or not consumer:
                raise ConfigError(
                    f"JetStreamSource: consumer must be a non-empty string, got {consumer!r}"
                )
            self.member_name = consumer

    def membership(self) -> dict[str, Any]:
        """What ``haive worker`` prints about this member when it stops."""
        return {
            "group": self.durable,
            "consumer": self.member_name or repr(self),
            "subject": self.subject,
            "stream": self.stream,
            "delivery": "at_least_once",
            **attrs.asdict(self.stats),
        }

    async def rewind(self, position: str) -> None:
        """``haive worker --replay-from SEQ``: make the durable consumer deliver again from
        stream sequence ``SEQ`` (``1`` or ``all``: everything the stream holds; ``new``: only
        what arrives from now on). The consumer is deleted and created again, so its pending
        acknowledgments go too: run it while no member is running."""
        if position in ("all", "0", "1"):
            policy, start = DeliverPolicy.ALL, None
        elif position == "new":
            policy, start = DeliverPolicy.NEW, None
        elif position.isdigit():
            policy, start = DeliverPolicy.BY_START_SEQUENCE, int(position)
        else:
            raise ConfigError(
                "JetStreamSource.rewind: position must be a stream sequence (1 = everything), "
                f"'all' or 'new', got {position!r}"
            )
        async with open_asyncio_bridge(name=f"nats-rewind-{self.durable}") as bridge:
            client = await connect(bridge, self.url, self.connect_options, name=repr(self))
            try:
                stream = self.stream or await stream_for_subject(
                    bridge, client, self.subject, self.url
                )
                await bridge.run(
                    _replace_consumer, client, stream, self._consumer_config(policy, start)
                )
            finally:
                await bridge.run(_flush_and_close, client)

    def use_serializer(self, serializer: Serializer) -> None:
        """Decode payloads with the pipeline's serializer (``set_serializer``)."""
        self.codec = PayloadCodec(serializer)

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        self.stats = JetStreamSourceStats()
        bridge = await self._exit.enter_async_context(
            open_asyncio_bridge(name=f"nats-source-{self.durable}")
        )
        self._bridge = bridge
        client = await connect(
            bridge, self.url, self.connect_options, name=self.member_name or repr(self)
        )
        self._client = client
        self._exit.push_async_callback(bridge.run, _flush_and_close, client)
        if self.stream is None:
            self.stream = await stream_for_subject(bridge, client, self.subject, self.url)
        else:
            await check_stream(bridge, client, self.stream, self.url)
        await stream_for_subject(bridge, client, self.dead_letter, self.url)  # stored somewhere
        config = self._consumer_config(
            DeliverPolicy.ALL if self.deliver_policy == "all" else DeliverPolicy.NEW
        )
        try:
            self._subscription = await bridge.run(
                client.jetstream().pull_subscribe,
                self.subject,
                self.durable,
                self.stream,
                config,
            )
        except nats.js.errors.APIError as error:
            raise NatsError(
                f"cannot create or bind the durable consumer {self.durable!r} on stream "
                f"{self.stream!r} (subject {self.subject!r}): {error}"
            ) from error

    async def aclose(self) -> None:
        # What was read and not acknowledged is redelivered by JetStream after ack_wait.
        self.stats.left_unacknowledged += len(self._unacked)
        self._unacked.clear()
        self._by_item.clear()
        self._subscription = None
        self._client = None
        self._bridge = None
        await self._exit.aclose()

    # -- reading ------------------------------------------------------------------------
    def want_trace_headers(self) -> bool:
        """Keep each message's ``traceparent``/``tracestate`` headers (tracing is on)."""
        self._trace_log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        return self._trace_log.take()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        bridge, client, subscription = self._bridge, self._client, self._subscription
        if bridge is None or client is None or subscription is None:
            raise NatsError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        count = max(1, min(self.batch_size, chunk_size))
        fetcher = _Fetcher(client, subscription, self.codec, self.stream or "", self.stats)
        stream = bridge.stream(fetcher.batches, count, self.fetch_timeout,
                               max_buffered=self.prefetch)
        async with stream as fetched:
            async for batch in fetched:
                if batch.raws or batch.undecodable:
                    items = await self._accept(batch)
                    if items:
                        if self._trace_log.wanted:
                            self._trace_log.record([trace_headers_of(m.headers) for m in items])
                        yield items
                    if len(self._unacked) >= self.ack_every:
                        yield []
                    continue
                if self._unacked:
                    yield []  # nothing more ready: ask the pipeline to acknowledge
                    continue
                if self.stop_when_drained and await self._drained(subscription):
                    return

    async def _accept(self, batch: _Fetched) -> list[NatsMessage]:
        """Record a fetched batch as unacknowledged; dead-letter what did not decode
        (confirmed, then acked)."""
        self.stats.fetched += len(batch.raws) + len(batch.undecodable)
        unacked, by_item = self._unacked, self._by_item
        for item, msg in zip(batch.items, batch.raws, strict=True):
            entry = _Unacked(item, msg)
            unacked.append(entry)
            by_item[id(item)] = entry
        if batch.undecodable:
            letters = [
                self._dead_letter_of(msg.subject, msg.data, msg.headers, reason, "decode",
                                     msg.metadata.sequence.stream, msg.metadata.num_delivered)
                for msg, reason in batch.undecodable
            ]
            await self._publish_dead_letters(letters)
            await self._ack([msg for msg, _ in batch.undecodable])
        return batch.items

    async def _drained(self, subscription: JetStreamContext.PullSubscription) -> bool:
        assert self._bridge is not None
        try:
            info = await self._bridge.run(subscription.consumer_info)
        except (nats.errors.Error, TimeoutError):
            return False  # the broker is away (restarting): not drained, read on
        return not info.num_pending and not info.num_ack_pending

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: ack their messages (one crossing)."""
        if count < 0 or count > len(self._unacked):
            raise ConfigError(
                f"acknowledge({count}): only {len(self._unacked)} items are unacknowledged"
            )
        done = [self._unacked.popleft() for _ in range(count)]
        for entry in done:
            del self._by_item[id(entry.item)]
        await self._ack([entry.raw for entry in done if not entry.settled])

    async def _ack(self, messages: list[Msg]) -> None:
        if not messages:
            return
        assert self._bridge is not None and self._client is not None
        failed = await self._bridge.run(_ack_all, messages)
        self.stats.acknowledged += len(messages) - failed
        self.stats.ack_errors += failed

    async def reject(self, failed: list[Result]) -> None:
        """Dead-letter the messages of ``failed`` (confirmed by JetStream before this
        returns), or nak them for redelivery (``on_failure="redeliver"``)."""
        letters: list[tuple[str, bytes, dict[str, str]]] = []
        redeliver: list[_Unacked] = []
        for result in failed:
            reason = f"{type(result.error).__name__}: {result.error}"
            node = result.node or ""
            entry = self._by_item.get(id(result.data))
            if entry is None:  # a derived item: its message cannot be traced
                try:
                    payload = self.codec.encode(result.data)
                except Exception:
                    payload = repr(result.data).encode()
                letters.append(self._dead_letter_of("", payload, None, reason, node, 0, 0))
                continue
            if entry.settled:
                continue
            item = entry.item
            if self.on_failure == "redeliver" and item.deliveries < self.max_deliveries:
                redeliver.append(entry)
                continue
            letters.append(
                self._dead_letter_of(item.subject, item.payload, dict(item.headers), reason,
                                     node, item.sequence, item.deliveries)
            )
        if letters:
            await self._publish_dead_letters(letters)
        if redeliver:
            assert self._bridge is not None
            await self._bridge.run(_nak_all, [entry.raw for entry in redeliver])
            for entry in redeliver:
                entry.settled = True
            self.stats.redelivered += len(redeliver)

    def _dead_letter_of(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None,
        reason: str,
        node: str,
        sequence: int,
        deliveries: int,
    ) -> tuple[str, bytes, dict[str, str]]:
        headers = {
            **user_headers(headers),
            "Haive-Reason": _header_value(reason),
            "Haive-Node": _header_value(node),
            "Haive-Subject": subject,
            "Haive-Stream": self.stream or "",
            "Haive-Sequence": str(sequence),
            "Haive-Deliveries": str(deliveries),
            "Haive-Consumer": self.durable,
        }
        return self.dead_letter, payload, headers

    async def _publish_dead_letters(self, letters: list[tuple[str, bytes, dict[str, str]]]) -> None:
        assert self._bridge is not None and self._client is not None
        outcomes = await self._bridge.run(publish_all, self._client.jetstream(), letters, 10.0)
        errors = [
            f"{type(outcome).__name__}: {outcome}"
            for outcome in outcomes
            if isinstance(outcome, BaseException)
        ]
        if errors:
            raise NatsError(
                f"{len(errors)} of {len(letters)} dead letters to {self.dead_letter!r} were "
                f"not confirmed by JetStream (first: {errors[0]}); their messages stay "
                "unacknowledged and are redelivered"
            )
        self.stats.dead_lettered += len(letters)


def _header_value(text: str) -> str:
    """Headers are single lines: the reason's newlines become spaces."""
    return " ".join(text.split())[:4096]


# -- in the bridge's loop --------------------------------------------------------------------


@attrs.frozen
class _Fetched:
    """One fetch, decoded in the bridge's loop: the items with their messages, and the
    messages that did not decode with the reason."""

    items: list[NatsMessage]
    raws: list[Msg]
    undecodable: list[tuple[Msg, str]]


#: Seconds past its own timeout after which a fetch is abandoned.
FETCH_GRACE = 5.0


@attrs.frozen
class _Fetcher:
    """The fetch loop, run in the bridge's loop. Decoding happens there too, beside the
    client's own parsing: the trio thread then holds the GIL only for the pipeline's work,
    and the two threads contend less for it (``nats.source.vs_raw`` went from about 0.7x to
    about 0.8x with this)."""

    client: NatsClient
    subscription: JetStreamContext.PullSubscription
    codec: PayloadCodec
    stream: str
    stats: JetStreamSourceStats

    async def batches(self, count: int, wait: float) -> AsyncIterator[_Fetched]:
        """Fetch forever; an empty batch when nothing came within ``wait`` seconds.

        A failed fetch (the broker restarting, the connection reconnecting) is retried with
        backoff while the client reconnects; a closed client ends it with the error.
        """
        pause = 0.05
        while True:
            try:
                # The outer deadline guards against a fetch that never returns; abandoning it
                # loses nothing, its messages are redelivered. (The "fetch that never
                # returned" seen on a loaded machine, the loop idle, was most likely this loop fetching
                # on after nats-py swallowed the end-of-input cancellation and then waiting
                # for a permit forever; the bridge's stream now stops it: see
                # BridgeStream._stop_producing.)
                async with asyncio.timeout(wait + FETCH_GRACE):
                    messages = await self.subscription.fetch(count, timeout=wait)
                pause = 0.05
            except TimeoutError:
                messages = []
            except nats.errors.Error:
                if self.client.is_closed:
                    raise
                self.stats.fetch_errors += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                messages = []
            yield self.decode(messages)

    def decode(self, messages: list[Msg]) -> _Fetched:
        items: list[NatsMessage] = []
        raws: list[Msg] = []
        undecodable: list[tuple[Msg, str]] = []
        decode = self.codec.decode
        for msg in messages:
            try:
                data = decode(msg.data)
            except Exception as error:
                undecodable.append((msg, f"{type(error).__name__}: {error}"))
                continue
            stream, deliveries, sequence, consumer_sequence, timestamp = _delivery(msg)
            items.append(
                NatsMessage(
                    subject=msg.subject,
                    data=data,
                    payload=msg.data,
                    headers=msg.headers or {},
                    timestamp=timestamp,
                    sequence=sequence,
                    deliveries=deliveries,
                    stream=stream or self.stream,
                    consumer_sequence=consumer_sequence,
                )
            )
            raws.append(msg)
        return _Fetched(items, raws, undecodable)


def check_durable(owner: str, durable: object) -> str:
    """A durable consumer's name, or a ConfigError naming the problem."""
    if not isinstance(durable, str) or not durable or any(c in durable for c in ".*> \t"):
        raise ConfigError(
            f"{owner}: durable must be a non-empty name without '.', '*', '>' or "
            f"whitespace, got {durable!r}"
        )
    return durable


async def _replace_consumer(
    client: NatsClient, stream: str, config: ConsumerConfig
) -> None:  # in the bridge's loop
    jetstream = client.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await jetstream.delete_consumer(stream, config.durable_name or "")
    await jetstream.add_consumer(stream, config)


def _delivery(msg: Msg) -> tuple[str, int, int, int, float]:
    """Stream, delivery count, stream and consumer sequences and timestamp (seconds) of a
    JetStream message, read from its ack subject.

    The subject is ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
    seq>.<ns>.<pending>``, or with ``<domain>.<account hash>.`` after ``$JS.ACK.`` and a
    random token at the end (JetStream ADR-15). Read here directly: nats-py's
    ``msg.metadata`` builds three dataclasses and a datetime per message, a tenth of the
    source's time per message. Any other shape goes through ``msg.metadata``.
    """
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"] and len(tokens) in (9, 11, 12):
        base = 2 if len(tokens) == 9 else 4
        try:
            return (
                tokens[base],
                int(tokens[base + 2]),
                int(tokens[base + 3]),
                int(tokens[base + 4]),
                int(tokens[base + 5]) / 1e9,
            )
        except ValueError:
            pass
    meta = msg.metadata
    return (
        meta.stream,
        meta.num_delivered,
        meta.sequence.stream,
        meta.sequence.consumer,
        meta.timestamp.timestamp(),
    )


async def _ack_all(messages: list[Msg]) -> int:
    """Ack every message; returns how many failed (those messages are redelivered:
    duplicates, never losses).

    The acks are not waited for (no flush round trip per acknowledgment: the pipeline would
    stall on it): nats-py's flusher sends them at once, and the source flushes when it
    closes. An ack lost on the way only means a redelivery.
    """
    failed = 0
    for msg in messages:
        try:
            await msg.ack()
        except (nats.errors.Error, OSError):
            failed += 1
    return failed


async def _flush_and_close(client: NatsClient) -> None:
    """Send what is still buffered (the last acks), then close."""
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        await client.flush(timeout=5)
    await client.close()


async def _nak_all(messages: list[Msg]) -> None:
    for msg in messages:
        with contextlib.suppress(nats.errors.Error):
            await msg.nak()  # not delivered: the message comes back after ack_wait anyway
