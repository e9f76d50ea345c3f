"""Keyed partitions on the real Redis, in one process: layout, fencing, rebalancing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis
import trio
from haive_plugin_redis import (
    PartitionedStream,
    PartitionedStreamSink,
    PartitionedStreamSource,
    RedisClient,
)
from haive_plugin_redis.partition_assignment import assign
from haive_plugin_redis.partition_leases import PartitionLeases
from haive_plugin_redis.partition_member import PartitionMember
from haive_plugin_redis.stream_wire import EntryCodec

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis


@pytest.fixture
def name(r: redis.Redis) -> Iterator[str]:
    """A unique partitioned-stream name; every key made with it is deleted."""
    value = f"haive-test-{uuid.uuid4().hex[:12]}"
    yield value
    keys = list(r.scan_iter(match=f"*{value}*", count=1000))
    if keys:
        r.delete(*keys)


async def produce(name: str, partitions: int, events: list[dict]) -> None:
    async with PartitionedStreamSink(name, partitions, key="key") as sink:
        await sink.write_batch(events)


def output_of(r: redis.Redis, layout: PartitionedStream) -> list[list[bytes]]:
    return [[fields[b"data"] for _, fields in r.xrange(s)] for s in layout.streams()]


async def test_partition_count_is_fixed_at_creation(name):
    await produce(name, 4, [{"key": "a", "seq": 0}])
    source = PartitionedStreamSource(name, 8, group="g")
    with pytest.raises(ConfigError, match=r"created with 4 partitions .* the count is fixed"):
        await source.open()
    await source.aclose()
    with pytest.raises(ConfigError, match="partitions must be the partition count"):
        PartitionedStreamSource(name, group="g")
    with pytest.raises(ConfigError, match="heartbeat must be > 0 and shorter than lease_ttl"):
        PartitionedStreamSource(name, 4, lease_ttl="1s", heartbeat="2s")
    with pytest.raises(ConfigError, match="delivery must be one of"):
        PartitionedStreamSource(name, 4, delivery="at_most_once")
    with pytest.raises(ConfigError, match=r"block='0s'\): block must be > 0"):
        PartitionedStreamSource(name, 4, block="0s")
    with pytest.raises(ConfigError, match="max_deliveries needs on_failure='redeliver'"):
        PartitionedStreamSource(name, 4, max_deliveries=3)


async def test_sink_rejects_items_without_a_usable_key_and_writes_the_rest(name, r):
    sink = PartitionedStreamSink(name, 4, key="user")
    async with sink:
        with pytest.raises(RejectedItems) as caught:
            await sink.write_batch([{"user": "ada"}, {"n": 1}, {"user": 2.5}, {"user": "dan"}])
    assert sorted(caught.value.errors) == [1, 2]
    assert "KeyError" in str(caught.value.errors[1])
    assert "partition key must be str, bytes or int, got float" in str(caught.value.errors[2])
    assert sum(r.xlen(s) for s in sink.layout.streams()) == 2
    with pytest.raises(ConfigError, match="created with 4 partitions"):
        async with PartitionedStreamSink(name, 5, key="user"):
            pass


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_one_worker_drains_every_partition_with_state_next_to_it(name, r, delivery):
    events = [{"key": f"k{n % 13}", "seq": n} for n in range(2000)]
    await produce(name, 6, events)
    source = PartitionedStreamSource(
        name, 6, group="g", delivery=delivery, stop_when_drained=True, batch_size=100
    )
    counts = source.state("counts")

    async def count(event: dict) -> dict:
        await counts.add(event["key"])
        return event

    pipeline = StreamingPipeline("count")
    pipeline.set_source(source)
    pipeline.add_processor(count)
    sink = source.sink("out")
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert report.processed == 2000
    layout = PartitionedStream(name, 6)
    for partition, entries in enumerate(output_of(r, sink.layout)):
        seqs = [int(e.split(b'"seq":')[1].rstrip(b"}")) for e in entries]
        assert seqs == sorted(seqs)  # per-partition (so per-key) order kept
        for entry in entries:
            assert layout.partition(entry.split(b'"key":"')[1].split(b'"')[0]) == partition
    for k in range(13):
        key = f"k{k}"
        stored = r.get(counts.prefix(layout.partition(key)) + key)
        assert int(stored) == len([e for e in events if e["key"] == key])
    stats = source.membership()
    assert stats["owned"] == [] and stats["acquired"] == 6 and stats["released"] == 6
    assert stats["read"] == 2000 and stats["acknowledged"] == 2000
    # The leases were released and the member left on close.
    assert all(row["owner"] is None for row in await source.describe())
    assert r.zcard(f"{{{name}}}:members:g") == 0


async def test_a_commit_after_the_lease_moved_is_refused(name, r):
    """Exactly once: the old owner's staged state, output and XACK are not applied."""
    await produce(name, 1, [{"key": "a", "seq": 0}])
    layout = PartitionedStream(name, 1)
    client = RedisClient()
    old = PartitionLeases(layout, "g", "old", ttl=30.0, clients=lambda key: client)
    new = PartitionLeases(layout, "g", "new", ttl=30.0, clients=lambda key: client)
    epoch = await old.acquire(0)
    member = PartitionMember(
        layout.stream(0), partition=0, epoch=epoch, group="g", client=client,
        delivery="exactly_once", batch_size=10, codec=EntryCodec("json"),
    )  # fmt: skip
    await member.open()
    try:
        assert len(await member.poll(10)) == 1  # the epoch's WATCH is on
        await member.state("counts").add("a", 1)
        await member.sink(layout.stream(0) + ":out").write_batch([{"seq": 0}])
        r.delete(old.lease_key(0))  # the lease expired (a long pause)...
        assert await new.acquire(0) == epoch + 1  # ...and a new owner took it
        await member.acknowledge(1)  # the epoch read under WATCH is not ours: refused
        assert member.stats.fenced_commits == 1 and member.stats.aborted_commits == 1
        assert not await member.still_owned()
        # Again in an epoch whose WATCH starts after the move.
        assert len(await member.poll(10)) == 1
        await member.state("counts").add("a", 1)
        await member.acknowledge(1)
        assert member.stats.fenced_commits == 2 and member.stats.commits == 0
    finally:
        await member.aclose()
        client.close()
    assert r.get(layout.stream(0) + ":state:counts:a") is None
    assert r.xlen(layout.stream(0) + ":out") == 0
    assert r.xpending(layout.stream(0), "g")["pending"] == 1  # still the new owner's to do


