"""StreamingPipeline.set_serializer: the wire format of the Redis stream source and sink."""

from __future__ import annotations

import msgpack
import orjson
import pytest
import redis
from haive_plugin_redis import RedisStreamSink, RedisStreamSource

from haive.dataflow import ConfigError, MessagePackSerializer, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource

URL = "redis://127.0.0.1:6379/0"


async def test_the_pipeline_serializer_is_what_goes_on_the_wire(r: redis.Redis, tag: str):
    stream = f"{{{tag}}}:orders"
    items = [{"id": n, "blob": bytes([n % 256]) * 3, "price": n / 4} for n in range(300)]
    writer = StreamingPipeline("write")
    writer.set_source(IterableSource(items))
    writer.set_sink(RedisStreamSink(stream, url=URL))
    writer.set_serializer(MessagePackSerializer())
    report = await writer.execute()
    assert report.processed == 300
    entries = r.xrange(stream)
    assert len(entries) == 300
    # Each entry's one field holds msgpack bytes (bytes values kept as bytes: JSON could not).
    assert [msgpack.unpackb(fields[b"data"]) for _, fields in entries] == items

    reader = StreamingPipeline("read")
    reader.set_source(RedisStreamSource(stream, url=URL, group=f"{tag}-g", stop_when_drained=True))
    out = MemorySink()
    reader.set_sink(out)
    reader.set_serializer(MessagePackSerializer())
    await reader.execute()
    assert out.items == items


async def test_without_a_serializer_the_wire_format_stays_json(r: redis.Redis, tag: str):
    stream = f"{{{tag}}}:plain"
    pipeline = StreamingPipeline("write")
    pipeline.set_source(IterableSource([{"n": 1}]))
    pipeline.set_sink(RedisStreamSink(stream, url=URL))
    await pipeline.execute()
    ((_, fields),) = r.xrange(stream)
    assert orjson.loads(fields[b"data"]) == {"n": 1}


async def test_a_codec_of_its_own_conflicting_with_the_pipeline_is_refused(r: redis.Redis, tag):
    pipeline = StreamingPipeline("write")
    pipeline.set_source(IterableSource([{"n": 1}]))
    pipeline.set_sink(RedisStreamSink(f"{{{tag}}}:x", url=URL, codec="json"))
    pipeline.set_serializer(MessagePackSerializer())
    with pytest.raises(
        ConfigError,
        match=r"codec \(JsonSerializer\) conflicts with the pipeline's set_serializer\(MessagePackSerializer\(\)\)",
    ):
        await pipeline.execute()
    assert r.exists(f"{{{tag}}}:x") == 0  # refused before anything was written


async def test_a_serializer_nothing_would_use_is_refused():
    pipeline = StreamingPipeline("memory-only")
    pipeline.set_source(IterableSource([1, 2]))
    pipeline.set_sink(MemorySink())
    pipeline.set_serializer(MessagePackSerializer())
    with pytest.raises(
        ConfigError,
        match=r"set_serializer\(MessagePackSerializer\(\)\) would have no effect: none of its source and sinks \(IterableSource, MemorySink\) encodes bytes",
    ):
        await pipeline.execute()
    with pytest.raises(ConfigError, match="set_serializer expects a Serializer"):
        pipeline.set_serializer("msgpack")  # type: ignore[arg-type]
