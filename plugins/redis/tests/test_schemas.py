"""Schemas with Redis Streams (real Redis): a record that does not match is dead-lettered to
``<stream>:dead`` with the validation error before its ack; typed events are written by the
stream sink as their fields; entries written under an old schema still validate under a new
one that adds an optional field (schema evolution, replayed from the start of the stream)."""

from __future__ import annotations

import msgspec
import orjson
import pydantic
import pytest
import redis
from haive_plugin_redis import RedisStreamSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis


class ReadingV1(msgspec.Struct):
    sensor: str
    value: float


class ReadingV2(msgspec.Struct):
    sensor: str
    value: float
    unit: str = "celsius"  # added in v2: old entries get the default


class ReadingV2Model(pydantic.BaseModel):
    sensor: str
    value: float
    unit: str = "celsius"


def produce(r: redis.Redis, stream: str, items) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for item in items:
        pipe.xadd(stream, {"data": orjson.dumps(item)})
    return pipe.execute()


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_records_that_do_not_match_are_dead_lettered_with_the_error(tag, r, delivery):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    records = [{"sensor": f"t{n}", "value": n} if n % 4 else {"sensor": f"t{n}", "value": "hot"}
               for n in range(40)]
    ids = produce(r, src, records)
    source = RedisStreamSource(src, group="g", delivery=delivery, batch_size=9,
                               stop_when_drained=True)
    pipeline = StreamingPipeline("schema")
    pipeline.set_source(source)
    pipeline.set_schema(ReadingV1)
    pipeline.add_processor(lambda reading: reading)  # typed events all the way to the sink
    pipeline.set_sink(source.sink(out))
    report = await pipeline.execute()
    assert (report.processed, report.failed) == (30, 10)
    dead = r.xrange(f"{src}:dead")
    assert [fields[b"id"] for _, fields in dead] == [ids[n] for n in range(0, 40, 4)]
    assert all(b"SchemaError" in f[b"reason"] and b"$.value" in f[b"reason"] for _, f in dead)
    assert all(f[b"node"] == b"schema" for _, f in dead)
    written = [orjson.loads(fields[b"data"]) for _, fields in r.xrange(out)]
    assert written == [{"sensor": f"t{n}", "value": float(n)} for n in range(40) if n % 4]
    info = next(g for g in r.xinfo_groups(src) if g["name"] == b"g")
    assert info["pending"] == 0 and info["lag"] == 0


@pytest.mark.parametrize("v2", [ReadingV2, ReadingV2Model], ids=["msgspec", "pydantic"])
async def test_entries_written_under_v1_still_validate_under_v2(tag, r, v2):
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    # Written by a v1 producer (no unit), then by a v2 producer (with a unit).
    produce(r, src, [msgspec.to_builtins(ReadingV1(f"old{n}", n)) for n in range(5)])
    produce(r, src, [{"sensor": f"new{n}", "value": n, "unit": "kelvin"} for n in range(5)])
    source = RedisStreamSource(src, group="v2-reader", start="0", stop_when_drained=True)
    pipeline = StreamingPipeline("evolution")
    pipeline.set_source(source)
    pipeline.set_schema(v2)
    pipeline.add_processor(lambda reading: {"sensor": reading.sensor, "unit": reading.unit})
    pipeline.set_sink(source.sink(out))
    report = await pipeline.execute()
    assert (report.processed, report.failed) == (10, 0)
    units = {d["sensor"]: d["unit"] for d in (orjson.loads(f[b"data"]) for _, f in r.xrange(out))}
    assert units == {**{f"old{n}": "celsius" for n in range(5)},
                     **{f"new{n}": "kelvin" for n in range(5)}}