async def test_an_expired_lease_goes_to_the_next_owner_with_a_new_epoch(name, r):
    """Real expiry (Redis's clock, PX): the old owner's renewal then reports it lost."""
    layout = PartitionedStream(name, 2)
    client = RedisClient()
    old = PartitionLeases(layout, "g", "old", ttl=0.2, clients=lambda key: client)
    new = PartitionLeases(layout, "g", "new", ttl=5.0, clients=lambda key: client)
    try:
        assert await old.heartbeat() == ["old"]
        epoch = await old.acquire(0)
        assert await new.acquire(0) is None
        assert await old.renew_many({0: epoch}) == set()
        with trio.fail_after(10):
            # (expiry happens in Redis: asking again is the only way to see it)
            while (taken := await new.acquire(0)) is None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert taken == epoch + 1
        assert await new.heartbeat() == ["new"]  # the old member expired too
        assert await old.renew_many({0: epoch}) == {0}  # lost: nothing extended
        assert not await old.release(0, epoch)  # and not released from under the new owner
        assert (await new.owners())[0] == ("new", epoch + 1)
    finally:
        client.close()


async def test_rebalance_releases_the_share_of_a_new_member(name, r, autojump_clock):
    """Timing on the trio clock (MockClock): on its next heartbeat the owner hands over."""
    await produce(name, 4, [{"key": f"k{n}", "seq": n} for n in range(8)])
    source = PartitionedStreamSource(name, 4, group="g", consumer="a", lease_ttl="60s")
    client = RedisClient()
    other = PartitionLeases(
        PartitionedStream(name, 4), "g", "b", ttl=60.0, clients=lambda key: client
    )
    try:
        await source.open()
        assert sorted(source.members) == [0, 1, 2, 3]
        assert await other.heartbeat() == ["a", "b"]
        assert await other.acquire(1) is None  # a still holds it
        await source.rebalance()  # not due yet: nothing moves
        assert sorted(source.members) == [0, 1, 2, 3]
        await trio.sleep(source.heartbeat)
        await source.rebalance()
        assert sorted(source.members) == [0, 3] == assign(["a", "b"], 4)["a"]
        assert source.counters.released == 2 and source.counters.rebalances == 2
        assert await other.acquire_many([1, 2]) == {1: 2, 2: 2}
        owners = [row["owner"] for row in await source.describe()]
        assert owners == ["a", "b", "b", "a"]
    finally:
        await source.aclose()
        client.close()


