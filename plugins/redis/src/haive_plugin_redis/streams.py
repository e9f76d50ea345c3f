"""Redis Streams source and sink: consumer groups, claims, replay, at-least-once and exactly-once.

The source reads with ``XREADGROUP`` in batches and acknowledges through the core's
acknowledgment protocol (:attr:`haive.dataflow.io.sources.DataSource.acknowledges`): every
``ack_every`` items, and whenever nothing new is ready, it yields an empty batch; the
:class:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline` waits until everything read
so far is written by the sink (or dead-lettered, or filtered out) and calls
:meth:`RedisStreamSource.acknowledge`.

* ``delivery="at_least_once"``: acknowledging is one ``XACK`` of the IDs read, sent ahead
  of the next ``XREADGROUP`` in the same round trip (or when the source closes or checks it
  is drained). A crash before it redelivers those entries (duplicates downstream, nothing
  lost).
* ``delivery="exactly_once"``: the sink (:meth:`RedisStreamSource.sink`) and the keyed
  state (:meth:`RedisStreamSource.state`) only *stage* their writes; acknowledging commits
  the state writes, the output ``XADD``\\ s, the dead letters and the ``XACK`` in one
  ``MULTI/EXEC`` on a connection that ``WATCH``\\ es this consumer's fence key and every state
  key read. Either all of it happens or none: a crash, a conflicting write by another
  worker, or a claim of this consumer's entries by another (which bumps the fence) aborts
  the transaction and the entries are processed again. Every key carries the input
  stream's hash tag, so the transaction also runs on Redis Cluster.

Pending entries of a consumer that died are claimed by the living once idle for
``claim_idle``: with ``XAUTOCLAIM`` at least once; exactly once with ``XPENDING`` +
``XCLAIM`` inside a ``MULTI/EXEC`` that first bumps the previous owners' fence keys
(``XAUTOCLAIM`` does not say whose entries it took, and a slow-but-alive owner must be
fenced off before its entries change hands).

The source itself, :class:`RedisStreamSource` (configuration, consumer group, lifecycle,
the ``batches`` loop and its acknowledgment points), is here with :func:`reset_group`. It
is composed of parts, each an object with its own state, given what it works on, in one
module per concern (the other public names are re-exported from this one):

* :mod:`.stream_reading`: :class:`~.stream_reading.EntryReader` (replay, claims,
  ``XREADGROUP``, decoding) and :class:`StreamEntry`;
* :mod:`.stream_unacked`: :class:`~.stream_unacked.UnackedEntries`, what was read and not
  acknowledged;
* :mod:`.stream_claims`: :class:`~.stream_claims.IdleEntryClaimer`, claiming dead
  consumers' pending entries, with fencing;
* :mod:`.stream_acks`: :class:`~.stream_acks.StreamAcknowledger`, at-least-once ``XACK``;
* :mod:`.stream_fencing`: :class:`~.stream_fencing.FencedConnection`, the exactly-once
  connection that watches this consumer's fence key;
* :mod:`.stream_exactly_once`: :class:`~.stream_exactly_once.ExactlyOnceCommitter`, the
  epoch's :class:`Transaction` and :class:`RedisCommitError`;
* :mod:`.stream_failures`: :class:`~.stream_failures.FailureHandler`, entries whose items
  failed in a processor;
* :mod:`.stream_dead_letters`: :class:`~.stream_dead_letters.DeadLetterWriter`;
* :mod:`.stream_state`: :class:`TransactionalState`, keyed state staged for the commit;
* :mod:`.stream_sink`: :class:`RedisStreamSink`;
* :mod:`.stream_stats`: :class:`StreamSourceStats`, the counters every part adds to;
* :mod:`.stream_wire`: :class:`EntryCodec`, :func:`pack_xadds`, :func:`pack_payload_xadds`.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import trio
from redis.exceptions import RedisError, ResponseError

from haive.dataflow import Result
from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import TraceHeaderLog
from haive.dataflow.runtime.units import Duration, parse_duration

from ._resp import derived_key, pack, previous_id, same_slot
from .backend import RedisStateBackend
from .client import DEFAULT_URL, RedisClient
from .cluster import ClusterClient, stream_client
from .stream_acks import StreamAcknowledger
from .stream_claims import IdleEntryClaimer
from .stream_dead_letters import DeadLetterWriter
from .stream_exactly_once import ExactlyOnceCommitter
from .stream_exactly_once import RedisCommitError as RedisCommitError
from .stream_exactly_once import Transaction as Transaction
from .stream_failures import FAILURE_MODES, FailureHandler
from .stream_fencing import FencedConnection, fence_key
from .stream_reading import EntryReader
from .stream_reading import StreamEntry as StreamEntry
from .stream_sink import RedisStreamSink as RedisStreamSink
from .stream_sink import _positive_int
from .stream_state import TransactionalState as TransactionalState
from .stream_stats import StreamSourceStats as StreamSourceStats
from .stream_unacked import UnackedEntries
from .stream_wire import EntryCodec as EntryCodec
from .stream_wire import pack_payload_xadds as pack_payload_xadds
from .stream_wire import pack_xadds as pack_xadds

DELIVERY_MODES = ("at_least_once", "exactly_once")


def default_consumer_name() -> str:
    """``host-pid-random``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class RedisStreamSource(DataSource):
    """Reads a Redis stream as one consumer of a consumer group.

    ``group`` is created at ``start`` (``"0"``: the whole stream, ``"$"``: new entries
    only) if it does not exist. Items are the decoded entries (``codec``/``field``, see
    :class:`EntryCodec`), or :class:`StreamEntry` with ``with_ids=True``. An entry that
    cannot be decoded goes to the ``dead_letter`` stream (default ``<stream>:dead`` in the
    same hash slot) with the reason, and reading goes on.

    ``on_failure``: what happens to an entry whose item a processor failed on for good
    when the pipeline has no dead-letter sink of its own (see :mod:`.stream_failures`):
    ``"dead_letter"`` (default) writes it to the ``dead_letter`` stream with its original
    fields, the reason, the node, its ID and delivery count before it is acknowledged;
    ``"redeliver"`` leaves it pending, so it is claimed again after ``claim_idle``, and
    dead-letters it once delivered ``max_deliveries`` times (default 5).

    ``claim_idle``: pending entries of other consumers idle that long are claimed (a dead
    worker's work moves to the living), checked every ``claim_interval``.
    ``replay_from``: when opened, move the group back so the stream is read again from
    that ID (inclusive; ``"0"`` for everything; it moves the whole group, so one process
    should do it: ``haive worker --replay-from``). ``stop_when_drained``: end when the
    group has no undelivered and no pending entries (batch jobs, tests).

    Example: at-least-once copy of one stream into another::

        >>> import uuid
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> name = f"doc-{uuid.uuid4().hex}"
        >>> async def main():
        ...     source = RedisStreamSource(f"{{{name}}}:in", group="g", stop_when_drained=True)
        ...     sink = source.sink(f"{{{name}}}:out")
        ...     await sink.open()
        ...     await RedisStreamSink(f"{{{name}}}:in", client=source.client).write_batch(
        ...         [{"n": n} for n in range(5)])
        ...     pipeline = StreamingPipeline("copy")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda e: {"n": e["n"] * 10})
        ...     pipeline.set_sink(sink)
        ...     report = await pipeline.execute()
        ...     out = await source.client.execute("XRANGE", f"{{{name}}}:out", "-", "+")
        ...     await source.client.execute("DEL", f"{{{name}}}:in", f"{{{name}}}:out")
        ...     source.client.close()
        ...     return report.processed, [fields for _, fields in out]
        >>> trio.run(main)
        (5, [{b'data': b'{"n":0}'}, {b'data': b'{"n":10}'}, ..., {b'data': b'{"n":40}'}])
    """

    PLUGIN_NAME = "redis_stream"
    acknowledges = True
    #: Delete this consumer from the group on close when it holds nothing (a partition's
    #: consumer is shared by its successive owners, so it must stay).
    forget_consumer_on_close = True

    def __init__(
        self,
        stream: str,
        *,
        group: str = "haive",
        consumer: str | None = None,
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        delivery: str = "at_least_once",
        batch_size: int = 1000,
        ack_every: int | None = None,
        block: Duration = "100ms",
        start: str = "0",
        claim_idle: Duration = "30s",
        claim_interval: Duration | None = None,
        stop_when_drained: bool = False,
        codec: str | Serializer | None = None,
        field: str = "data",
        with_ids: bool = False,
        dead_letter: str | None = None,
        on_failure: str = "dead_letter",
        max_deliveries: int | None = None,
        replay_from: str | None = None,
        pool_size: int = 8,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError(
                f"RedisStreamSource: stream must be a non-empty string, got {stream!r}"
            )
        if delivery not in DELIVERY_MODES:
            raise ConfigError(
                f"RedisStreamSource: delivery must be one of {DELIVERY_MODES}, got {delivery!r}"
            )
        self.stream = stream
        self._group = group
        self._consumer = consumer or default_consumer_name()
        self.delivery = delivery
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.ack_every = _positive_int(
            ack_every if ack_every is not None else 4 * batch_size, "ack_every"
        )
        self.block = parse_duration(block, what="block")
        self.start = start
        self.claim_idle = parse_duration(claim_idle, what="claim_idle")
        self.claim_interval = (
            parse_duration(claim_interval, what="claim_interval")
            if claim_interval is not None
            else max(0.05, self.claim_idle / 2)
        )
        self.stop_when_drained = stop_when_drained
        self._codec = EntryCodec(codec, field)
        self.with_ids = with_ids
        self.dead_letter = dead_letter or derived_key(stream, "dead")
        if delivery == "exactly_once" and not same_slot(stream, self.dead_letter):
            raise ConfigError(
                f"exactly_once: dead-letter stream {self.dead_letter!r} is not in the hash slot "
                f"of {stream!r}; give it the same hash tag (e.g. {derived_key(stream, 'dead')!r})"
            )
        if on_failure not in FAILURE_MODES:
            raise ConfigError(
                f"RedisStreamSource: on_failure must be one of {FAILURE_MODES}, got {on_failure!r}"
            )
        if max_deliveries is not None and on_failure != "redeliver":
            raise ConfigError(
                f"RedisStreamSource: max_deliveries={max_deliveries!r} needs "
                f"on_failure='redeliver' (with on_failure={on_failure!r} a failed entry is "
                "dead-lettered at once)"
            )
        self.on_failure = on_failure
        self.max_deliveries = _positive_int(
            max_deliveries if max_deliveries is not None else 5, "max_deliveries"
        )
        self.replay_from = replay_from
        if replay_from is not None:
            previous_id(replay_from)  # validates
        self._owns_client = client is None
        self.client = client if client is not None else stream_client(url, stream, pool_size)
        self.url = self.client.url
        self.stats = StreamSourceStats()
        self.transaction = Transaction()
        self._dead_letters = DeadLetterWriter(
            self.client,
            self.dead_letter,
            stats=self.stats,
            transaction=self.transaction if self.exactly_once else None,
        )
        #: Exactly once: the dedicated connection reads, claims and the commit go through.
        self.fenced_connection = FencedConnection(self.client) if self.exactly_once else None
        self._unacked = UnackedEntries()
        #: Each yielded item's trace headers (entry fields), kept only while tracing is on.
        self._trace_log = TraceHeaderLog()
        self._ack_requested = False
        self._opened = False
        self._compose()

    def _compose(self) -> None:
        """Build the parts that know this consumer's group and name (again after ``join``)."""
        self._committer = (
            ExactlyOnceCommitter(
                self.fenced_connection,
                self.stream,
                self.group,
                self.consumer,
                transaction=self.transaction,
                unacked=self._unacked,
                dead_letters=self._dead_letters,
                stats=self.stats,
            )
            if self.fenced_connection is not None
            else None
        )
        self._claimer = IdleEntryClaimer(
            self.client,
            self.stream,
            self.group,
            self.consumer,
            idle=self.claim_idle,
            interval=self.claim_interval,
            fenced=self.exactly_once,
            unacked=self._unacked,
        )
        self._failures = FailureHandler(
            self.client,
            self.stream,
            self.group,
            self.consumer,
            codec=self._codec,
            on_failure=self.on_failure,
            max_deliveries=self.max_deliveries,
            unacked=self._unacked,
            dead_letters=self._dead_letters,
            stats=self.stats,
        )
        self._acknowledger = StreamAcknowledger(
            self.client, self.stream, self.group, unacked=self._unacked, stats=self.stats
        )
        self._reader = EntryReader(
            self.client,
            self.stream,
            self.group,
            self.consumer,
            block=self.block,
            codec=self._codec,
            with_ids=self.with_ids,
            unacked=self._unacked,
            claimer=self._claimer,
            fenced_connection=self.fenced_connection,
            dead_letters=self._dead_letters,
            stats=self.stats,
            trace_log=self._trace_log,
            acknowledger=self._acknowledger if self._committer is None else None,
        )

    @property
    def codec(self) -> EntryCodec:
        """How entries decode into items (and failed items encode into dead letters)."""
        return self._codec

    @codec.setter
    def codec(self, codec: EntryCodec) -> None:
        self._codec = codec
        self._reader.codec = codec
        self._failures.codec = codec

    def use_serializer(self, serializer: Serializer) -> None:
        """Decode entries with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self.codec = self.codec.adopt(serializer, f"RedisStreamSource({self.stream!r})")

    def __repr__(self) -> str:
        return (
            f"RedisStreamSource({self.stream!r}, group={self.group!r}, "
            f"consumer={self.consumer!r}, delivery={self.delivery!r})"
        )

    @property
    def exactly_once(self) -> bool:
        return self.delivery == "exactly_once"

    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Set the consumer group and/or consumer name before the source is opened."""
        if self._opened:
            raise ConfigError("RedisStreamSource.join: the source is already open")
        if group is not None:
            self._group = group
        if consumer is not None:
            self._consumer = consumer
        self._compose()

    # The parts are given the group and consumer name: assigning them is joining.
    @property
    def group(self) -> str:
        """The consumer group (set with :meth:`join`, or by assigning before opening)."""
        return self._group

    @group.setter
    def group(self, group: str) -> None:
        self.join(group=group)

    @property
    def consumer(self) -> str:
        """This consumer's name in the group (set with :meth:`join`, or by assigning)."""
        return self._consumer

    @consumer.setter
    def consumer(self, consumer: str) -> None:
        self.join(consumer=consumer)

    def membership(self) -> dict[str, Any]:
        """What ``haive worker`` prints about this member (group, consumer, stream, counters)."""
        return {
            "consumer": self.consumer,
            "group": self.group,
            "stream": self.stream,
            "delivery": self.delivery,
            **attrs.asdict(self.stats),
        }

    async def rewind(self, position: str) -> None:
        """``haive worker --replay-from ID``: make the group read again from stream id
        ``position`` (inclusive; ``0`` = everything), creating the group if needed."""
        client = stream_client(self.url, self.stream, 1)  # a cluster URL: its slot's node
        try:
            await reset_group(client, self.stream, self.group, position)
        finally:
            client.close()

    def fence_key(self, consumer: str | None = None) -> str:
        """The key a claimer bumps to fence ``consumer`` off (exactly-once)."""
        return fence_key(self.stream, self.group, consumer or self.consumer)

    def state_prefix(self, name: str) -> str:
        """Key prefix of the keyed state ``name`` (same hash slot as the stream)."""
        return derived_key(self.stream, f"state:{name}:")

    # -- companions ---------------------------------------------------------------------
    def sink(
        self,
        stream: str,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer | None = None,
        field: str = "data",
    ) -> RedisStreamSink:
        """A sink writing to ``stream`` with this source's delivery guarantee.

        Exactly-once: its writes are committed with this source's acknowledgment (so
        ``stream`` must share the input's hash slot). At-least-once: a plain sink on the
        same connection pool.
        """
        own_slot = self.exactly_once or not isinstance(self.client, ClusterClient)
        return RedisStreamSink(
            stream,
            # On Redis Cluster the source's client serves its slot only.
            client=self.client if own_slot or same_slot(stream, self.stream) else None,
            url=self.url,
            maxlen=maxlen,
            approximate=approximate,
            codec=codec,
            field=field,
            transaction=self if self.exactly_once else None,
        )

    def state(self, name: str) -> RedisStateBackend | TransactionalState:
        """Keyed state ``name`` stored next to the stream (hash-tagged like it).

        Exactly-once: a :class:`TransactionalState` whose writes commit with this source's
        acknowledgment. At-least-once: a :class:`RedisStateBackend` writing at once. Wrap
        either in ``StateStore(...)`` for typed values.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"state name must be a non-empty string, got {name!r}")
        if self.exactly_once:
            return TransactionalState(self, self.state_prefix(name))
        return RedisStateBackend(client=self.client, prefix=self.state_prefix(name))

    # -- reading ------------------------------------------------------------------------
    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        count = max(1, min(self.batch_size, chunk_size))
        reader = self._reader
        unacked = self._unacked
        # At least once, the batch after an acknowledgment point is read before asking for
        # it: its XREADGROUP runs while the pipeline drains (the ack covers only what was
        # yielded, so the batch read ahead stays pending), instead of after the XACK with
        # the pipeline empty. (Exactly once commits whole epochs: nothing is read ahead.)
        read_ahead = self._committer is None
        ahead: list[Any] = []
        while True:
            if ahead:
                items, ahead = ahead, []
            else:
                block = not unacked.item_count or self._ack_requested
                entries = await reader.next_entries(count, block=block)
                if not entries:
                    if unacked.item_count:
                        self._ack_requested = True
                        yield []  # nothing more ready: ask the pipeline to acknowledge
                        continue
                    if unacked:
                        await self._settle_unyielded()
                    if self.stop_when_drained and await reader.drained():
                        return
                    continue
                items = await reader.accept(entries)
            if items:
                self._ack_requested = False
                yield items
            elif not unacked.item_count:
                await self._settle_unyielded()
            if unacked.item_count >= self.ack_every:
                self._ack_requested = True
                if read_ahead:
                    entries = await reader.next_entries(count, block=False)
                    if entries:
                        ahead = await reader.accept(entries)
                yield []

    async def poll(self, count: int) -> list[Any]:
        """Read once without waiting: the items of up to ``count`` entries (replayed,
        claimed or new), ``[]`` when none is ready. For a source that drives several of
        these (:class:`~haive_plugin_redis.partitioned.PartitionedStreamSource`); batches
        that yield no item (all dead-lettered) are settled here."""
        reader = self._reader
        entries = await reader.next_entries(count, block=False)
        items = await reader.accept(entries) if entries else []
        if not items and self._unacked and not self._unacked.item_count:
            await self._settle_unyielded()
        return items

    @property
    def unacknowledged(self) -> int:
        """Items yielded and not acknowledged yet."""
        return self._unacked.item_count

    def read_pending_again(self) -> None:
        """Read this consumer's pending entries again from the start, when nothing is held
        (entries another holder of this consumer name read and never acknowledged)."""
        if not self._unacked:
            self._reader.replay_unacknowledged()

    async def drained(self) -> bool:
        """Whether the group has no undelivered and no pending entry."""
        return await self._reader.drained()
    def want_trace_headers(self) -> bool:
        """Keep each entry's ``traceparent``/``tracestate`` fields (tracing is on)."""
        self._trace_log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        return self._trace_log.take()

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: XACK them (or commit the epoch)."""
        unacked = self._unacked
        if count < 0 or count > unacked.item_count:
            raise ConfigError(
                f"acknowledge({count}): only {unacked.item_count} items are unacknowledged"
            )
        self._ack_requested = False
        if self._committer is None:
            # The XACK goes out with the next read (or when the source stops), not alone.
            if not self._acknowledger.defer(count):
                await self._acknowledger.acknowledge(count)
            return
        if count != unacked.item_count:
            raise ConfigError(
                f"exactly_once commits whole epochs: acknowledge({count}) while "
                f"{unacked.item_count} items are unacknowledged"
            )
        await self._commit()

    async def reject(self, failed: list[Result]) -> None:
        """Dead-letter the entries of ``failed`` (or keep them pending), before their ack."""
        await self._failures.reject(failed)

    async def _settle_unyielded(self) -> None:
        """Acknowledge batches that yielded no item (all dead-lettered or gone)."""
        if self._committer is None:
            await self._acknowledger.settle()
        else:
            await self._commit()

    async def _commit(self) -> None:
        """Exactly once: commit the epoch; when it aborts, read its entries again."""
        assert self._committer is not None
        if not await self._committer.commit():
            self._reader.replay_unacknowledged()

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        if self.fenced_connection is not None:
            self.fenced_connection.open(self.fence_key())
        reply = await self.client.send(
            pack("XGROUP", "CREATE", self.stream, self.group, self.start, "MKSTREAM"), 1
        )
        if isinstance(reply[0], ResponseError) and "BUSYGROUP" not in str(reply[0]):
            raise HaiveError(
                f"cannot create consumer group {self.group!r} on {self.stream!r}: {reply[0]}"
            )
        if self.replay_from is not None:
            await self.client.execute(
                "XGROUP", "SETID", self.stream, self.group, previous_id(self.replay_from)
            )
        self._opened = True

    async def aclose(self) -> None:
        # What was read and not acknowledged stays pending in Redis (redelivered): count it.
        self.stats.left_pending += self._unacked.left_pending()
        try:
            deferred = self._acknowledger.deferred
            if self._opened and deferred:
                # Handled entries whose XACK was waiting for the next read: send it now.
                try:
                    await self._acknowledger.flush()
                except RedisError:
                    self.stats.left_pending += deferred  # never acknowledged: redelivered
                    raise
            if self._opened and not self._unacked and self.forget_consumer_on_close:
                # Leave the group tidy: forget this consumer when it holds nothing.
                with trio.move_on_after(2):
                    mine = await self.client.send(
                        pack("XPENDING", self.stream, self.group, "-", "+", 1, self.consumer), 1
                    )
                    if mine[0] == []:  # (an error reply: the group is gone, nothing to tidy)
                        await self.client.send(
                            pack("XGROUP", "DELCONSUMER", self.stream, self.group, self.consumer),
                            1,
                        )
        except RedisError:
            pass  # tidying is best effort: a lost connection must not hide the real error
        finally:
            self._opened = False
            if self.fenced_connection is not None:
                self.fenced_connection.close()
            if self._owns_client:
                self.client.close()


async def reset_group(client: RedisClient, stream: str, group: str, from_id: str) -> None:
    """Make ``group`` read ``stream`` again from ``from_id`` (inclusive), creating it if needed.

    Example::

        >>> import uuid
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"doc-{uuid.uuid4().hex}"
        ...     await reset_group(client, stream, "g", "5-0")
        ...     info = await client.call(client.redis.xinfo_groups, stream)
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return info[0]["last-delivered-id"]
        >>> trio.run(main)
        b'4-18446744073709551615'
    """
    start = previous_id(from_id)
    reply = await client.send(pack("XGROUP", "CREATE", stream, group, start, "MKSTREAM"), 1)
    if isinstance(reply[0], ResponseError):
        if "BUSYGROUP" not in str(reply[0]):
            raise HaiveError(f"cannot create consumer group {group!r} on {stream!r}: {reply[0]}")
        await client.execute("XGROUP", "SETID", stream, group, start)
