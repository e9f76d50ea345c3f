"""The Kafka source: a consumer-group member read in batches, committed at-least-once.

confluent-kafka (librdkafka) blocks the calling thread and wants its consumer used from one
thread, so every client call runs in one :class:`~haive.dataflow.runtime.bridge.ThreadBridge`
opened by :meth:`KafkaSource.open` and closed by :meth:`KafkaSource.aclose`. One crossing
carries the commit of what was acknowledged since the last one and up to
``FETCHES_PER_CROSSING`` batches (``consume(batch_size)`` while records are queued), each
read into columns (:class:`~haive_plugin_kafka.offsets.RecordColumns`: the messages are
dropped at once, so the cyclic garbage collector never walks thousands of them). The
values are decoded in trio's thread, a batch at a time as it is yielded, while the bridge
thread is in its next ``consume``. ``READ_AHEAD`` crossings are queued before a batch is
yielded (:meth:`ThreadBridge.submit`), so the bridge thread fetches while the pipeline
handles the batches before; no more is read ahead. Records read ahead from a partition
revoked before they were yielded are not yielded (their next owner reads them).

Delivery (the core's acknowledgment protocol, as for Redis Streams): every ``ack_every``
items, and whenever nothing more is ready, the source yields an empty batch; the pipeline
waits until every item read so far is written by the sink (or dead-lettered, or filtered
out) and calls :meth:`KafkaSource.acknowledge`, which marks the offsets after those records
for commit. The next crossing commits them asynchronously (``commit(offsets,
asynchronous=True)``: the consumer does not wait for the broker's answer); a commit the
broker refuses is retried with the next one, and closing the source (or losing partitions
in a rebalance) commits what was acknowledged synchronously. A crash before a commit makes
the group read those records again (at-least-once); only acknowledged offsets are ever
committed.

Rebalances: librdkafka runs the callbacks inside ``consume``, in the bridge thread. When
partitions are revoked, the offsets acknowledged for them and not yet committed are
committed at once, before the next owner starts; records read from them and not yet
acknowledged (the uncommitted tail) are read again by the next owner, and their late
acknowledgment here commits nothing (see :mod:`.offsets`). Partitions *lost* (the session
expired) cannot be committed; their tail is read again too.

Backpressure: the source only fetches when the pipeline asks for a batch; librdkafka's
prefetch queue is bounded (``prefetch_kbytes``, ``queued.max.messages.kbytes``), and once
it is full librdkafka stops fetching from the broker. A batch must be handled within
``max_poll_interval``, or the consumer leaves the group and its tail is read again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import trio
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

# NewTopic lives in the C extension; confluent_kafka.admin re-exports it without __all__.
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from haive.dataflow import Result
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import TraceHeaderLog, trace_header_pairs
from haive.dataflow.runtime.bridge import PendingCall, ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.units import Duration, parse_duration

from .client_config import ConfigValue, base_config, check_topics, connection_error, milliseconds
from .dead_letters import DeadLetter, DeadLetterWriter, origin_headers
from .errors import KafkaCommitError
from .offsets import (
    PartitionOwnership,
    ReadBatch,
    RecordColumns,
    TopicPartitionKey,
    UnackedRecords,
)
from .records import TIMESTAMP_TYPES, KafkaRecord, ValueCodec

_log = logging.getLogger(__name__)

#: Consumer settings the source sets itself (they carry at-least-once delivery).
OWNED_CONSUMER_SETTINGS = frozenset(
    {
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "auto.offset.reset",
        "session.timeout.ms",
        "max.poll.interval.ms",
        "partition.assignment.strategy",
        "queued.max.messages.kbytes",
        "isolation.level",
        "offset_commit_cb",
        "on_commit",
    }
)
#: Fetch crossings queued in the bridge thread while the pipeline handles a batch: with
#: one, the thread waited for trio's thread to wake up and ask for each next batch (measured).
READ_AHEAD = 2
#: Full batches one crossing may carry (``consume`` calls in a row while records are
#: queued): each crossing wakes trio's thread once, and each wake-up of a thread that must
#: take the GIL back from a busy one costs more than a batch's bookkeeping.
FETCHES_PER_CROSSING = 8
#: librdkafka's built-in assignors.
ASSIGNMENT_STRATEGIES = ("cooperative-sticky", "range", "roundrobin")
START_POSITIONS = ("earliest", "latest")
#: Commit errors after which the offsets are simply committed with the next ones.
#: Commit errors of a member no longer in the group's generation: retrying cannot succeed.
_FENCED_COMMIT_CODES = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
    }
)
_RETRIABLE_COMMIT_CODES = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._STATE,
        KafkaError._NO_OFFSET,
    }
)
#: Consume errors that stop the source (anything else is transient: librdkafka recovers).
_FATAL_CONSUME_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)


def default_client_id() -> str:
    """``host-pid-random``: unique per process, readable in the group's member list."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def _positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be an int >= 1, got {value!r}")
    return value