async def test_two_workers_share_partitions_and_a_joiner_gets_its_share(name, r):
    events = [{"key": f"k{n % 50}", "seq": n} for n in range(6000)]
    await produce(name, 8, events[:3000])

    def worker(consumer: str) -> tuple[StreamingPipeline, PartitionedStreamSource]:
        source = PartitionedStreamSource(
            name, 8, group="g", consumer=consumer, delivery="exactly_once",
            lease_ttl="1s", block="20ms", batch_size=100,
        )  # fmt: skip
        counts = source.state("counts")

        async def count(event: dict) -> dict:
            await counts.add(event["key"])
            return event

        pipeline = StreamingPipeline(f"count-{consumer}")
        pipeline.set_source(source)
        pipeline.add_processor(count)
        pipeline.set_sink(source.sink("out"))
        return pipeline, source

    first, first_source = worker("a")
    second, second_source = worker("b")
    out = PartitionedStream(name, 8, ":out")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.execute)
        with trio.fail_after(30):
            # (progress is in Redis: polling is the only way to see it)
            while sum(r.xlen(s) for s in out.streams()) < 1000:  # noqa: ASYNC110
                await trio.sleep(0.02)
        nursery.start_soon(second.execute)
        await produce(name, 8, events[3000:])
        with trio.fail_after(60):
            while sum(r.xlen(s) for s in out.streams()) < 6000 or len(second_source.members) < 4:  # noqa: ASYNC110
                await trio.sleep(0.05)
        owned = (set(first_source.members), set(second_source.members))
        nursery.cancel_scope.cancel()
    assert owned[0].isdisjoint(owned[1]) and len(owned[0]) == len(owned[1]) == 4
    seqs = sorted(int(e.split(b'"seq":')[1].rstrip(b"}")) for p in output_of(r, out) for e in p)
    assert seqs == list(range(6000))  # exactly once across the handover
    assert second_source.counters.acquired >= 4 and first_source.counters.released >= 4


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_failed_items_are_dead_lettered_in_their_partition(name, r, delivery):
    await produce(name, 3, [{"key": f"k{n % 7}", "seq": n} for n in range(300)])
    source = PartitionedStreamSource(
        name, 3, group="g", delivery=delivery, stop_when_drained=True, batch_size=40
    )

    def poison(event: dict) -> dict:
        if event["seq"] % 10 == 0:
            raise ValueError(f"poison {event['seq']}")
        return event

    pipeline = StreamingPipeline("poison")
    pipeline.set_source(source)
    pipeline.add_processor(poison)
    pipeline.set_sink(source.sink("out"))
    await pipeline.execute()
    layout = PartitionedStream(name, 3)
    dead = {p: r.xrange(layout.stream(p) + ":dead") for p in range(3)}
    assert sum(len(d) for d in dead.values()) == 30
    for p, entries in dead.items():
        for _, fields in entries:
            assert fields[b"reason"].startswith(b"processor 'poison_0' failed: ValueError")
            event = orjson.loads(fields[b"entry.data"])
            assert event["seq"] % 10 == 0 and layout.partition(event["key"]) == p
    assert sum(len(e) for e in output_of(r, layout.with_suffix(":out"))) == 270
    assert source.membership()["dead_lettered"] == 30
    assert all(r.xinfo_groups(s)[0]["pending"] == 0 for s in layout.streams())


async def test_redelivered_failures_come_back_at_the_next_heartbeat(name, r):
    await produce(name, 2, [{"key": f"k{n % 5}", "seq": n} for n in range(100)])
    source = PartitionedStreamSource(
        name, 2, group="g", stop_when_drained=True, batch_size=20, lease_ttl="600ms",
        on_failure="redeliver", max_deliveries=2,
    )  # fmt: skip
    attempts: dict[int, int] = {}

    def poison(event: dict) -> dict:
        if event["seq"] % 10 == 0:
            attempts[event["seq"]] = attempts.get(event["seq"], 0) + 1
            raise ValueError("poison")
        return event

    pipeline = StreamingPipeline("redeliver")
    pipeline.set_source(source)
    pipeline.add_processor(poison)
    pipeline.set_sink(source.sink("out"))
    with trio.fail_after(30):
        await pipeline.execute()
    layout = PartitionedStream(name, 2)
    assert attempts == {seq: 2 for seq in range(0, 100, 10)}
    assert sum(r.xlen(layout.stream(p) + ":dead") for p in range(2)) == 10
    assert sum(len(e) for e in output_of(r, layout.with_suffix(":out"))) == 90
    assert source.membership()["left_for_redelivery"] == 10


async def test_rewind_moves_every_partition_group_back(name, r):
    from haive.dataflow.io.groups import GroupMemberSource, RewindableGroup

    await produce(name, 3, [{"key": f"k{n}", "seq": n} for n in range(30)])
    source = PartitionedStreamSource(name, 3, group="g", stop_when_drained=True)
    assert isinstance(source, GroupMemberSource) and isinstance(source, RewindableGroup)
    pipeline = StreamingPipeline("copy")
    pipeline.set_source(source)
    pipeline.set_sink(source.sink("out"))
    assert (await pipeline.execute()).processed == 30
    layout = PartitionedStream(name, 3)
    assert sum(r.xinfo_groups(s)[0]["lag"] for s in layout.streams()) == 0
    await source.rewind("0")  # haive worker --replay-from 0
    assert sum(r.xinfo_groups(s)[0]["lag"] for s in layout.streams()) == 30
