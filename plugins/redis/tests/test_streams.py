"""RedisStreamSource / RedisStreamSink in StreamingPipelines against the real Redis."""

from __future__ import annotations

import orjson
import pytest
import redis
import trio
import trio.lowlevel
from haive_plugin_redis import RedisStreamSink, RedisStreamSource, StreamEntry

from haive.dataflow.errors import ConfigError, NodeError, SerializationError
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.runtime.nodes import FilterNode
from haive.dataflow.state.processor import StatefulProcessor
from haive.dataflow.state.store import StateStore

pytestmark = pytest.mark.redis


def produce(r: redis.Redis, stream: str, items, field: str = "data") -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for item in items:
        pipe.xadd(stream, {field: orjson.dumps(item)})
    return pipe.execute()


def read_all(r: redis.Redis, stream: str) -> list:
    return [orjson.loads(fields[b"data"]) for _, fields in r.xrange(stream)]


def group_info(r: redis.Redis, stream: str, group: str) -> dict:
    return next(g for g in r.xinfo_groups(stream) if g["name"] == group.encode())


def pipeline_of(source, *steps, sink=None) -> StreamingPipeline:
    pipeline = StreamingPipeline("test")
    pipeline.set_source(source)
    for step in steps:
        pipeline.add_processor(step)
    if sink is not None:
        pipeline.set_sink(sink)
    return pipeline


async def test_at_least_once_copy_acknowledges_everything(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"n": n} for n in range(2500)])
    source = RedisStreamSource(
        src, group="g", batch_size=300, ack_every=700, stop_when_drained=True
    )
    pipeline = pipeline_of(source, lambda e: {"n": e["n"] + 1}, sink=source.sink(out))
    report = await pipeline.execute()
    assert report.processed == 2500
    assert [e["n"] for e in read_all(r, out)] == list(range(1, 2501))
    info = group_info(r, src, "g")
    assert info["pending"] == 0 and info["lag"] == 0
    assert source.stats.acknowledged == 2500
    assert info["consumers"] == 0  # a consumer holding nothing leaves the group when it closes


async def test_items_are_acknowledged_only_after_the_sink_wrote_them(tag, r):
    src = f"{{{tag}}}:in"
    produce(r, src, [{"n": n} for n in range(50)])
    seen_pending: list[int] = []

    class CheckingSink(StreamSink):
        async def write_batch(self, items):
            # while the sink holds a batch, those entries are still pending in the group
            seen_pending.append(
                await trio.to_thread.run_sync(lambda: group_info(r, src, "g")["pending"])
            )

    source = RedisStreamSource(src, group="g", batch_size=10, stop_when_drained=True)
    await pipeline_of(source, sink=CheckingSink()).execute()
    assert seen_pending and all(p > 0 for p in seen_pending)
    assert group_info(r, src, "g")["pending"] == 0


async def test_an_ack_point_reads_ahead_and_sends_the_xack_with_the_next_read(tag, r):
    """At least once: at an acknowledgment point the next batch is already read (it stays
    pending: the ack covers what was yielded), and the XACK rides with the next XREADGROUP,
    or is sent when the source closes."""
    src = f"{{{tag}}}:in"
    produce(r, src, [{"n": n} for n in range(7)])
    source = RedisStreamSource(src, group="g", batch_size=3, ack_every=3, block=0)
    await source.open()
    try:
        batches = source.batches(3)
        assert [e["n"] for e in await batches.__anext__()] == [0, 1, 2]
        assert await batches.__anext__() == []  # ack point; 3, 4, 5 were read ahead
        assert group_info(r, src, "g")["pending"] == 6
        await source.acknowledge(3)
        # Handled, but the XACK waits for the next read: still pending, nothing lost.
        assert group_info(r, src, "g")["pending"] == 6 and source.stats.acknowledged == 0
        assert [e["n"] for e in await batches.__anext__()] == [3, 4, 5]
        assert await batches.__anext__() == []  # the XACK went with this read (of 6)
        assert group_info(r, src, "g")["pending"] == 4 and source.stats.acknowledged == 3
        await source.acknowledge(3)
        await batches.aclose()
    finally:
        await source.aclose()
    # Closing sent the last XACK; entry 6, read ahead and never yielded, stays pending.
    assert group_info(r, src, "g")["pending"] == 1 and source.stats.acknowledged == 6
    assert source.stats.left_pending == 1