@attrs.define
class KafkaSourceStats:
    """What a :class:`KafkaSource` did: counters for tests, benchmarks and dashboards."""

    read: int = 0
    committed_offsets: int = 0
    commits: int = 0
    commit_retries: int = 0
    #: Commits made in a revoke callback, before a partition moved to another member.
    revoke_commits: int = 0
    dead_lettered: int = 0
    #: Acknowledgments of records read before their partition was revoked (not committed).
    stale_acknowledgments: int = 0
    #: Records read ahead from a partition revoked before they were yielded: not yielded
    #: (the partition's next owner reads them from its committed offset).
    skipped_after_revoke: int = 0
    transient_errors: int = 0
    assignments: int = 0
    revocations: int = 0


@attrs.frozen(slots=True)
class _Poll:
    """What one ``consume`` call brought back. ``items`` None: records only, as
    :class:`RecordColumns`, decoded in trio's thread (:meth:`KafkaSource._decode`)."""

    items: list[Any] | None
    messages: list[Any] | RecordColumns
    ends: dict[TopicPartitionKey, tuple[int, int]]
    undecodable: list[tuple[Any, Exception]]
    drained: bool


class KafkaSource(DataSource):
    """Reads Kafka topics as a member of a consumer group, at-least-once.

    Items are the decoded record values (``codec``: JSON by default, ``"bytes"``, a
    serializer name or a :class:`~haive.dataflow.io.serializers.Serializer`), or
    :class:`~haive_plugin_kafka.records.KafkaRecord` with ``with_metadata=True`` (topic,
    partition, offset, key, headers, timestamp in seconds: usable as event time by window
    nodes). A record that cannot be decoded goes to the dead-letter topic with the reason
    and reading goes on; so does a record whose item a processor failed on for good when
    the pipeline has no dead-letter sink (``dead_letter``: one topic for all, default
    ``<topic>.dead`` per input topic, created like the input topic when missing).

    ``group``: the consumer group; ``start``: where a group without committed offsets
    begins (``"earliest"``/``"latest"``). ``batch_size`` records per ``consume`` call (at
    most the pipeline's ``chunk_size``, 1,024 by default); ``ack_every`` items between
    acknowledgment points (default ``4 * batch_size``).
    ``session_timeout``, ``max_poll_interval``, ``assignment`` (librdkafka's assignor,
    ``"cooperative-sticky"`` by default: a rebalance moves only the partitions that
    change owner) and ``prefetch_kbytes`` (the bounded prefetch per consumer) configure
    the consumer; ``config`` passes other librdkafka settings (``security.protocol``,
    ``sasl.*``, ``ssl.*``...). ``stop_when_drained``: end once every assigned partition
    was read to its end and everything read was acknowledged (batch jobs, tests).

    Example (needs a broker; the plugin's tests run it against tansu)::

        >>> source = KafkaSource("orders", group="billing", bootstrap_servers="kafka:9092")
        >>> source
        KafkaSource(['orders'], group='billing', bootstrap_servers='kafka:9092')
        >>> source.dead_letter_topics
        {'orders': 'orders.dead'}
    """

    PLUGIN_NAME = "kafka"
    acknowledges = True

    def __init__(
        self,
        topics: str | list[str],
        *,
        group: str = "haive",
        bootstrap_servers: str = "127.0.0.1:9092",
        config: Mapping[str, ConfigValue] | None = None,
        batch_size: int = 1000,
        ack_every: int | None = None,
        poll_timeout: Duration = "100ms",
        start: str = "earliest",
        codec: str | Serializer | None = None,
        with_metadata: bool = False,
        dead_letter: str | None = None,
        session_timeout: Duration = "10s",
        max_poll_interval: Duration = "5m",
        assignment: str = "cooperative-sticky",
        prefetch_kbytes: int = 8192,
        stop_when_drained: bool = False,
        metadata_timeout: Duration = "30s",
        delivery_timeout: Duration = "30s",
    ) -> None:
        owner = "KafkaSource"
        names = [topics] if isinstance(topics, str) else topics
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(t, str) and t for t in names)
        ):
            raise ConfigError(
                f"{owner}: topics must be a topic name or a non-empty list of them, got {topics!r}"
            )
        if not isinstance(group, str) or not group:
            raise ConfigError(f"{owner}: group must be a non-empty string, got {group!r}")
        if start not in START_POSITIONS:
            raise ConfigError(f"{owner}: start must be one of {START_POSITIONS}, got {start!r}")
        if assignment not in ASSIGNMENT_STRATEGIES:
            raise ConfigError(
                f"{owner}: assignment must be one of {ASSIGNMENT_STRATEGIES}, got {assignment!r}"
            )
        if dead_letter is not None and (not isinstance(dead_letter, str) or not dead_letter):
            raise ConfigError(f"{owner}: dead_letter must be a topic name, got {dead_letter!r}")
        self.topics = list(names)
        self.group = group
        self.bootstrap_servers = bootstrap_servers
        self.batch_size = _positive_int(owner, "batch_size", batch_size)
        self.ack_every = _positive_int(
            owner, "ack_every", ack_every if ack_every is not None else 4 * self.batch_size
        )
        self.poll_timeout = parse_duration(poll_timeout, what="poll_timeout")
        self.start = start
        self.codec = ValueCodec(codec)
        self.with_metadata = bool(with_metadata)
        self.dead_letter_topics = {
            topic: dead_letter if dead_letter is not None else f"{topic}.dead"
            for topic in self.topics
        }
        self.stop_when_drained = bool(stop_when_drained)
        self.metadata_timeout = parse_duration(metadata_timeout, what="metadata_timeout")
        self.delivery_timeout = parse_duration(delivery_timeout, what="delivery_timeout")
        session_ms = milliseconds(session_timeout, "session_timeout")
        self.client_config = base_config(owner, bootstrap_servers, config, OWNED_CONSUMER_SETTINGS)
        self.consumer_config: dict[str, ConfigValue] = {
            **self.client_config,
            "group.id": group,
            "client.id": str(self.client_config.get("client.id", default_client_id())),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": start,
            "session.timeout.ms": session_ms,
            # librdkafka wants heartbeats well inside the session timeout.
            "heartbeat.interval.ms": self.client_config.get(
                "heartbeat.interval.ms", max(100, min(3000, session_ms // 3))
            ),
            "max.poll.interval.ms": milliseconds(max_poll_interval, "max_poll_interval"),
            "partition.assignment.strategy": assignment,
            "queued.max.messages.kbytes": _positive_int(owner, "prefetch_kbytes", prefetch_kbytes),
        }
        self.stats = KafkaSourceStats()
        self._ownership = PartitionOwnership()
        self._unacked = UnackedRecords()
        #: Each yielded record's trace headers, kept only while tracing is on.
        self._trace_log = TraceHeaderLog()
        self._at_end: set[TopicPartitionKey] = set()
        self._ack_requested = False
        #: A commit the broker refused for good (raised by the next crossing).
        self._commit_failure: KafkaCommitError | None = None
        self._bridge: ThreadBridge | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._consumer: Consumer | None = None
        self._dead_letters: DeadLetterWriter | None = None

    def __repr__(self) -> str:
        return (
            f"KafkaSource({self.topics!r}, group={self.group!r}, "
            f"bootstrap_servers={self.bootstrap_servers!r})"
        )

    # -- haive worker: a member of a consumer group ------------------------------------
    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Set the consumer group and/or this member's ``client.id`` before opening
        (``haive worker --group G --consumer NAME`` calls it)."""
        if self._bridge is not None:
            raise ConfigError(f"{self!r}.join: the source is already open")
        if group is not None:
            if not isinstance(group, str) or not group:
                raise ConfigError(f"KafkaSource: group must be a non-empty string, got {group!r}")
            self.group = group
            self.consumer_config["group.id"] = group
        if consumer is not None:
            if not isinstance(consumer, str) or not consumer:
                raise ConfigError(
                    f"KafkaSource: consumer must be a non-empty string, got {consumer!r}"
                )
            self.consumer_config["client.id"] = consumer

    def membership(self) -> dict[str, Any]:
        """What ``haive worker`` prints about this member when it stops."""
        return {
            "group": self.group,
            "consumer": self.consumer_config["client.id"],
            "topics": self.topics,
            "delivery": "at_least_once",
            **attrs.asdict(self.stats),
        }

    async def rewind(self, position: str) -> None:
        """``haive worker --replay-from earliest|latest``: commit, for the whole group, the
        first (``earliest``: everything is read again) or next (``latest``: only new records)
        offset of every partition of the topics. Run it while no member is running: a
        running member would commit its own offsets over these."""
        if position not in START_POSITIONS:
            raise ConfigError(
                f"KafkaSource.rewind: position must be one of {START_POSITIONS}, got {position!r}"
            )
        async with open_thread_bridge(name=f"kafka-rewind-{self.group}") as bridge:
            await bridge.run(self._commit_watermarks, position)

    def _commit_watermarks(self, position: str) -> None:  # in the bridge thread
        consumer = Consumer({**self.consumer_config, "enable.partition.eof": False})
        try:
            metadata = check_topics(
                consumer.list_topics, self.topics, self.bootstrap_servers, repr(self),
                self.metadata_timeout,
            )
            offsets = []
            for topic in self.topics:
                for partition in metadata.topics[topic].partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self.metadata_timeout
                    )
                    offsets.append(
                        TopicPartition(topic, partition, low if position == "earliest" else high)
                    )
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as error:
                raise KafkaCommitError(
                    f"{self!r}: cannot move group {self.group!r} to {position}: {error}"
                ) from error
        finally:
            consumer.close()

    def use_serializer(self, serializer: Serializer) -> None:
        """Decode values with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self.codec = self.codec.adopt(serializer, repr(self))

    @property
    def assigned(self) -> frozenset[TopicPartitionKey]:
        """The (topic, partition) pairs this member owns now."""
        return self._ownership.assigned

    def _require_bridge(self) -> ThreadBridge:
        if self._bridge is None:
            raise ConfigError(f"{self!r} is not open: open() it (the pipeline does) first")
        return self._bridge

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        """Open the bridge thread, check the topics, create missing dead-letter topics and
        join the group."""
        if self._bridge is not None:
            raise ConfigError(f"{self!r} is already open")
        stack = contextlib.AsyncExitStack()
        bridge = await stack.enter_async_context(
            open_thread_bridge(name=f"kafka-source-{self.group}")
        )
        try:
            await bridge.run(self._open_clients)
        except BaseException:
            with contextlib.suppress(Exception):
                await bridge.run(self._close_clients)
            await stack.aclose()
            raise
        self._bridge, self._exit_stack = bridge, stack

    def _open_clients(self) -> None:  # in the bridge thread
        producer_config = {
            **self.client_config,
            "acks": "all",
            "enable.idempotence": True,
            "allow.auto.create.topics": False,
            "message.timeout.ms": round(self.delivery_timeout * 1000),
        }
        producer = Producer(producer_config)
        self._dead_letters = DeadLetterWriter(producer, self.delivery_timeout)
        metadata = check_topics(
            producer.list_topics,
            self.topics,
            self.bootstrap_servers,
            repr(self),
            self.metadata_timeout,
        )
        missing = {
            dead: len(metadata.topics[topic].partitions)
            for topic, dead in self.dead_letter_topics.items()
            if dead not in metadata.topics
        }
        if missing:
            self._create_topics(missing)
        # on_commit: the answers to asynchronous commits, served inside consume/poll/close.
        self._consumer = Consumer({**self.consumer_config, "on_commit": self._on_commit})
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _create_topics(self, partitions: dict[str, int]) -> None:  # in the bridge thread
        admin = AdminClient(self.client_config)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=count) for name, count in partitions.items()],
            request_timeout=self.metadata_timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=self.metadata_timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise connection_error(
                        exc, self.bootstrap_servers, f"{self!r}: creating dead-letter topic {name!r}"
                    ) from exc

    async def aclose(self) -> None:
        """Commit what was acknowledged, leave the group, stop the bridge thread. What was
        read and not acknowledged stays uncommitted (read again by the group)."""
        bridge, stack = self._bridge, self._exit_stack
        self._bridge = self._exit_stack = None
        if bridge is None or stack is None:
            return
        try:
            await bridge.run(self._close_clients)
        finally:
            await stack.aclose()

    def _close_clients(self) -> None:  # in the bridge thread
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                try:
                    self._commit_final(consumer)
                finally:
                    consumer.close()  # leaves the group: the revoke callback runs here
        finally:
            writer, self._dead_letters = self._dead_letters, None
            if writer is not None:
                writer.producer.flush(self.delivery_timeout)

    # -- rebalance callbacks (in the bridge thread, inside consume or close) ---------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self._ownership.assign(keys)
        self._at_end.difference_update(keys)
        self.stats.assignments += 1

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self.stats.revocations += 1
        self._at_end.difference_update(keys)
        commits = self._ownership.revoke(keys)
        if commits:
            # What is done is committed before the partitions go: the next owner starts
            # right after it. A failure leaves the tail to be read again (at-least-once).
            try:
                consumer.commit(offsets=_offsets(commits), asynchronous=False)
            except KafkaException:
                self.stats.commit_retries += 1
            else:
                self.stats.revoke_commits += 1
                self.stats.committed_offsets += len(commits)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self.stats.revocations += 1
        self._at_end.difference_update(keys)
        self._ownership.lose(keys)

    # -- reading ------------------------------------------------------------------------
    def _fetch(self, count: int) -> list[_Poll]:  # in the bridge thread: one crossing
        consumer = self._consumer
        assert consumer is not None
        if self._commit_failure is not None:
            failure, self._commit_failure = self._commit_failure, None
            raise failure
        self._commit_acknowledged(consumer)  # asynchronous: the answer comes in a later call
        self._unacked.drop_released()
        # A batch is what is ready now (consume(n, timeout) would wait to fill it): take
        # what is queued, else wait up to poll_timeout for one record and take it with what
        # came along. Any: the stubs type topic()/offset()... optional, never None here.
        # Up to FETCHES_PER_CROSSING full batches go in one crossing (the bridge thread
        # wakes trio once for them); a batch short of ``count`` means the queue is drained.
        polls: list[_Poll] = []
        for _ in range(FETCHES_PER_CROSSING):
            messages: list[Any] = consumer.consume(count, 0)
            if not messages:
                if polls:
                    break
                first = consumer.poll(self.poll_timeout)
                if first is not None:
                    messages = [first, *consumer.consume(count - 1, 0)] if count > 1 else [first]
            size = len(messages)
            polls.append(self._read(messages))
            # Dropped before the next consume: messages are objects the cyclic garbage
            # collector tracks, and a collection while they are alive (one the next
            # consume or trio's decoding triggers) would move them to an older generation,
            # which makes full collections come sooner.
            messages = []
            if size < count:
                break
        return polls

    def _read(self, messages: list[Any]) -> _Poll:  # in the bridge thread
        if not self.with_metadata and messages and not any(map(_message_error, messages)):
            # Records only (the common case). Here, what needs the consumer's state (the
            # epochs, the partitions at their end) and the records read into columns, in
            # C loops; the messages are dropped at once (see RecordColumns). The decoding
            # is done in trio's thread (_decode), while this one is in the next consume.
            partitions = list(map(_message_partition, messages))
            offsets = list(map(_message_offset, messages))
            topics = self.topics
            columns = RecordColumns(
                topics[0] if len(topics) == 1 else None,
                partitions,
                offsets,
                list(map(_message_key, messages)),
                list(map(_message_value, messages)),
                list(map(_message_headers, messages)),
                None if len(topics) == 1 else list(map(_message_topic, messages)),
            )
            # Offsets rise within a partition: the last one seen per partition is its end.
            if columns.topic is not None:
                topic = columns.topic
                last = dict(zip(partitions, offsets, strict=True))
                ends = {(topic, partition): offset + 1 for partition, offset in last.items()}
            else:
                assert columns.topics is not None
                keys = zip(columns.topics, partitions, strict=True)
                last_of = dict(zip(keys, offsets, strict=True))
                ends = {key: offset + 1 for key, offset in last_of.items()}
            at_end = self._at_end
            if at_end:
                at_end.difference_update(ends)
            epochs = self._ownership.epochs(ends)
            self.stats.read += len(messages)
            return _Poll(
                None,
                columns,
                {key: (end, epochs[key]) for key, end in ends.items()},
                [],
                False,
            )
        items = []
        good: list[Any] = []
        ends = {}
        undecodable: list[tuple[Any, Exception]] = []
        #: Partitions that reported their end in this poll, at which offset.
        ended: dict[TopicPartitionKey, int] = {}
        loads = self.codec.loads
        with_metadata = self.with_metadata
        for message in messages:
            error = message.error()
            if error is not None:
                code = error.code()
                if code == KafkaError._PARTITION_EOF:
                    ended[(message.topic(), message.partition())] = message.offset()
                elif error.fatal() or code in _FATAL_CONSUME_CODES:
                    raise connection_error(
                        KafkaException(error), self.bootstrap_servers, f"{self!r}: consuming"
                    )
                else:
                    self.stats.transient_errors += 1  # librdkafka reconnects by itself
                continue
            key = (message.topic(), message.partition())
            ends[key] = message.offset() + 1
            raw = message.value()
            try:
                value = None if raw is None else loads(raw)
            except Exception as exc:  # not this codec's format: dead-lettered, not fatal
                undecodable.append((message, exc))
                continue
            if with_metadata:
                kind, millis = message.timestamp()
                value = KafkaRecord(
                    key[0],
                    key[1],
                    message.offset(),
                    message.key(),
                    value,
                    tuple(message.headers() or ()),
                    millis / 1000 if kind else None,
                    TIMESTAMP_TYPES.get(kind, "not_available"),
                )
            items.append(value)
            good.append(message)
        # At its end: a partition whose end was reported after its last record read here.
        at_end = self._at_end
        at_end.difference_update(ends)
        at_end.update(key for key, offset in ended.items() if ends.get(key, offset) == offset)
        epochs = self._ownership.epochs(ends)
        assigned = self._ownership.assigned
        drained = not messages and bool(assigned) and assigned <= at_end
        self.stats.read += len(items) + len(undecodable)
        return _Poll(
            items,
            good,
            {key: (end, epochs[key]) for key, end in ends.items()},
            undecodable,
            drained,
        )

    def _decode(self, poll: _Poll) -> _Poll:  # in trio's thread
        """Decode a poll of records only: over the whole batch in one C loop (no Python
        frame per record), or, when some value does not decode (or is a tombstone), record
        by record, the undecodable ones apart (dead-lettered)."""
        columns = poll.messages
        assert isinstance(columns, RecordColumns)
        loads = self.codec.loads
        try:
            items = list(map(loads, columns.values))
        except Exception:
            items, good, undecodable = [], [], []
            for index, raw in enumerate(columns.values):
                try:
                    value = None if raw is None else loads(raw)
                except Exception as exc:  # not this codec's format: dead-lettered, not fatal
                    undecodable.append((columns[index], exc))
                    continue
                items.append(value)
                good.append(index)
            return _Poll(items, columns.select(good), poll.ends, undecodable, False)
        return _Poll(items, columns, poll.ends, [], False)

    def _without(self, poll: _Poll, moved: set[TopicPartitionKey]) -> _Poll:  # trio's thread
        """``poll`` without the records of ``moved`` partitions (revoked since the poll):
        read ahead, they would only be duplicates of what their next owner reads."""
        records = poll.messages
        kept: list[Any] | RecordColumns
        if isinstance(records, RecordColumns):
            keep = [i for i, key in enumerate(records.partition_keys()) if key not in moved]
            kept = records.select(keep)
        else:
            keep = [
                index
                for index, message in enumerate(records)
                if (message.topic(), message.partition()) not in moved
            ]
            kept = [records[index] for index in keep]
        self.stats.skipped_after_revoke += len(records) - len(keep)
        return _Poll(
            None if poll.items is None else [poll.items[index] for index in keep],
            kept,
            {key: end for key, end in poll.ends.items() if key not in moved},
            poll.undecodable,
            poll.drained,
        )

    def want_trace_headers(self) -> bool:
        """Keep each record's ``traceparent``/``tracestate`` headers (tracing is on)."""
        self._trace_log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        return self._trace_log.take()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        bridge = self._require_bridge()
        count = max(1, min(self.batch_size, chunk_size))
        unacked = self._unacked
        ahead: collections.deque[PendingCall[list[_Poll]]] = collections.deque()
        while True:
            if not ahead:
                # The waits below are shielded (a poll cannot be interrupted): see a
                # cancellation here, before fetching more.
                await trio.lowlevel.checkpoint_if_cancelled()
                ahead.append(bridge.submit(self._fetch, count))
            polls = await ahead.popleft().result()
            if any(poll.items is None or poll.items for poll in polls):
                # Fetch the next batches while the pipeline handles these, so the bridge
                # thread never waits for trio to ask (READ_AHEAD crossings at most: a
                # pipeline that stops asking stops the fetching that many crossings later).
                while len(ahead) < READ_AHEAD:
                    ahead.append(bridge.submit(self._fetch, count))
            for poll in polls:
                if poll.ends and (moved := self._ownership.moved(poll.ends)):
                    poll = self._without(poll, moved)
                if poll.items is None:
                    poll = self._decode(poll)
                items = poll.items
                assert items is not None
                if poll.undecodable:
                    await self._dead_letter_undecodable(poll.undecodable)
                if poll.ends:
                    unacked.add(ReadBatch(items, poll.messages, poll.ends))
                if items:
                    self._ack_requested = False
                    if self._trace_log.wanted:
                        self._trace_log.record(
                            [trace_header_pairs(message.headers()) for message in poll.messages]
                        )
                    yield items
                    if unacked.item_count >= self.ack_every:
                        self._ack_requested = True
                        yield []
                    continue
                if unacked.item_count:
                    if not self._ack_requested:
                        self._ack_requested = True
                        yield []  # nothing more ready: ask the pipeline to acknowledge
                    continue
                if unacked:
                    await self._settle()  # read records that all went to the dead letters
                if self.stop_when_drained and poll.drained:
                    return

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: commit the offsets after them."""
        unacked = self._unacked
        if isinstance(count, bool) or count < 0 or count > unacked.item_count:
            raise ConfigError(
                f"acknowledge({count!r}): only {unacked.item_count} items are unacknowledged"
            )
        self._ack_requested = False
        self._require_bridge()
        stale = self._ownership.stale
        # Committed by the next crossing (the next fetch), asynchronously: no crossing and
        # no wait for the broker here.
        self._ownership.acknowledged(unacked.take(count, position=_position))
        self.stats.stale_acknowledgments += self._ownership.stale - stale
        await trio.lowlevel.checkpoint()

    async def _settle(self) -> None:
        """Mark past batches that yielded no item (every record dead-lettered) for commit."""
        self._ownership.acknowledged(self._unacked.take(0))
        await trio.lowlevel.checkpoint()

    def _commit_acknowledged(self, consumer: Consumer) -> None:  # in the bridge thread
        """Send the acknowledged offsets in an asynchronous commit (:meth:`_on_commit` gets
        the broker's answer)."""
        offsets = self._ownership.take_commits()
        if not offsets:
            return
        self._ownership.sent(offsets)
        try:
            consumer.commit(offsets=_offsets(offsets), asynchronous=True)
        except KafkaException as exc:  # refused before sending (no coordinator yet...)
            self._ownership.answered()  # no answer will come for it
            for key, next_offset in offsets.items():
                self._ownership.commit_result(key, next_offset, failed=True)
            self._commit_refused(exc.args[0])

    def _commit_final(self, consumer: Consumer) -> None:  # in the bridge thread, at close
        """Commit synchronously the highest offset acknowledged for every partition owned.

        First the answers to the asynchronous commits still outstanding are awaited
        (``poll`` serves them; a record it returns is not acknowledged, so the group reads
        it again): librdkafka retries a commit whose connection dropped, and one landing
        after this commit would move the group's offsets back. (Pausing the partitions
        first left tansu's group unable to serve the next member.)
        Then the commit is retried while the coordinator is unreachable or moving, up to
        ``metadata_timeout``; a member fenced out of the group cannot commit (its partitions
        are read again by the group, at-least-once).
        """
        deadline = time.monotonic() + self.metadata_timeout
        while self._ownership.outstanding > 0 and time.monotonic() < deadline:
            consumer.poll(0.05)
        offsets = self._ownership.take_final()
        if not offsets:
            return
        backoff = 0.05
        while True:
            try:
                consumer.commit(offsets=_offsets(offsets), asynchronous=False)
                break
            except KafkaException as exc:
                error = exc.args[0]
                retriable = error.code() in _RETRIABLE_COMMIT_CODES or error.retriable()
                if not retriable:
                    raise KafkaCommitError(
                        f"{self!r}: committing offsets failed: {error.str()} (the records "
                        "are read again by the group)"
                    ) from exc
                self.stats.commit_retries += 1
                if error.code() in _FENCED_COMMIT_CODES or time.monotonic() + backoff > deadline:
                    _log.warning(
                        "%r: the final commit failed (%s); the group reads the records after "
                        "the last commit again",
                        self,
                        error.str(),
                    )
                    return
                time.sleep(backoff)  # the bridge thread: trio is not blocked
                backoff = min(backoff * 2, 1.0)
        self.stats.commits += 1
        self.stats.committed_offsets += len(offsets)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to an asynchronous commit (in the bridge thread)."""
        self._ownership.answered()
        failed_error = error
        done = 0
        for partition in partitions:
            failed = error is not None or partition.error is not None
            if failed and failed_error is None:
                failed_error = partition.error
            self._ownership.commit_result(
                (partition.topic, partition.partition), partition.offset, failed
            )
            done += not failed
        if failed_error is not None:
            self._commit_refused(failed_error)
        if done:
            self.stats.commits += 1
            self.stats.committed_offsets += done

    def _commit_refused(self, error: KafkaError) -> None:  # in the bridge thread
        """A commit failed: retried with the next one (its offsets were given back), or,
        when the broker refuses for good, raised by the next crossing."""
        if error.code() in _RETRIABLE_COMMIT_CODES or error.retriable():
            self.stats.commit_retries += 1
            return
        self._commit_failure = KafkaCommitError(
            f"{self!r}: committing offsets failed: {error.str()} (the records are read "
            "again by the group)"
        )

    # -- failures -----------------------------------------------------------------------
    async def _dead_letter_undecodable(self, undecodable: list[tuple[Any, Exception]]) -> None:
        letters = [
            DeadLetter(
                self.dead_letter_topics[message.topic()],
                message.key(),
                message.value(),
                origin_headers(
                    message,
                    f"cannot decode with {self.codec!r}: {type(exc).__name__}: {exc}",
                    None,
                    self.group,
                ),
            )
            for message, exc in undecodable
        ]
        await self._write_dead_letters(letters)

    async def reject(self, failed: list[Result]) -> None:
        """Write the records of ``failed`` to the dead-letter topic with the reason; the
        broker confirmed them when this returns (so before their offsets are committed)."""
        letters = []
        for result in failed:
            error = result.error
            reason = f"processor {result.node!r} failed: {type(error).__name__}: {error}"
            message = self._unacked.origin(result.data)
            if message is not None:
                letters.append(
                    DeadLetter(
                        self.dead_letter_topics[message.topic()],
                        message.key(),
                        message.value(),
                        origin_headers(message, reason, result.node, self.group),
                    )
                )
                continue
            # An item derived from a record (an earlier processor replaced it): its record
            # cannot be traced, so the item itself is written with the reason.
            try:
                value = self.codec.dumps(result.data)
            except Exception:
                value = repr(result.data).encode()
            headers: list[tuple[str, str | bytes | None]] = [
                ("haive.reason", reason.encode()),
                ("haive.node", (result.node or "").encode()),
                ("haive.group", self.group.encode()),
            ]
            letters.append(DeadLetter(self.dead_letter_topics[self.topics[0]], None, value, headers))
        if letters:
            await self._write_dead_letters(letters)

    async def _write_dead_letters(self, letters: list[DeadLetter]) -> None:
        writer = self._dead_letters
        assert writer is not None
        await self._require_bridge().run(writer.write, letters)
        self.stats.dead_lettered += len(letters)


# Any: the stubs type the getters optional, never None for a record (errors are checked).
_message_error: Any = Message.error
_message_value: Any = Message.value
_message_topic: Any = Message.topic
_message_partition: Any = Message.partition
_message_offset: Any = Message.offset
_message_key: Any = Message.key
_message_headers: Any = Message.headers


def _position(message: Any) -> tuple[TopicPartitionKey, int]:
    return (message.topic(), message.partition()), message.offset() + 1


def _offsets(offsets: dict[TopicPartitionKey, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
