"""Retention (MAXLEN / MINID trimming on write and on demand) and forget(key) (GDPR erasure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import trio
from haive_plugin_redis import RedisClient, RedisStreamSink, RedisStreamSource
from haive_plugin_redis.retention import (
    Erasure,
    RetainedStreamSink,
    Retention,
    server_time_ms,
    trim_streams,
)

from haive.dataflow.errors import ConfigError
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.state.store import StateStore

pytestmark = pytest.mark.redis


def old_entries(r: redis.Redis, stream: str, now_ms: int, ages_s: list[int]) -> list[bytes]:
    """Entries with IDs ``age`` seconds in the past (explicit IDs, oldest first)."""
    ids = []
    for seq, age in enumerate(sorted(ages_s, reverse=True)):
        ids.append(r.xadd(stream, {"data": b'{"old":true}'}, id=f"{now_ms - age * 1000}-{seq}"))
    return ids


async def test_trim_by_length_exact_and_approximate(r: redis.Redis, tag: str) -> None:
    client = RedisClient(pool_size=2)
    exact, rough = f"{{{tag}}}:exact", f"{{{tag}}}:rough"
    try:
        for stream in (exact, rough):
            await RedisStreamSink(stream, client=client).write_batch(
                [{"n": n} for n in range(1000)]
            )
        assert await Retention(maxlen=10, approximate=False).trim(client, exact) == 990
        assert r.xlen(exact) == 10
        assert [orjson.loads(f[b"data"])["n"] for _, f in r.xrange(exact)] == list(range(990, 1000))
        removed = await Retention(maxlen=10).trim(client, rough)
        # "~" removes whole nodes only: never below the cap, never more than asked.
        assert 10 <= r.xlen(rough) < 1000 and removed == 1000 - r.xlen(rough)
    finally:
        client.close()


async def test_trim_by_age_uses_the_server_clock(r: redis.Redis, tag: str) -> None:
    client = RedisClient(pool_size=2)
    stream = f"{{{tag}}}:events"
    try:
        now = await server_time_ms(client)
        old_entries(r, stream, now, [3600, 600, 120])
        r.xadd(stream, {"data": b'{"fresh":1}'})
        removed = await Retention(max_age="5m", approximate=False).trim(client, stream)
        assert removed == 2  # the 1 h and 10 min old entries
        assert r.xlen(stream) == 2
        # Both limits at once, several streams.
        other = f"{{{tag}}}:other"
        r.xadd(other, {"data": b"1"})
        result = await trim_streams(
            client,
            {
                stream: Retention(maxlen=1, max_age="1h", approximate=False),
                other: Retention(maxlen=5),
            },
        )
        assert result == {stream: 1, other: 0}
        assert r.xlen(stream) == 1
    finally:
        client.close()


async def test_retained_sink_trims_on_write(r: redis.Redis, tag: str) -> None:
    client = RedisClient(pool_size=2)
    by_length = RetainedStreamSink(
        f"{{{tag}}}:len", Retention(maxlen=100, approximate=False), client=client
    )
    by_age = RetainedStreamSink(
        f"{{{tag}}}:age",
        Retention(max_age="1m", approximate=False),
        client=client,
        trim_interval="1h",
    )
    try:
        async with by_length, by_age:
            for start in range(0, 1000, 250):
                await by_length.write_batch([{"n": n} for n in range(start, start + 250)])
                assert r.xlen(by_length.stream) == 100
            now = await server_time_ms(client)
            old_entries(r, by_age.stream, now, [3600, 300])
            await by_age.write_batch([{"n": 1}])  # the first write trims
            assert r.xlen(by_age.stream) == 1 and by_age.trimmed == 2
            await by_age.write_batch([{"n": 2}])  # within trim_interval: no XTRIM sent
            assert by_age.trimmed == 2 and r.xlen(by_age.stream) == 2
            assert await by_age.retention.trim(client, by_age.stream) == 0  # explicit trim
    finally:
        client.close()


async def test_retained_sink_trims_inside_the_exactly_once_commit(r: redis.Redis, tag: str) -> None:
    stream, out = f"{{{tag}}}:in", f"{{{tag}}}:out"
    source = RedisStreamSource(
        stream, group="g", delivery="exactly_once", stop_when_drained=True, block="20ms"
    )
    sink = RetainedStreamSink(out, Retention(max_age="1m", approximate=False), transaction=source)
    try:
        now = await server_time_ms(source.client)
        old_entries(r, out, now, [600, 300])
        await RedisStreamSink(stream, client=source.client).write_batch(
            [{"n": n} for n in range(5)]
        )
        pipeline = StreamingPipeline("retained")
        pipeline.set_source(source)
        pipeline.set_sink(sink)
        report = await pipeline.execute()
        assert report.processed == 5
        assert [orjson.loads(f[b"data"]) for _, f in r.xrange(out)] == [{"n": n} for n in range(5)]
    finally:
        source.client.close()


def test_retention_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="give maxlen"):
        Retention()
    with pytest.raises(ConfigError, match="maxlen must be an int >= 1"):
        Retention(maxlen=0)
    with pytest.raises(ConfigError, match="max_age must be positive"):
        Retention(max_age=0)
    with pytest.raises(ConfigError, match="set maxlen/approximate on the Retention"):
        RetainedStreamSink("s", Retention(maxlen=1), maxlen=5)
    with pytest.raises(ConfigError, match="retention must be a Retention"):
        RetainedStreamSink("s", 100)  # type: ignore[arg-type]


# -- forget(key) ---------------------------------------------------------------------------


EVENTS = [
    {"user": "u1", "page": "/a"},
    {"user": "u2", "page": "/b"},
    {"user": "u10", "page": "/c"},
    {"user": "u1", "page": "/d", "fail": True},  # the pipeline dead-letters it
    {"user": "u1", "page": "/e"},
    {"user": "u2", "page": "/f"},
]


def all_stream_entries(
    r: redis.Redis, tag: str
) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
    out = {}
    for key in r.scan_iter(match=f"{{{tag}}}*", _type="stream"):
        out[key.decode()] = r.xrange(key)
    return out


def pending_ids(r: redis.Redis, stream: str) -> set[bytes]:
    ids: set[bytes] = set()
    for group in r.xinfo_groups(stream):
        for row in r.xpending_range(stream, group["name"], "-", "+", 10_000):
            ids.add(row["message_id"])
    return ids


def mentions(raw: bytes, key: str) -> bool:
    """Does a raw value name the subject ``key`` (as a JSON string or a key segment)?"""
    k = key.encode()
    return b'"' + k + b'"' in raw or raw.endswith(b":" + k) or b":" + k + b":" in raw


async def test_forget_removes_every_trace_of_the_key(
    r: redis.Redis, tag: str, tmp_path: Path
) -> None:
    client = RedisClient(pool_size=4)
    stream, out, failed = f"{{{tag}}}:in", f"{{{tag}}}:out", f"{{{tag}}}:failed"
    await RedisStreamSink(stream, client=client).write_batch(EVENTS)
    # An entry that does not decode: the source moves it to the dead-letter stream.
    r.xadd(stream, {"data": b'{"user": "u1", "page": oops'})
    r.xadd(stream, {"data": b'{"user": "u2", "page": oops'})
    # Another consumer group read everything and acknowledged nothing: pending lists.
    r.xgroup_create(stream, "audit", id="0")
    r.xreadgroup("audit", "auditor", {stream: ">"})

    source = RedisStreamSource(
        stream, group="main", consumer="c1", client=client, stop_when_drained=True, block="20ms"
    )
    visits = source.state("visits")

    async def count(event: dict[str, Any]) -> dict[str, Any]:
        if event.get("fail"):
            raise ValueError(f"cannot process {event['page']}")
        await visits.add(event["user"])
        return event

    pipeline = StreamingPipeline("visits")
    pipeline.set_source(source)
    pipeline.add_processor(count)
    pipeline.set_sink(source.sink(out))
    pipeline.set_dead_letter_sink(RedisStreamSink(failed, client=client))
    await pipeline.execute()

    profiles = StateStore(tmp_path / "profiles.db", namespace="app")
    sessions = StateStore(namespace="web")  # memory
    async with profiles, sessions:
        for user in ("u1", "u2", "u10"):
            await profiles.put(f"profile:{user}", {"name": user.upper()})
            await profiles.put(f"profile:{user}:avatar", {"png": "..."})
            await sessions.put(user, {"cart": [1, 2]})
        # A corrupt record of u1: reading it quarantines its raw bytes in the store.
        await profiles.backend.put(profiles.full_key("profile:u1:prefs"), b"{not json u1")
        assert await profiles.get("profile:u1:prefs") is None
        assert len(await profiles.dead_letters()) == 1

        # Keyed by (stream, id): entries written to different streams in the same
        # millisecond share a bare id, so bare ids would conflate them.
        doomed = {
            (name, entry_id)
            for name, entries in all_stream_entries(r, tag).items()
            for entry_id, fields in entries
            if any(mentions(v, "u1") for v in fields.values())
        }
        assert len(doomed) >= 7  # in, out, dead letters, failed
        assert {(stream, entry_id) for entry_id in pending_ids(r, stream)} & doomed

        erasure = (
            Erasure(client)
            .add_source(source, "visits", key_field="user")
            .add_stream(out, key_field="user")
            .add_stream(failed, key_field="user", dead_letter=False)
            .add_state(profiles, "profile:{key}")
            .add_state(sessions)
        )
        report = await erasure.forget("u1")

        # Nothing of u1 is left: no stream entry, no pending-list ID, no state key.
        for name, entries in all_stream_entries(r, tag).items():
            for entry_id, fields in entries:
                assert not any(mentions(v, "u1") for v in fields.values()), (name, fields)
                assert (name, entry_id) not in doomed
        for name in all_stream_entries(r, tag):
            assert not {(name, entry_id) for entry_id in pending_ids(r, name)} & doomed, name
        assert not [k for k in r.scan_iter(match=f"{{{tag}}}*") if mentions(k, "u1")]
        assert [k for k, _ in await profiles.scan("")] == [
            "profile:u10",
            "profile:u10:avatar",
            "profile:u2",
            "profile:u2:avatar",
        ]
        assert await profiles.dead_letters() == []
        assert [k for k, _ in await sessions.scan("")] == ["u10", "u2"]

        # ...and everyone else's data is untouched.
        assert r.get(source.state_prefix("visits") + "u2") == b"2"
        assert r.get(source.state_prefix("visits") + "u10") == b"1"
        users = [orjson.loads(f[b"data"])["user"] for _, f in r.xrange(out)]
        assert sorted(users) == ["u10", "u2", "u2"]
        audit_pending = r.xpending(stream, "audit")["pending"]
        assert audit_pending == 4  # u2 x2, u10, and u2's undecodable entry

    assert report.key == "u1"
    assert report.stream_entries[stream] == 4  # three events and the undecodable entry
    assert report.stream_entries[out] == 2
    assert report.stream_entries[source.dead_letter] == 1
    assert report.stream_entries[failed] == 1
    assert report.state_keys == 5  # visits, profile x2, quarantined copy, session
    assert report.pending_acknowledged[stream] == 4  # in the audit group
    client.close()


async def test_forget_matches_numeric_keys_and_custom_matchers(r: redis.Redis, tag: str) -> None:
    client = RedisClient(pool_size=2)
    stream = f"{{{tag}}}:orders"
    try:
        await RedisStreamSink(stream, client=client).write_batch(
            [{"customer": 42, "total": 1}, {"customer": 420, "total": 2}, {"customer": "42"}]
        )
        r.xadd(stream, {"data": b'{"customer": 42, "total": broken'})
        r.xadd(stream, {"data": b'{"customer": 421, broken'})
        report = await Erasure(client).add_stream(stream, key_field="customer").forget("42")
        assert report.stream_entries[stream] == 3
        left = [f[b"data"] for _, f in r.xrange(stream)]
        assert left == [b'{"customer":420,"total":2}', b'{"customer": 421, broken']

        tagged = f"{{{tag}}}:tagged"
        await RedisStreamSink(tagged, client=client).write_batch(
            [{"who": ["a", "b"]}, {"who": ["b"]}, {"who": ["c"]}]
        )
        erasure = Erasure(client).add_stream(
            tagged, match=lambda item, key: key in item["who"], dead_letter=False
        )
        assert (await erasure.forget("b")).stream_entries == {tagged: 2}
        # A stream that does not exist (yet) is simply empty.
        assert (await Erasure(client).add_stream(f"{{{tag}}}:none").forget("x")).removed == 0
    finally:
        client.close()


async def test_forget_configuration_errors(tag: str) -> None:
    client = RedisClient(pool_size=1)
    try:
        with pytest.raises(ConfigError, match="must contain '\\{key\\}'"):
            Erasure(client).add_state(StateStore(), "profile")
        with pytest.raises(ConfigError, match="non-empty string"):
            await Erasure(client).forget("")
        with pytest.raises(ConfigError, match="client must be a RedisClient"):
            Erasure("redis://localhost")  # type: ignore[arg-type]
        await client.execute("SET", f"{{{tag}}}:plain", "1")
        with pytest.raises(ConfigError, match="not a stream"):
            await Erasure(client).add_stream(f"{{{tag}}}:plain").forget("u1")
    finally:
        client.close()


async def test_trim_and_erasure_work_while_a_consumer_holds_entries(
    r: redis.Redis, tag: str
) -> None:
    """A consumer that read an entry before it was erased gets no data back, and no error."""
    stream = f"{{{tag}}}:in"
    client = RedisClient(pool_size=2)
    try:
        await RedisStreamSink(stream, client=client).write_batch(
            [{"key": "a"}, {"key": "b"}, {"key": "a"}]
        )
        r.xgroup_create(stream, "g", id="0")
        r.xreadgroup("g", "slow", {stream: ">"})  # holds all three, unacknowledged
        await Erasure(client).add_stream(stream).forget("a")
        source = RedisStreamSource(
            stream, group="g", consumer="slow", client=client, stop_when_drained=True,
            block="20ms",
        )  # fmt: skip
        pipeline = StreamingPipeline("after-erasure")
        pipeline.set_source(source)
        seen: list[Any] = []
        pipeline.add_processor(lambda item: seen.append(item) or item)
        with trio.fail_after(10):
            await pipeline.execute()
        assert seen == [{"key": "b"}]
        assert r.xpending(stream, "g")["pending"] == 0
    finally:
        client.close()
