"""Fuzzing the stream entries a RedisStreamSource reads, against the real Redis.

Producers are remote peers: an entry may lack the payload field, repeat fields, carry
bytes that are not UTF-8 or not the codec's format, or be oversized. Whatever arrives,
the source must not crash, and every entry must end either processed (in the output) or
in the dead-letter stream with a reason, none left pending.
"""

from __future__ import annotations

import itertools
import json

import msgpack
import orjson
import pytest
import redis
import trio
from haive_plugin_redis import RedisStreamSource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haive.dataflow.io.serializers import JsonSerializer
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

pytestmark = pytest.mark.redis

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_payloads = st.one_of(
    st.binary(max_size=64),  # anything: often not JSON, not msgpack, not UTF-8
    _json_values.map(orjson.dumps),  # valid JSON, maybe not a mapping
    _json_values.map(lambda v: msgpack.packb(v)),
    st.dictionaries(st.text(max_size=8), st.integers(-1000, 1000), max_size=3).map(
        lambda d: orjson.dumps({**d, "boom": 1})  # decodes, then fails in the processor
    ),
    st.integers(100_000, 400_000).map(lambda n: b'"' + b"x" * n + b'"'),  # oversized
    st.just(b"\xff\xfe\x00\xc3\x28"),  # invalid UTF-8
)
_field_names = st.one_of(st.just(b"data"), st.binary(max_size=8))
_entries = st.lists(
    st.lists(st.tuples(_field_names, _payloads), min_size=1, max_size=3),
    min_size=1,
    max_size=12,
)
_codecs = st.sampled_from(["json", "msgpack", "fields", "json-max-1KB"])


def explode(item):
    """The processor: fails for good on mappings with a ``boom`` key."""
    data = item.data
    if isinstance(data, dict) and ("boom" in data or b"boom" in data):
        raise ValueError("boom")
    return {"id": item.id}


@pytest.fixture
def streams(tag):
    counter = itertools.count()
    return lambda: f"{{{tag}}}:{next(counter)}"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=_entries, codec=_codecs)
def test_no_entry_crashes_the_source_or_is_lost(streams, r: redis.Redis, entries, codec):
    src = streams()
    out, dead = f"{src}:out", f"{src}:dead"
    ids = [
        r.execute_command("XADD", src, "*", *[part for pair in fields for part in pair])
        for fields in entries
    ]
    serializer = JsonSerializer(max_size=1024) if codec == "json-max-1KB" else codec

    async def run() -> None:
        source = RedisStreamSource(
            src, group="g", codec=serializer, with_ids=True, batch_size=5, stop_when_drained=True
        )
        pipeline = StreamingPipeline("fuzz")
        pipeline.set_source(source)
        pipeline.add_processor(explode)
        pipeline.set_sink(source.sink(out))
        await pipeline.execute()

    trio.run(run)
    written = [orjson.loads(fields[b"data"])["id"].encode() for _, fields in r.xrange(out)]
    dead_letters = {fields[b"id"]: fields for _, fields in r.xrange(dead)}
    assert sorted(written + list(dead_letters)) == sorted(ids)  # each exactly once
    for fields in dead_letters.values():
        reason = fields[b"reason"].decode()
        assert reason.split(":")[0] in {
            "SerializationError",
            "InvalidMessageError",
            "processor 'explode_0' failed",
        }, reason
    info = next(g for g in r.xinfo_groups(src) if g["name"] == b"g")
    assert info["pending"] == 0 and info["lag"] == 0
    r.delete(src, out, dead)


def test_msgpack_entry_with_an_unhashable_map_key_is_a_dead_letter(tag, r):
    """msgpack raises TypeError (not its decode error) on a map keyed by an array."""
    src = f"{{{tag}}}:in"
    bad = r.xadd(src, {"data": b"\x81\x91\x01\x02"})  # {[1]: 2}
    good = r.xadd(src, {"data": msgpack.packb({"n": 1})})

    async def run():
        source = RedisStreamSource(src, group="g", codec="msgpack", stop_when_drained=True)
        pipeline = StreamingPipeline("msgpack")
        pipeline.set_source(source)
        pipeline.set_sink(source.sink(f"{src}:out"))
        return await pipeline.execute()

    report = trio.run(run)
    assert report.processed == 1
    (entry,) = r.xrange(f"{src}:dead")
    assert entry[1][b"id"] == bad and b"unhashable" in entry[1][b"reason"]
    assert json.loads(r.xrange(f"{src}:out")[0][1][b"data"]) == {"n": 1}
    assert good not in {entry[1][b"id"]}