async def test_sink_failure_leaves_entries_pending_for_redelivery(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"n": n} for n in range(100)])

    class Flaky(RedisStreamSink):
        async def write_batch(self, items):
            if any(item["n"] >= 60 for item in items):
                raise OSError("disk full")
            await super().write_batch(items)

    first = RedisStreamSource(src, group="g", consumer="dies", batch_size=20, ack_every=20)
    with pytest.raises(NodeError, match="disk full"):
        await pipeline_of(first, sink=Flaky(out, client=first.client)).execute()
    first.client.close()
    pending = group_info(r, src, "g")["pending"]
    assert pending > 0  # read but never acknowledged
    # A living consumer claims the dead one's entries once idle (real Redis idle time).
    await trio.sleep(0.03)
    second = RedisStreamSource(
        src, group="g", consumer="lives", claim_idle="20ms", stop_when_drained=True
    )
    await pipeline_of(second, sink=second.sink(out)).execute()
    got = [e["n"] for e in read_all(r, out)]
    assert sorted(set(got)) == list(range(100))  # nothing lost
    assert second.stats.claimed == pending
    assert group_info(r, src, "g")["pending"] == 0


async def test_corrupt_entries_go_to_the_dead_letter_stream(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    r.xadd(src, {"data": b'{"n": 1}'})
    bad_json = r.xadd(src, {"data": b"{not json"})
    no_field = r.xadd(src, {"other": b"x"})
    r.xadd(src, {"data": b'{"n": 2}'})
    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    report = await pipeline_of(source, sink=source.sink(out)).execute()
    assert report.processed == 2
    assert read_all(r, out) == [{"n": 1}, {"n": 2}]
    dead = r.xrange(source.dead_letter)
    assert source.dead_letter == f"{{{tag}}}:in:dead"
    assert [fields[b"id"] for _, fields in dead] == [bad_json, no_field]
    assert b"malformed" in dead[0][1][b"reason"]
    assert dead[0][1][b"entry.data"] == b"{not json"
    assert b"no 'data' field" in dead[1][1][b"reason"]
    assert source.stats.dead_lettered == 2
    assert group_info(r, src, "g")["pending"] == 0  # dead letters are acknowledged too


async def test_only_corrupt_entries_are_still_acknowledged(tag, r):
    src = f"{{{tag}}}:in"
    r.xadd(src, {"data": b"nope"})
    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    report = await pipeline_of(source).execute()
    assert report.processed == 0
    assert group_info(r, src, "g")["pending"] == 0
    assert r.xlen(source.dead_letter) == 1


async def test_filtered_and_failed_items_are_acknowledged_after_dead_lettering(tag, r):
    src, out, dead = f"{{{tag}}}:in", f"{{{tag}}}:out", f"{{{tag}}}:failed"
    produce(r, src, [{"n": n} for n in range(30)])
    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    pipeline = pipeline_of(
        source, FilterNode(name="odd", filter_fn=lambda e: e["n"] % 2), lambda e: 10 // (e["n"] % 5)
    )
    pipeline.set_sink(source.sink(out))
    pipeline.set_dead_letter_sink(RedisStreamSink(dead, client=source.client))
    report = await pipeline.execute()
    assert report.processed + report.failed == 15
    assert report.failed == 3  # n = 5, 15, 25
    assert r.xlen(dead) == 3 and r.xlen(out) == 12
    assert group_info(r, src, "g")["pending"] == 0


async def test_with_ids_and_replay_from_an_id(tag, r):
    src = f"{{{tag}}}:in"
    ids = produce(r, src, [{"n": n} for n in range(10)])
    source = RedisStreamSource(src, group="g", with_ids=True, stop_when_drained=True)
    async with pipeline_of(source).run() as stream:
        entries = [result.data async for result in stream]
    assert entries[0] == StreamEntry(ids[0].decode(), {"n": 0})
    # Replay the group from the 7th entry (inclusive).
    again = RedisStreamSource(
        src, group="g", replay_from=ids[6].decode(), with_ids=True, stop_when_drained=True
    )
    async with pipeline_of(again).run() as stream:
        replayed = [result.data.data["n"] async for result in stream]
    assert replayed == [6, 7, 8, 9]
    assert group_info(r, src, "g")["pending"] == 0


async def test_start_dollar_reads_only_new_entries(tag, r):
    src = f"{{{tag}}}:in"
    produce(r, src, [{"old": True}])
    source = RedisStreamSource(src, group="g", start="$", block="20ms")
    await source.open()
    try:
        produce(r, src, [{"new": True}])
        async with trio.open_nursery():
            batches = source.batches(10)
            assert await batches.__anext__() == [{"new": True}]
            await source.acknowledge(1)
            await batches.aclose()
    finally:
        await source.aclose()


async def test_sink_maxlen_trimming_and_encoding_errors(tag, r):
    exact = RedisStreamSink(f"{{{tag}}}:exact", maxlen=100, approximate=False)
    rough = RedisStreamSink(f"{{{tag}}}:rough", maxlen=100)
    async with exact, rough:
        for _ in range(5):
            await exact.write_batch([{"i": i} for i in range(200)])
            await rough.write_batch([{"i": i} for i in range(200)])
        with pytest.raises(RejectedItems) as rejected:
            await exact.write_batch([{"ok": 1}, {"bad": object()}, {"ok": 2}])
    assert list(rejected.value.errors) == [1]  # the others are written
    assert isinstance(rejected.value.errors[1], SerializationError)
    assert "cannot be encoded" in str(rejected.value.errors[1])
    assert r.xlen(f"{{{tag}}}:exact") == 100
    assert [orjson.loads(f[b"data"]) for _, f in r.xrange(f"{{{tag}}}:exact")][-2:] == [
        {"ok": 1},
        {"ok": 2},
    ]
    assert 100 <= r.xlen(f"{{{tag}}}:rough") < 1000


async def test_fields_codec_round_trip(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    r.xadd(src, {"sensor": "s1", "value": "2.5"})
    source = RedisStreamSource(src, group="g", codec="fields", stop_when_drained=True)
    sink = source.sink(out, codec="fields")
    await pipeline_of(source, lambda e: {**e, "value": float(e["value"]) * 2}, sink=sink).execute()
    assert [fields for _, fields in r.xrange(out)] == [{b"sensor": b"s1", b"value": b"5.0"}]


# -- exactly once ----------------------------------------------------------------------------


async def test_exactly_once_commits_state_outputs_and_acks_together(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"key": f"k{n % 3}", "n": n} for n in range(300)])
    source = RedisStreamSource(
        src, group="g", delivery="exactly_once", batch_size=50, stop_when_drained=True
    )
    counts = source.state("counts")
    writes_before_commit: list[int] = []

    async def count(event):
        await counts.add(event["key"])
        writes_before_commit.append(r.xlen(out) if r.exists(out) else 0)
        return {"key": event["key"], "n": event["n"]}

    await pipeline_of(source, count, sink=source.sink(out)).execute()
    assert [e["n"] for e in read_all(r, out)] == list(range(300))
    assert {k: int(r.get(counts.prefix + k)) for k in ("k0", "k1", "k2")} == {
        "k0": 100,
        "k1": 100,
        "k2": 100,
    }
    assert writes_before_commit[0] == 0  # nothing is visible before the first commit
    assert source.stats.commits >= 2 and source.stats.aborted_commits == 0
    assert group_info(r, src, "g")["pending"] == 0


