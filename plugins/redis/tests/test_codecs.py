"""The msgpack codec through the Redis Streams sink and source, on the real server."""

from __future__ import annotations

import msgpack
import pytest
import redis
from haive_plugin_redis import RedisStreamSink, RedisStreamSource
from haive_plugin_redis._resp import pack, pack_ids
from hypothesis import given
from hypothesis import strategies as st

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis

ITEMS = [
    {"n": n, "blob": bytes([n, 0, 255]), "tags": ["a", "b"], "ratio": n / 4} for n in range(50)
]


async def test_msgpack_entries_round_trip_through_a_pipeline(tag: str, r: redis.Redis) -> None:
    src, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    await RedisStreamSink(src, codec="msgpack").write_batch(ITEMS)
    # On the wire: MessagePack in the entry's data field (bytes stay bytes, unlike JSON).
    raw = [fields[b"data"] for _, fields in r.xrange(src)]
    assert [msgpack.unpackb(value) for value in raw] == ITEMS

    source = RedisStreamSource(src, group="g", codec="msgpack", stop_when_drained=True)
    pipeline = StreamingPipeline("msgpack")
    pipeline.set_source(source)
    pipeline.add_processor(lambda item: {**item, "blob": item["blob"][::-1]})
    pipeline.set_sink(source.sink(out, codec="msgpack"))
    report = await pipeline.execute()

    assert report.processed == 50 and report.failed == 0
    got = [msgpack.unpackb(fields[b"data"]) for _, fields in r.xrange(out)]
    assert got == [{**item, "blob": item["blob"][::-1]} for item in ITEMS]
    assert r.xpending(src, "g")["pending"] == 0
    source.client.close()


async def test_json_source_dead_letters_msgpack_entries(tag: str, r: redis.Redis) -> None:
    """A codec mismatch is bad input: dead-lettered with its reason, never silently read."""
    src = f"{{{tag}}}:in"
    await RedisStreamSink(src, codec="msgpack").write_batch(ITEMS[:3])
    source = RedisStreamSource(src, group="g", codec="json", stop_when_drained=True)
    pipeline = StreamingPipeline("mismatch")
    pipeline.set_source(source)
    report = await pipeline.execute()
    assert report.processed == 0
    dead = r.xrange(source.dead_letter)
    assert len(dead) == 3 and all(b"reason" in fields for _, fields in dead)
    source.client.close()


@given(st.lists(st.binary(min_size=0, max_size=24), max_size=40))
def test_pack_ids_is_pack_of_every_id(ids: list[bytes]) -> None:
    # pack_ids joins runs of equal-length IDs in one go: any mix of lengths packs the same.
    assert pack_ids(("XACK", "s", "g"), ids) == pack("XACK", "s", "g", *ids)
