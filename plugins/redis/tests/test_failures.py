"""Entries whose processor failed, with no dead-letter sink set: never acknowledged unwritten.

Against the real Redis: a failed entry goes to ``<stream>:dead`` with its original fields,
the reason, the node, its ID and delivery count before its ``XACK`` (``on_failure=
"dead_letter"``, the default), or stays pending and is redelivered until
``max_deliveries`` (``on_failure="redeliver"``).
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
import redis
from haive_plugin_redis import RedisStreamSink, RedisStreamSource

from haive.dataflow.errors import ConfigError, NodeError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis


def produce(r: redis.Redis, stream: str, items) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for item in items:
        pipe.xadd(stream, {"data": orjson.dumps(item)})
    return pipe.execute()


def group_info(r: redis.Redis, stream: str) -> dict:
    return next(g for g in r.xinfo_groups(stream) if g["name"] == b"g")


def pipeline_of(source, *steps, sink=None) -> StreamingPipeline:
    pipeline = StreamingPipeline("failures")
    pipeline.set_source(source)
    for step in steps:
        pipeline.add_processor(step)
    if sink is not None:
        pipeline.set_sink(sink)
    return pipeline


def tenth(event):
    return {"n": event["n"], "tenth": 10 // (event["n"] % 5)}  # fails for n % 5 == 0


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_a_failed_entry_is_dead_lettered_with_its_origin_before_its_ack(tag, r, delivery):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    ids = produce(r, src, [{"n": n} for n in range(20)])
    source = RedisStreamSource(
        src, group="g", delivery=delivery, batch_size=7, stop_when_drained=True
    )
    report = await pipeline_of(source, tenth, sink=source.sink(out)).execute()
    assert (report.processed, report.failed) == (16, 4)
    dead = r.xrange(f"{src}:dead")
    assert [fields[b"id"] for _, fields in dead] == [ids[n] for n in (0, 5, 10, 15)]
    first = dead[0][1]
    assert first[b"entry.data"] == orjson.dumps({"n": 0})  # the original fields, verbatim
    assert first[b"node"] == b"tenth_0"
    assert b"ZeroDivisionError" in first[b"reason"]
    assert first[b"deliveries"] == b"1"
    assert first[b"group"] == b"g" and first[b"stream"] == src.encode()
    assert source.stats.dead_lettered == 4
    info = group_info(r, src)
    assert info["pending"] == 0 and info["lag"] == 0
    assert r.xlen(out) == 16


async def test_redeliver_leaves_a_failed_entry_pending_until_max_deliveries(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    ids = produce(r, src, [{"n": n} for n in range(10)])
    seen: Counter[int] = Counter()

    def flaky(event):
        seen[event["n"]] += 1
        if event["n"] == 3 and seen[3] < 2:
            raise TimeoutError("upstream busy")  # transient: succeeds when redelivered
        if event["n"] == 7:
            raise ValueError("poison")  # permanent: dead-lettered after 3 deliveries
        return event

    source = RedisStreamSource(
        src,
        group="g",
        on_failure="redeliver",
        max_deliveries=3,
        claim_idle="50ms",
        block="10ms",
        stop_when_drained=True,
    )
    report = await pipeline_of(source, flaky, sink=source.sink(out)).execute()
    assert sorted(orjson.loads(f[b"data"])["n"] for _, f in r.xrange(out)) == [
        0, 1, 2, 3, 4, 5, 6, 8, 9,
    ]  # fmt: skip
    assert seen[3] == 2 and seen[7] == 3
    dead = r.xrange(f"{src}:dead")
    assert len(dead) == 1
    assert dead[0][1][b"id"] == ids[7] and dead[0][1][b"deliveries"] == b"3"
    assert b"ValueError: poison" in dead[0][1][b"reason"]
    assert source.stats.left_for_redelivery == 3  # n=3 once, n=7 twice
    assert report.failed == 4
    assert group_info(r, src)["pending"] == 0


async def test_redeliver_in_exactly_once_reclaims_its_own_failed_entries(tag, r):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    produce(r, src, [{"n": n} for n in range(6)])
    seen: Counter[int] = Counter()

    def once_flaky(event):
        seen[event["n"]] += 1
        if event["n"] == 2 and seen[2] == 1:
            raise TimeoutError("first try fails")
        return event

    source = RedisStreamSource(
        src,
        group="g",
        delivery="exactly_once",
        on_failure="redeliver",
        claim_idle="50ms",
        block="10ms",
        stop_when_drained=True,
    )
    await pipeline_of(source, once_flaky, sink=source.sink(out)).execute()
    assert sorted(orjson.loads(f[b"data"])["n"] for _, f in r.xrange(out)) == list(range(6))
    assert seen[2] == 2 and r.xlen(f"{src}:dead") == 0
    assert group_info(r, src)["pending"] == 0


async def test_a_failure_on_a_derived_item_is_dead_lettered_with_that_item(tag, r):
    src = f"{{{tag}}}:in"
    produce(r, src, [{"n": n} for n in range(4)])

    def reshape(event):
        return {"value": event["n"]}  # a new object: the entry is no longer traceable

    def check(item):
        if item["value"] == 2:
            raise ValueError("two")
        return item

    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    report = await pipeline_of(source, reshape, check).execute()
    assert report.failed == 1
    (entry,) = r.xrange(f"{src}:dead")
    assert orjson.loads(entry[1][b"item"]) == {"value": 2}
    assert entry[1][b"node"] == b"check_1" and b"untraced" in entry[1][b"origin"]
    assert group_info(r, src)["pending"] == 0


async def test_equal_small_values_are_traced_to_distinct_entries(tag, r):
    src = f"{{{tag}}}:in"
    ids = produce(r, src, [1, 1, 0, 1])  # orjson returns the one cached int 1 three times

    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    report = await pipeline_of(source, lambda n: 1 // (n - 1)).execute()
    assert report.failed == 3
    assert sorted(f[b"id"] for _, f in r.xrange(f"{src}:dead")) == sorted([ids[0], ids[1], ids[3]])


async def test_a_pipeline_dead_letter_sink_still_takes_precedence(tag, r):
    src, mine = f"{{{tag}}}:in", f"{{{tag}}}:mine"
    produce(r, src, [{"n": n} for n in range(5)])
    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    pipeline = pipeline_of(source, tenth)
    pipeline.set_dead_letter_sink(RedisStreamSink(mine, client=source.client))
    await pipeline.execute()
    assert r.xlen(mine) == 1 and r.xlen(f"{src}:dead") == 0
    assert group_info(r, src)["pending"] == 0


async def test_a_failing_dead_letter_write_leaves_the_entries_pending(tag, r):
    src = f"{{{tag}}}:in"
    produce(r, src, [{"n": n} for n in range(5)])
    r.set(f"{src}:dead", "not a stream")  # XADD to it fails: WRONGTYPE
    source = RedisStreamSource(src, group="g", consumer="c1", stop_when_drained=True)
    with pytest.raises(NodeError, match="WRONGTYPE"):
        await pipeline_of(source, tenth).execute()
    assert group_info(r, src)["pending"] == 5  # nothing acknowledged: all redelivered later
    assert source.stats.left_pending == 5


async def test_a_sink_failure_at_the_end_of_input_acknowledges_nothing(tag, r):
    src = f"{{{tag}}}:in"
    produce(r, src, [{"n": n} for n in range(30)])

    class BrokenSink(StreamSink):
        async def write_batch(self, items):
            raise OSError("disk full")

    # ack_every above the input size: the end of input is the only acknowledgment point
    source = RedisStreamSource(src, group="g", ack_every=1000, stop_when_drained=True)
    with pytest.raises(NodeError, match="disk full"):
        await pipeline_of(source, sink=BrokenSink()).execute()
    assert group_info(r, src)["pending"] == 30
    assert source.stats.acknowledged == 0 and source.stats.left_pending == 30


async def test_dropping_backpressure_is_refused_for_an_acknowledging_source(tag):
    source = RedisStreamSource(f"{{{tag}}}:in", group="g", stop_when_drained=True)
    pipeline = StreamingPipeline("lossy", backpressure="drop_oldest")
    pipeline.set_source(source)
    pipeline.add_processor(lambda x: x)
    with pytest.raises(ConfigError, match="backpressure='drop_oldest' drops items"):
        await pipeline.execute()
    source.client.close()


def test_failure_settings_are_checked_at_construction():
    with pytest.raises(ConfigError, match=r"on_failure must be one of .* got 'ignore'"):
        RedisStreamSource("s", on_failure="ignore")
    with pytest.raises(ConfigError, match="max_deliveries=3 needs on_failure='redeliver'"):
        RedisStreamSource("s", max_deliveries=3)
    with pytest.raises(ConfigError, match="max_deliveries must be an int >= 1, got 0"):
        RedisStreamSource("s", on_failure="redeliver", max_deliveries=0)


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_an_item_the_sink_cannot_encode_is_dead_lettered_not_redelivered_forever(
    tag, r, delivery
):
    """One unencodable output used to fail the whole batch, stop the worker and come back
    after every restart; now the sink writes the rest and rejects that one item."""
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    ids = produce(r, src, [{"n": n} for n in range(10)])
    source = RedisStreamSource(src, group="g", delivery=delivery, stop_when_drained=True)

    def attach(event):
        if event["n"] == 4:
            event["blob"] = object()  # in place: the source's own item, traceable
        return event

    report = await pipeline_of(source, attach, sink=source.sink(out)).execute()
    assert (report.processed, report.failed) == (9, 1)
    assert sorted(orjson.loads(f[b"data"])["n"] for _, f in r.xrange(out)) == [
        0, 1, 2, 3, 5, 6, 7, 8, 9,
    ]  # fmt: skip
    (dead,) = r.xrange(f"{src}:dead")
    assert dead[1][b"id"] == ids[4] and dead[1][b"node"] == b"sink:RedisStreamSink"
    assert b"cannot be encoded" in dead[1][b"reason"]
    assert dead[1][b"entry.data"] == orjson.dumps({"n": 4})
    assert group_info(r, src)["pending"] == 0


async def test_sink_rejections_go_to_the_pipeline_dead_letter_sink(tag, r):
    src, out, mine = f"{{{tag}}}:in", f"{{{tag}}}:out", f"{{{tag}}}:mine"
    produce(r, src, [{"n": n} for n in range(6)])
    source = RedisStreamSource(src, group="g", stop_when_drained=True)
    # codec "fields" takes flat mappings only: a nested value is rejected by that sink,
    # while the JSON dead-letter sink can hold it.
    pipeline = pipeline_of(source, lambda e: {**e, "nested": [1]} if e["n"] % 3 == 0 else e)
    pipeline.set_sink(RedisStreamSink(out, client=source.client, codec="fields"))
    pipeline.set_dead_letter_sink(RedisStreamSink(mine, client=source.client))
    async with pipeline.run() as results:
        outcomes = sorted([(r.success, r.node) async for r in results], key=str)
    assert outcomes.count((True, None)) == 4
    assert outcomes.count((False, "sink:RedisStreamSink")) == 2
    assert r.xlen(out) == 4
    assert sorted(orjson.loads(f[b"data"])["data"]["n"] for _, f in r.xrange(mine)) == [0, 3]
    assert group_info(r, src)["pending"] == 0
