"""Keyed partitions with automatic rebalancing: :class:`PartitionedStreamSource`.

A partitioned stream (:class:`~haive_plugin_redis.partitioning.PartitionedStream`: N Redis
streams, key -> partition by CRC-32) is read by a group of workers. Each partition is owned
by exactly one worker at a time, through a lease in Redis (:mod:`.partition_leases`); each
worker computes its share of the partitions from the live members
(:mod:`.partition_assignment`), releases what it should no longer own between two commits,
and takes free partitions. A worker that dies stops renewing: its leases expire after
``lease_ttl`` and the others take its partitions, reading first what it read and never
acknowledged (every owner of a partition reads as the same consumer). Every commit is
fenced by the partition's epoch (:mod:`.partition_member`), so a paused worker that wakes
up after its lease moved cannot commit.

One partition is in flight at a time: the source reads a partition until ``ack_every``
items or until it has nothing ready, asks the pipeline for an acknowledgment point (the
core's protocol: an empty batch), and only then moves to the next partition. So the keyed
state and the outputs of what is in flight belong to one partition
(:mod:`.partition_routing`), and exactly-once commits state, outputs and read position of
that partition in one ``MULTI/EXEC`` on its slot, as :class:`RedisStreamSource` does.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio
from redis.exceptions import ResponseError

from haive.dataflow import Result
from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sources import DataSource
from haive.dataflow.runtime.units import Duration, parse_duration

from ._resp import pack, same_slot
from .client import DEFAULT_URL, RedisClient
from .cluster import ClusterClient, stream_client
from .partition_assignment import share_of
from .partition_leases import PartitionLeases
from .partition_member import PartitionMember
from .partition_routing import PartitionOutputSink, PartitionState
from .partitioning import PartitionedStream
from .stream_failures import FAILURE_MODES
from .stream_fencing import FencedOff
from .stream_sink import _positive_int
from .stream_stats import StreamSourceStats
from .stream_wire import EntryCodec
from .streams import DELIVERY_MODES, default_consumer_name, reset_group


@attrs.define
class PartitionMetrics:
    """What one worker knows of one partition it owns (or owned).

    ``lag``: entries not yet delivered to the group, ``pending``: delivered and not
    acknowledged (both from ``XINFO GROUPS`` at the last heartbeat); ``epoch``: the lease's
    fencing token; ``acquired``: how many times this worker took the partition.

    Example::

        >>> PartitionMetrics(epoch=3).owned
        True
    """

    epoch: int | None = None
    lag: int | None = None
    pending: int | None = None
    acquired: int = 0

    @property
    def owned(self) -> bool:
        return self.epoch is not None


@attrs.define
class PartitionCounters:
    """Rebalancing counters of one :class:`PartitionedStreamSource`.

    Example::

        >>> PartitionCounters().rebalances
        0
    """

    #: Times this worker's share of the partitions changed (joins, leaves, crashes).
    rebalances: int = 0
    acquired: int = 0
    released: int = 0
    #: Partitions lost without releasing them (lease expired, commit fenced off).
    lost: int = 0


class PartitionedStreamSource(DataSource):
    """Reads a partitioned stream as one member of a group that shares its partitions.

    ``stream``: the partitioned stream's name (with ``partitions``, its fixed partition
    count, checked against the count stored at creation) or a :class:`PartitionedStream`.
    ``lease_ttl``: how long a partition stays owned without a heartbeat (a crashed worker's
    partitions move after it); heartbeats every ``heartbeat`` (default ``lease_ttl / 3``).
    ``block``: how long to wait when no owned partition has entries, and how often a
    partition this worker should own is tried while another still holds it. The other
    settings are :class:`~haive_plugin_redis.streams.RedisStreamSource`'s, per partition.

    Run it with ``haive worker pipeline.py --group G -n N``; its state (``state(name)``)
    and outputs (``sink(name)``) live next to each partition.

    Example::

        >>> import uuid
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> from haive_plugin_redis import PartitionedStreamSink
        >>> name = f"doc-{uuid.uuid4().hex[:8]}"
        >>> async def main():
        ...     async with PartitionedStreamSink(name, 4, key="user") as producer:
        ...         await producer.write_batch([{"user": f"u{n % 3}", "n": n} for n in range(9)])
        ...     source = PartitionedStreamSource(name, 4, group="g", delivery="exactly_once",
        ...                                      stop_when_drained=True)
        ...     counts = source.state("counts")
        ...     async def count(event):
        ...         await counts.add(event["user"])
        ...         return event
        ...     pipeline = StreamingPipeline("count")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(count)
        ...     pipeline.set_sink(source.sink("out"))
        ...     report = await pipeline.execute()
        ...     client = RedisClient()
        ...     u0 = await client.execute("GET", counts.prefix(producer.layout.partition("u0")) + "u0")
        ...     await client.execute("DEL", *[k for k in await client.execute("KEYS", f"*{name}*")])
        ...     client.close()
        ...     return report.processed, u0
        >>> trio.run(main)
        (9, b'3')
    """

    PLUGIN_NAME = "redis_partitioned_stream"
    acknowledges = True

    def __init__(
        self,
        stream: str | PartitionedStream,
        partitions: int | None = None,
        *,
        group: str = "haive",
        consumer: str | None = None,
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        delivery: str = "at_least_once",
        batch_size: int = 500,
        ack_every: int | None = None,
        block: Duration = "100ms",
        lease_ttl: Duration = "5s",
        heartbeat: Duration | None = None,
        start: str = "0",
        stop_when_drained: bool = False,
        codec: str | Serializer | None = None,
        field: str = "data",
        with_ids: bool = False,
        on_failure: str = "dead_letter",
        max_deliveries: int | None = None,
        pool_size: int = 8,
    ) -> None:
        if isinstance(stream, PartitionedStream):
            if partitions is not None and partitions != stream.partitions:
                raise ConfigError(
                    f"PartitionedStreamSource(partitions={partitions!r}): the layout "
                    f"{stream!r} has {stream.partitions}"
                )
            self.layout = stream
        else:
            if partitions is None:
                raise ConfigError(
                    f"PartitionedStreamSource(partitions=None): partitions must be the "
                    f"partition count of {stream!r} (fixed when it was created)"
                )
            self.layout = PartitionedStream(stream, partitions)
        if delivery not in DELIVERY_MODES:
            raise ConfigError(
                f"PartitionedStreamSource(delivery={delivery!r}): delivery must be one of "
                f"{DELIVERY_MODES}, got {delivery!r}"
            )
        self.delivery = delivery
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.url = client.url if client is not None else url
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.ack_every = _positive_int(
            ack_every if ack_every is not None else 4 * batch_size, "ack_every"
        )
        self.block = parse_duration(block, what="block")
        if self.block <= 0:
            raise ConfigError(
                f"PartitionedStreamSource(block={block!r}): block must be > 0 (how long an "
                "idle worker waits before it looks at its partitions again)"
            )
        self.lease_ttl = parse_duration(lease_ttl, what="lease_ttl")
        if self.lease_ttl <= 0:
            raise ConfigError(
                f"PartitionedStreamSource(lease_ttl={lease_ttl!r}): lease_ttl must be > 0"
            )
        self.heartbeat = (
            parse_duration(heartbeat, what="heartbeat")
            if heartbeat is not None
            else self.lease_ttl / 3
        )
        if not 0 < self.heartbeat < self.lease_ttl:
            raise ConfigError(
                f"PartitionedStreamSource(heartbeat={heartbeat!r}): heartbeat must be > 0 "
                f"and shorter than lease_ttl ({self.lease_ttl}s), got {self.heartbeat}s"
            )
        self.start = start
        self.stop_when_drained = stop_when_drained
        self._codec = EntryCodec(codec, field)
        self.with_ids = with_ids
        self.on_failure = on_failure
        self.max_deliveries = max_deliveries
        if on_failure not in FAILURE_MODES:
            raise ConfigError(
                f"PartitionedStreamSource(on_failure={on_failure!r}): on_failure must be one "
                f"of {FAILURE_MODES}, got {on_failure!r}"
            )
        if max_deliveries is not None and on_failure != "redeliver":
            raise ConfigError(
                f"PartitionedStreamSource(max_deliveries={max_deliveries!r}): max_deliveries "
                "needs on_failure='redeliver'"
            )
        if max_deliveries is not None:
            _positive_int(max_deliveries, "max_deliveries")
        self.pool_size = _positive_int(pool_size, "pool_size")
        self._owns_client = client is None
        self.client = (
            client if client is not None else stream_client(url, self.layout.count_key, pool_size)
        )
        self._slot_clients: dict[str, RedisClient] = {}
        self.members: dict[int, PartitionMember] = {}
        #: The partition in flight (its items are yielded and not yet acknowledged).
        self.current_member: PartitionMember | None = None
        self.metrics: dict[int, PartitionMetrics] = {}
        self.counters = PartitionCounters()
        self.live_members: list[str] = []
        self._target: list[int] = []
        self._retired = StreamSourceStats()
        self._leases: PartitionLeases | None = None
        self._next_heartbeat = -math.inf
        self._next_acquire = -math.inf
        self._opened = False
        self._stopping = False

    def __repr__(self) -> str:
        return (
            f"PartitionedStreamSource({self.layout.name!r}, {self.layout.partitions}, "
            f"group={self.group!r}, consumer={self.consumer!r}, delivery={self.delivery!r})"
        )

    @property
    def exactly_once(self) -> bool:
        return self.delivery == "exactly_once"

    @property
    def codec(self) -> EntryCodec:
        return self._codec

    def use_serializer(self, serializer: Serializer) -> None:
        """Decode entries with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self._codec = self._codec.adopt(serializer, repr(self))
        for member in self.members.values():
            member.codec = self._codec

    # -- group membership (haive worker) ------------------------------------------------
    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Set the group and/or this worker's name before the source is opened."""
        if self._opened:
            raise ConfigError("PartitionedStreamSource.join: the source is already open")
        if group is not None:
            self.group = group
        if consumer is not None:
            self.consumer = consumer

    def membership(self) -> dict[str, Any]:
        """What ``haive worker`` prints: group, consumer, partitions owned, metrics, counters."""
        return {
            "consumer": self.consumer,
            "group": self.group,
            "stream": self.layout.name,
            "partitions": self.layout.partitions,
            "delivery": self.delivery,
            "owned": sorted(self.members),
            "live_members": list(self.live_members),
            **attrs.asdict(self.counters),
            **attrs.asdict(self.stats),
            "partition_metrics": {str(p): attrs.asdict(m) for p, m in sorted(self.metrics.items())},
        }

    @property
    def target(self) -> list[int]:
        """The partitions this worker should own (its share at the last heartbeat)."""
        return list(self._target)

    @property
    def balanced(self) -> bool:
        """Whether this worker owns exactly its share."""
        return sorted(self.members) == self._target

    @property
    def stats(self) -> StreamSourceStats:
        """The stream counters summed over every partition this worker owned."""
        total = attrs.evolve(self._retired)
        for member in self.members.values():
            for name, value in attrs.asdict(member.stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    async def rewind(self, position: str) -> None:
        """``haive worker --replay-from ID``: every partition's group reads again from ``ID``."""
        for stream in self.layout.streams():
            client = stream_client(self.url, stream, 1)
            try:
                await reset_group(client, stream, self.group, position)
            finally:
                client.close()

    async def describe(self) -> list[dict[str, Any]]:
        """Every partition's owner and epoch, read from Redis (for dashboards and tests)."""
        leases = self._leases or self._make_leases()
        return [
            {"partition": p, "owner": owner, "epoch": epoch}
            for p, (owner, epoch) in enumerate(await leases.owners())
        ]

    # -- companions ---------------------------------------------------------------------
    def state(self, name: str) -> PartitionState:
        """Keyed state ``name`` of the partition in flight, stored next to it in Redis."""
        return PartitionState(self, name)

    def sink(
        self,
        name: str,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer | None = None,
        field: str = "data",
    ) -> PartitionOutputSink:
        """Outputs to the stream ``name`` next to each partition (exactly once: committed
        with the partition's read position)."""
        return PartitionOutputSink(
            self, name, maxlen=maxlen, approximate=approximate, codec=codec, field=field
        )

    # -- clients ------------------------------------------------------------------------
    def _client_for(self, key: str) -> RedisClient:
        """The client of ``key``'s slot (one shared client without Redis Cluster)."""
        if not isinstance(self.client, ClusterClient) or same_slot(key, self.layout.count_key):
            return self.client
        client = self._slot_clients.get(key)
        if client is None:
            client = self._slot_clients[key] = stream_client(self.url, key, self.pool_size)
        return client

    def _partition_client(self, partition: int) -> RedisClient:
        return self._client_for(self.layout.stream(partition))

    def _make_leases(self) -> PartitionLeases:
        def clients(key: str) -> RedisClient:
            # Members live in the stream name's slot, leases in their partition's.
            return self._client_for(key[: key.index("}") + 1])

        return PartitionLeases(
            self.layout, self.group, self.consumer, ttl=self.lease_ttl, clients=clients
        )

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        await self.layout.ensure(self.client)
        # Every partition's group exists from the start, at ``start`` (so none misses
        # entries written before its first owner came, and "drained" can be asked of all).
        for partition, stream in enumerate(self.layout.streams()):
            reply = await self._partition_client(partition).send(
                pack("XGROUP", "CREATE", stream, self.group, self.start, "MKSTREAM"), 1
            )
            if isinstance(reply[0], ResponseError) and "BUSYGROUP" not in str(reply[0]):
                raise HaiveError(
                    f"cannot create consumer group {self.group!r} on {stream!r}: {reply[0]}"
                )
        self._leases = self._make_leases()
        self._opened = True
        await self.rebalance()

    async def aclose(self) -> None:
        """Hand every partition over: what is in flight stays pending for the next owner,
        the leases are released and this worker leaves the group at once."""
        try:
            if self._opened:
                with trio.move_on_after(max(2.0, self.lease_ttl)):
                    for partition in list(self.members):
                        await self._let_go(partition, release=True)
                    assert self._leases is not None
                    await self._leases.leave()
        finally:
            for member in self.members.values():  # (not handed over: cancelled or failed)
                await member.aclose()
                self._retire(member)
            self.members.clear()
            self._opened = False
            for client in self._slot_clients.values():
                client.close()
            self._slot_clients.clear()
            if self._owns_client:
                self.client.close()

    def stop_reading(self) -> None:
        """A clean leave (``haive worker`` on SIGTERM, a
        :class:`~haive.dataflow.io.groups.StoppableSource`): read nothing more, let the
        partition in flight be written and committed, then end the input; closing releases
        every lease, so the next owners take over at once with nothing left to replay."""
        self._stopping = True

    # -- reading ------------------------------------------------------------------------
    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        count = max(1, min(self.batch_size, chunk_size))
        next_drain_check = -math.inf
        while not self._stopping:
            await self.rebalance()
            progressed = False
            for partition in sorted(self.members):
                member = self.members.get(partition)
                if member is None:
                    continue  # lost or released by the last coordination
                items = await self._poll(member, count)
                if not items:
                    continue
                progressed = True
                self.current_member = member
                try:
                    yield items
                    while (
                        member.unacknowledged < self.ack_every
                        and not self._stopping
                        and trio.current_time() < self._next_heartbeat
                        and self.members.get(partition) is member
                    ):
                        more = await self._poll(member, count)
                        if not more:
                            break
                        yield more
                    # Commit this partition before another one: nothing in flight mixes two.
                    while member.unacknowledged and self.members.get(partition) is member:
                        yield []
                finally:
                    self.current_member = None
                if self._stopping:
                    return
                await self.rebalance()
            if progressed or self._stopping:
                continue
            now = trio.current_time()
            if self.stop_when_drained and now >= next_drain_check:
                next_drain_check = now + self.heartbeat
                if await self._all_drained():
                    return
            wait = min(self.block, max(0.0, self._next_heartbeat - now))
            await trio.sleep(wait)

    async def _poll(self, member: PartitionMember, count: int) -> list[Any]:
        aborted = member.stats.aborted_commits
        try:
            items = await member.poll(count)
        except FencedOff:
            await self._let_go(member.partition, release=False)
            return []
        await self._check_fenced(member, aborted)
        return items

    async def _all_drained(self) -> bool:
        for partition, stream in enumerate(self.layout.streams()):
            client = self._partition_client(partition)
            groups = await client.call(client.redis.xinfo_groups, stream)
            info = next((g for g in groups if _text(g.get("name")) == self.group), None)
            if info is None:
                raise HaiveError(f"consumer group {self.group!r} of {stream!r} no longer exists")
            if info.get("pending") or info.get("lag") != 0:
                return False
        return True

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """Commit the partition in flight (its ``count`` items), fenced by its epoch."""
        member = self.current_member
        if member is None:
            raise ConfigError(f"acknowledge({count}): no partition is in flight")
        if self.members.get(member.partition) is not member:
            return  # lost meanwhile: the new owner reads these entries again
        aborted = member.stats.aborted_commits
        try:
            await member.acknowledge(count)
        except FencedOff:
            await self._let_go(member.partition, release=False)
            return
        await self._check_fenced(member, aborted)

    async def reject(self, failed: list[Result]) -> None:
        """Dead-letter (or leave pending) the failed items of the partition in flight."""
        member = self.current_member
        if member is None:
            raise ConfigError("reject: no partition is in flight")
        await member.reject(failed)

    async def _check_fenced(self, member: PartitionMember, aborted_before: int) -> None:
        """After an aborted exactly-once commit: if the epoch moved, let the partition go
        (a conflict on a state key only replays the epoch)."""
        if member.stats.aborted_commits > aborted_before and not await member.still_owned():
            await self._let_go(member.partition, release=False)

    # -- rebalancing ----------------------------------------------------------------------
    async def rebalance(self) -> None:
        """Heartbeat, renew, release and acquire, when due (between commits only)."""
        if self.current_member is not None and self.current_member.unacknowledged:
            return
        leases = self._leases
        assert leases is not None
        now = trio.current_time()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat
            self.live_members = await leases.heartbeat()
            target = share_of(self.consumer, self.live_members, self.layout.partitions)
            if target != self._target:
                self._target = target
                self.counters.rebalances += 1
                self._next_acquire = -math.inf
            lost = await leases.renew_many({p: m.epoch for p, m in self.members.items()})
            for partition in sorted(lost):
                await self._let_go(partition, release=False)
            for partition in sorted(set(self.members) - set(target)):
                await self._let_go(partition, release=True)  # cooperative: between commits
            await self._refresh_metrics()
        missing = [p for p in self._target if p not in self.members]
        if missing and now >= self._next_acquire:
            self._next_acquire = now + self.block
            for partition, epoch in (await leases.acquire_many(missing)).items():
                if epoch is not None:
                    await self._adopt(partition, epoch)

    async def _adopt(self, partition: int, epoch: int) -> None:
        member = PartitionMember(
            self.layout.stream(partition),
            partition=partition,
            epoch=epoch,
            group=self.group,
            client=self._partition_client(partition),
            delivery=self.delivery,
            batch_size=self.batch_size,
            codec=self._codec,
            with_ids=self.with_ids,
            on_failure=self.on_failure,
            max_deliveries=self.max_deliveries,
            start=self.start,
        )
        await member.open()
        self.members[partition] = member
        metrics = self.metrics.setdefault(partition, PartitionMetrics())
        metrics.epoch = epoch
        metrics.acquired += 1
        self.counters.acquired += 1

    async def _let_go(self, partition: int, *, release: bool) -> None:
        """Stop owning ``partition``: close its member (what it holds stays pending for the
        next owner) and, when the lease is still ours, release it."""
        member = self.members.pop(partition, None)
        if member is None:
            return
        self.metrics[partition].epoch = None
        try:
            await member.aclose()
        finally:
            self._retire(member)
        if release:
            assert self._leases is not None
            if await self._leases.release(partition, member.epoch):
                self.counters.released += 1
                return
        self.counters.lost += 1

    def _retire(self, member: PartitionMember) -> None:
        for name, value in attrs.asdict(member.stats).items():
            setattr(self._retired, name, getattr(self._retired, name) + value)

    async def _refresh_metrics(self) -> None:
        """Lag and pending of every owned partition; pending entries read again if held by
        nobody here (entries a fenced-off previous owner read after the move)."""
        for partition, member in list(self.members.items()):
            client = self._partition_client(partition)
            groups = await client.call(client.redis.xinfo_groups, member.stream)
            info = next((g for g in groups if _text(g.get("name")) == self.group), {})
            metrics = self.metrics[partition]
            metrics.lag = info.get("lag")
            metrics.pending = info.get("pending")
            if metrics.pending:
                member.read_pending_again()


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value