async def test_exactly_once_conflicting_updates_are_replayed_not_lost(tag, r):
    """Two workers read-modify-write the same key: WATCH aborts one, its epoch replays."""
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"n": n} for n in range(400)])
    interfered = []

    def interfere(key: str) -> None:
        """Once, between a worker's WATCHed read and its EXEC: another client writes the key.

        The two workers may or may not interleave on this machine; this write makes at least
        one conflict certain. INCRBY 0 changes no sum but is a write, so it breaks the WATCH.
        """
        if not interfered:
            interfered.append(r.incrby(key, 0))

    def make():
        source = RedisStreamSource(
            src,
            group="g",
            delivery="exactly_once",
            batch_size=20,
            ack_every=20,
            stop_when_drained=True,
            block="5ms",
        )
        total = source.state("total")

        async def step(event):
            await total.update("sum", lambda old: b"%d" % (int(old or 0) + event["n"]))
            interfere(total.prefix + "sum")
            await trio.lowlevel.checkpoint()  # let the other worker interleave
            return event

        return source, pipeline_of(source, step, sink=source.sink(out))

    (a, pa), (b, pb) = make(), make()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pa.execute)
        nursery.start_soon(pb.execute)
    assert int(r.get(a.state_prefix("total") + "sum")) == sum(range(400))
    assert sorted(e["n"] for e in read_all(r, out)) == list(range(400))
    assert interfered
    assert a.stats.aborted_commits + b.stats.aborted_commits > 0  # the conflict did happen


