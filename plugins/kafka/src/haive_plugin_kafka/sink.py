"""The Kafka sink: batched produce, acks=all with the idempotent producer, confirmed writes.

``write_batch`` hands the whole batch to librdkafka in one crossing of the sink's
:class:`~haive.dataflow.runtime.bridge.ThreadBridge`, then waits (in short, cancellable
steps) until the broker confirmed every record: only then does it return, so a pipeline
acknowledges its source only after its outputs are in Kafka. Records with the same key go
to the same partition and keep their order there: the idempotent producer keeps order
within a partition even when it retries. librdkafka retries failed sends itself, with
backoff from ``retry_backoff`` up to ``retry_backoff_max``, until ``delivery_timeout``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import trio
from confluent_kafka import KafkaError, KafkaException, Producer

from haive.dataflow.errors import ConfigError, SerializationError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.io.trace_headers import TRACE_HEADER_NAMES, outgoing_trace_headers
from haive.dataflow.runtime.bridge import ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.units import Duration, parse_duration

from .client_config import ConfigValue, base_config, check_topics, milliseconds
from .errors import KafkaDeliveryError
from .records import KafkaRecord, ValueCodec

#: Producer settings the sink sets itself (they carry its delivery guarantee).
OWNED_PRODUCER_SETTINGS = frozenset(
    {
        "acks",
        "enable.idempotence",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "retry.backoff.ms",
        "retry.backoff.max.ms",
        "linger.ms",
        "allow.auto.create.topics",
        "compression.type",
    }
)
#: Delivery errors that condemn one record (it can never be written), not the batch.
_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
    }
)
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
#: How long one wait for delivery reports holds the bridge thread (cancellation is seen
#: between two waits).
_FLUSH_STEP = 0.2

KeyFunction = Callable[[Any], str | bytes | None]
HeadersFunction = Callable[[Any], list[tuple[str, bytes | str]] | None]


def with_trace_headers(
    headers: list[tuple[str, Any]] | None, trace_headers: Mapping[str, str]
) -> list[tuple[str, Any]]:
    """Record headers with the trace context replacing any the item had.

    Example::

        >>> with_trace_headers([("traceparent", b"old"), ("k", b"v")], {"traceparent": "new"})
        [('k', b'v'), ('traceparent', b'new')]
    """
    kept = [(k, v) for k, v in headers or () if k.lower() not in TRACE_HEADER_NAMES]
    kept.extend((name, value.encode()) for name, value in trace_headers.items())
    return kept


class KafkaSink(StreamSink):
    """Writes items to a Kafka topic; ``write_batch`` returns once the broker has them all.

    ``key``: a field name (``item[key]`` or ``item.key``) or a function of the item giving
    the record key (str or bytes; records with one key keep their order);
    ``headers``: a function of the item giving ``[(name, value), ...]``. Items are encoded
    with ``codec`` (JSON by default); a :class:`~haive_plugin_kafka.records.KafkaRecord`
    item is written with its own key and headers and its ``value`` encoded. An item that
    does not encode, or that the broker refuses for good (too large), is reported with
    :class:`~haive.dataflow.io.sinks.RejectedItems` (the pipeline dead-letters it);
    records not confirmed within ``delivery_timeout`` raise
    :class:`~haive_plugin_kafka.errors.KafkaDeliveryError` (nothing of the batch counts
    as written). ``open`` fails with a clear error when the topic does not exist or the
    broker refuses the credentials.

    Example (needs a broker; the plugin's tests run it against tansu)::

        >>> sink = KafkaSink("billed", bootstrap_servers="kafka:9092", key="customer")
        >>> sink
        KafkaSink('billed', bootstrap_servers='kafka:9092')
        >>> sink.producer_config["acks"], sink.producer_config["enable.idempotence"]
        ('all', True)
    """

    PLUGIN_NAME = "kafka"

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        key: str | KeyFunction | None = None,
        headers: HeadersFunction | None = None,
        codec: str | Serializer | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        linger: Duration = "5ms",
        compression: str = "none",
        delivery_timeout: Duration = "30s",
        retry_backoff: Duration = "100ms",
        retry_backoff_max: Duration = "1s",
        metadata_timeout: Duration = "30s",
    ) -> None:
        owner = "KafkaSink"
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"{owner}: topic must be a non-empty string, got {topic!r}")
        if key is not None and not callable(key) and (not isinstance(key, str) or not key):
            raise ConfigError(f"{owner}: key must be a field name or a function, got {key!r}")
        if headers is not None and not callable(headers):
            raise ConfigError(f"{owner}: headers must be a function of the item, got {headers!r}")
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f"{owner}: compression must be one of {COMPRESSIONS}, got {compression!r}"
            )
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self._key = _key_getter(key)
        #: The key's field name (keys then read with itemgetter over the whole batch).
        self._key_field = key if isinstance(key, str) else None
        self._headers = headers
        self.codec = ValueCodec(codec)
        self.delivery_timeout = parse_duration(delivery_timeout, what="delivery_timeout")
        self.metadata_timeout = parse_duration(metadata_timeout, what="metadata_timeout")
        backoff = milliseconds(retry_backoff, "retry_backoff")
        backoff_max = milliseconds(retry_backoff_max, "retry_backoff_max")
        if backoff_max < backoff:
            raise ConfigError(
                f"{owner}: retry_backoff_max ({retry_backoff_max!r}) is below retry_backoff "
                f"({retry_backoff!r})"
            )
        self.producer_config: dict[str, Any] = {
            **base_config(owner, bootstrap_servers, config, OWNED_PRODUCER_SETTINGS),
            "acks": "all",
            "enable.idempotence": True,
            "allow.auto.create.topics": False,
            "message.timeout.ms": milliseconds(delivery_timeout, "delivery_timeout"),
            "retry.backoff.ms": backoff,
            "retry.backoff.max.ms": backoff_max,
            "linger.ms": parse_duration(linger, what="linger") * 1000,
            "compression.type": compression,
            # Errors only: a report per record would cost a Python call per record.
            "delivery.report.only.error": True,
            "on_delivery": self._delivered,
        }
        self.written = 0
        self._undelivered: list[tuple[KafkaError, Any]] = []
        self._producer: Producer | None = None
        self._bridge: ThreadBridge | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None

    def __repr__(self) -> str:
        return f"KafkaSink({self.topic!r}, bootstrap_servers={self.bootstrap_servers!r})"

    def use_serializer(self, serializer: Serializer) -> None:
        """Encode values with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self.codec = self.codec.adopt(serializer, repr(self))

    async def open(self) -> None:
        """Open the bridge thread and the producer; check the topic exists (and so that the
        broker answers and accepts the credentials)."""
        if self._bridge is not None:
            raise ConfigError(f"{self!r} is already open")
        stack = contextlib.AsyncExitStack()
        bridge = await stack.enter_async_context(open_thread_bridge(name=f"kafka-sink-{self.topic}"))
        try:
            await bridge.run(self._open_producer)
        except BaseException:
            await stack.aclose()
            raise
        self._bridge, self._exit_stack = bridge, stack

    def _open_producer(self) -> None:  # in the bridge thread
        producer = Producer(self.producer_config)
        check_topics(
            producer.list_topics, [self.topic], self.bootstrap_servers, repr(self),
            self.metadata_timeout,
        )
        self._producer = producer

    async def aclose(self) -> None:
        """Wait for what is in flight (up to the delivery timeout), stop the thread."""
        bridge, stack = self._bridge, self._exit_stack
        self._bridge = self._exit_stack = None
        if bridge is None or stack is None:
            return
        try:
            producer, self._producer = self._producer, None
            if producer is not None:
                await bridge.run(producer.flush, self.delivery_timeout)
        finally:
            await stack.aclose()

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        """The producer's delivery callback (errors only: ``delivery.report.only.error``,
        so the records that made it cost no Python call)."""
        if error is not None:
            self._undelivered.append((error, message.value()))

    def _produce(
        self,
        items: list[Any],
        failures: dict[int, BaseException],
        trace: Sequence[Mapping[str, str] | None] | None = None,
    ) -> int:
        """In the bridge thread: hand every item to librdkafka and wait up to one flush
        step for the broker's confirmations; items that cannot be encoded or that
        librdkafka refuses land in ``failures`` by batch index. Returns how many records
        still wait for their confirmation.

        Each value is produced as soon as it is encoded and dropped right after (librdkafka
        copies it): keeping a batch of orjson's buffers alive makes the C allocator grow
        and shrink its heap on every batch (measured: twice the CPU per record).
        ``trace`` (tracing on): each item's trace headers, added to its record's headers
        (item by item)."""
        producer = self._producer
        assert producer is not None
        keys = None
        if trace is None and self._headers is None and KafkaRecord not in set(map(type, items)):
            keys = self._keys_whole(items)
        if keys is None:
            self._produce_each(producer, items, failures, trace)
        else:
            self._produce_plain(producer, items, keys, failures)
        return producer.flush(_FLUSH_STEP)

    def _keys_whole(self, items: list[Any]) -> list[Any] | None:
        """The keys of a batch of plain items, read a step at a time over the whole batch
        (``[]`` without a key; None when some item needs the item-by-item path)."""
        if self._key is None:
            return []
        try:
            if self._key_field is not None:
                keys = list(map(operator.itemgetter(self._key_field), items))
                if not set(map(type, keys)) <= _KEY_TYPES:
                    keys = [_key_text(key) for key in keys]
                return keys
            return list(map(self._key, items))
        except Exception:  # some item has no such key: item by item, to name it
            return None

    def _produce_plain(
        self,
        producer: Producer,
        items: list[Any],
        keys: list[Any],
        failures: dict[int, BaseException],
    ) -> None:
        """Plain items without a headers function, in a tight loop (positional arguments:
        a keyword argument costs librdkafka's binding a dict per call)."""
        topic, dumps, produce = self.topic, self.codec.dumps, producer.produce
        # orjson's JSON (a partial of orjson.dumps with keywords) is called with positional
        # arguments instead, without the partial's keyword dict per call (100 ns a record).
        keywords: dict[str, Any] | None = None
        if isinstance(dumps, functools.partial) and dumps.func is orjson.dumps and not dumps.args:
            keywords = dumps.keywords
        direct = keywords is not None
        json_default = keywords.get("default") if keywords is not None else None
        json_option = keywords.get("option") if keywords is not None else None
        json_dumps = orjson.dumps
        # Not strict: without a key, the keys are an endless run of None.
        for index, (item, key) in enumerate(zip(items, keys or _nones(), strict=False)):
            try:
                value = json_dumps(item, json_default, json_option) if direct else dumps(item)
            except Exception as exc:  # this item only: reported, the others are written
                failures[index] = self._unencodable(exc)
                continue
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
                except KafkaException as exc:  # refused before sending (too large)
                    if exc.args[0].code() not in _RECORD_ERRORS:
                        raise
                    failures[index] = _KafkaDeliveryFailure(exc.args[0])
                    break

    def _produce_each(
        self,
        producer: Producer,
        items: list[Any],
        failures: dict[int, BaseException],
        trace: Sequence[Mapping[str, str] | None] | None = None,
    ) -> None:
        """Item by item: records with their own key and headers, a headers function, and
        keys that need the item-by-item path."""
        topic, key_of, headers_of = self.topic, self._key, self._headers
        produce = producer.produce
        for index, item in enumerate(items):
            try:
                value = self._encode(item)
                if isinstance(item, KafkaRecord):
                    key: Any = item.key
                    headers: Any = list(item.headers) or None
                else:
                    key = key_of(item) if key_of is not None else None
                    headers = headers_of(item) if headers_of is not None else None
                if trace is not None and (trace_headers := trace[index]) is not None:
                    headers = with_trace_headers(headers, trace_headers)
            except Exception as exc:  # this item only: reported, the others are written
                failures[index] = self._unencodable(exc)
                continue
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
                except KafkaException as exc:  # refused before sending (too large)
                    if exc.args[0].code() not in _RECORD_ERRORS:
                        raise
                    failures[index] = _KafkaDeliveryFailure(exc.args[0])
                    break

    def _encode(self, item: Any) -> bytes:
        return self.codec.dumps(item.value if isinstance(item, KafkaRecord) else item)

    def _unencodable(self, exc: Exception) -> SerializationError:
        return SerializationError(
            f"{self!r}: item cannot be encoded, not written: {type(exc).__name__}: {exc}"
        )

    async def write_batch(self, items: list[Any]) -> None:
        """Produce ``items`` and return once the broker confirmed every record (acks=all)."""
        if not items:
            return
        bridge, producer = self._bridge, self._producer
        if bridge is None or producer is None:
            raise ConfigError(f"{self!r} is not open: open() it (the pipeline does) first")
        failures: dict[int, BaseException] = {}
        self._undelivered = []
        # One crossing produces the batch and waits for the confirmations up to one flush
        # step (usually enough); more steps only while records are still unconfirmed.
        # Read here: the bridge thread does not see this task's context variables.
        trace = outgoing_trace_headers()
        waiting = await bridge.run(self._produce, items, failures, trace)
        deadline = trio.current_time() + self.delivery_timeout + 5
        while waiting:
            waiting = await bridge.run(producer.flush, _FLUSH_STEP)
            if not waiting:
                break
            if trio.current_time() > deadline:
                raise KafkaDeliveryError(
                    f"{self!r}: records not confirmed within the delivery timeout "
                    f"({self.delivery_timeout}s); the batch does not count as written"
                )
        if self._undelivered:
            self._attribute(items, failures)
        self.written += len(items) - len(failures)
        if failures:
            raise RejectedItems(failures)

    def _attribute(self, items: list[Any], failures: dict[int, BaseException]) -> None:
        """Map the delivery errors back to batch indexes (by value, encoded again: the rare
        error path), and raise when one is not the record's own fault (the batch is then
        not written)."""
        indexes: dict[Any, list[int]] = {}
        for index, item in enumerate(items):
            if index not in failures:
                indexes.setdefault(self._encode(item), []).append(index)
        batch_errors: list[KafkaError] = []
        for error, value in self._undelivered:
            if error.code() not in _RECORD_ERRORS:
                batch_errors.append(error)
            elif candidates := indexes.get(value):
                failures[candidates.pop(0)] = _KafkaDeliveryFailure(error)
        if batch_errors:
            raise KafkaDeliveryError(
                f"{self!r}: {len(batch_errors)} record(s) of the batch not written, first: "
                f"{batch_errors[0].str()}; the batch does not count as written"
            )


class _KafkaDeliveryFailure(Exception):
    """A delivery report's error for a record that can never be written (too large)."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.code = error.code()


_KEY_TYPES = frozenset({str, bytes, type(None)})


def _nones() -> Iterator[None]:
    return itertools.repeat(None)


def _key_text(value: Any) -> str | bytes | None:
    if value is None or isinstance(value, str | bytes):
        return value
    return str(value)


def _key_getter(key: str | KeyFunction | None) -> KeyFunction | None:
    if key is None or callable(key):
        return key
    name = key

    def field(item: Any) -> str | bytes | None:
        return _key_text(item[name] if isinstance(item, Mapping) else getattr(item, name))

    return field