async def test_exactly_once_fences_a_consumer_whose_entries_were_claimed(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"n": n} for n in range(10)])
    slow = RedisStreamSource(src, group="g", consumer="slow", delivery="exactly_once")
    slow_sink = slow.sink(out)
    await slow.open()
    try:
        batches = slow.batches(100)
        items = await batches.__anext__()
        assert len(items) == 10
        await slow_sink.write_batch(items)  # staged, not yet committed
        await trio.sleep(0.03)  # Redis idle time passes; "slow" looks dead
        living = RedisStreamSource(
            src,
            group="g",
            consumer="living",
            delivery="exactly_once",
            claim_idle="20ms",
            stop_when_drained=True,
        )
        await pipeline_of(living, sink=living.sink(out)).execute()
        assert living.stats.claimed == 10
        await slow.acknowledge(10)  # the zombie wakes up and tries to commit
        assert slow.stats.aborted_commits == 1 and slow.stats.commits == 0
        await batches.aclose()
    finally:
        await slow.aclose()
    assert [e["n"] for e in read_all(r, out)] == list(range(10))  # once, not twice


async def test_exactly_once_keys_must_share_the_hash_slot(tag):
    source = RedisStreamSource(f"{{{tag}}}:in", delivery="exactly_once")
    with pytest.raises(ConfigError, match="same hash tag"):
        source.sink("elsewhere")
    ok = source.sink(f"{{{tag}}}:out")
    assert ok.transaction is source
    with pytest.raises(ConfigError, match="hash slot"):
        RedisStreamSource(f"{{{tag}}}:in", delivery="exactly_once", dead_letter="dead")
    source.client.close()


async def test_exactly_once_with_the_core_stateful_processor(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"user": f"u{n % 4}"} for n in range(200)])
    source = RedisStreamSource(src, group="g", delivery="exactly_once", stop_when_drained=True)

    class CountPerUser(StatefulProcessor):
        def initial_state(self, key):
            return 0

        def process(self, item, state):
            state.value += 1
            return {"user": item["user"], "seen": state.value}

    store = StateStore(source.state("users"), namespace="")
    await pipeline_of(
        source, CountPerUser(key="user", store=store), sink=source.sink(out)
    ).execute()
    outs = read_all(r, out)
    assert len(outs) == 200
    assert max(o["seen"] for o in outs if o["user"] == "u3") == 50
    assert orjson.loads(r.get(source.state_prefix("users") + "CountPerUser:u3")) == 50


async def test_bad_configuration_is_named():
    with pytest.raises(ConfigError, match="delivery must be one of"):
        RedisStreamSource("s", delivery="at_most_once")
    with pytest.raises(ConfigError, match="batch_size"):
        RedisStreamSource("s", batch_size=0)
    with pytest.raises(ValueError, match="not a stream ID"):
        RedisStreamSource("s", replay_from="yesterday")
    with pytest.raises(ConfigError, match="exactly_once source"):
        RedisStreamSink("s", transaction=RedisStreamSource("s"))


async def test_exactly_once_corrupt_counter_is_dead_lettered_and_processing_goes_on(tag, r):
    """INCRBY on a non-integer would fail inside EXEC (no rollback): quarantine it first."""
    src = f"{{{tag}}}:in"
    produce(r, src, [{"key": "k"}, {"key": "k"}, {"key": "ok"}])
    source = RedisStreamSource(src, group="g", delivery="exactly_once", stop_when_drained=True)
    counts = source.state("counts")
    r.set(counts.prefix + "k", b"not a number")  # a corrupt counter

    async def count(event):
        await counts.add(event["key"])
        return event

    report = await pipeline_of(source, count).execute()
    assert report.processed == 3
    assert r.get(counts.prefix + "k") == b"2" and r.get(counts.prefix + "ok") == b"1"
    [(_, dead)] = r.xrange(source.dead_letter)
    assert dead[b"value"] == b"not a number" and b"non-integer" in dead[b"reason"]
    assert dead[b"state_key"] == (counts.prefix + "k").encode()
    assert group_info(r, src, "g")["pending"] == 0


async def test_exactly_once_commit_error_names_the_failing_command(tag, r):
    """Redis does not roll back EXEC: a failing command inside is reported, not hidden."""
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"n": 1}])
    source = RedisStreamSource(src, group="g", delivery="exactly_once", stop_when_drained=True)

    def sabotage(event):
        r.set(out, b"not a stream")  # after the sink opened: XADD fails inside EXEC
        return event

    with pytest.raises(NodeError, match=r"partly applied.*WRONGTYPE"):
        await pipeline_of(source, sabotage, sink=source.sink(out)).execute()


async def test_sink_refuses_a_key_that_is_not_a_stream(tag, r):
    r.set(f"{{{tag}}}:out", b"x")
    sink = RedisStreamSink(f"{{{tag}}}:out")
    with pytest.raises(ConfigError, match="holds a string, not a stream"):
        await sink.open()
    await sink.aclose()
