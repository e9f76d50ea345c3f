"""Durations are seconds everywhere, and a ``datetime.timedelta`` is accepted wherever one is
taken: each timed operator gives the same result, on the same trio (Mock) clock, for
``timedelta(seconds=n)`` as for ``n``; bad durations are errors naming the parameter."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import trio

from haive.dataflow import RetryPolicy, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import MemorySource
from haive.dataflow.errors import ConfigError
from haive.dataflow.reactive import Observable
from haive.dataflow.reactive import Operators as ops
from haive.dataflow.runtime.caching import ResultCache
from haive.dataflow.runtime.nodes import NodeContext
from haive.dataflow.runtime.units import parse_duration
from haive.dataflow.state import (
    Count,
    SessionState,
    SessionWindow,
    SlidingWindow,
    StateStore,
    TumblingWindow,
    WindowedAggregateNode,
    WindowState,
)
from haive.dataflow.state.checkpoint import Checkpointer
from haive.dataflow.state.sqlite import SQLiteStateBackend

from .reactive.marbles import cold, run_marbles

S = timedelta(seconds=1)


# -- the helper -------------------------------------------------------------------------------
def test_parse_duration_converts_timedeltas_numbers_and_strings():
    assert parse_duration(timedelta(milliseconds=250)) == 0.25
    assert parse_duration(timedelta(minutes=2)) == 120.0
    assert parse_duration(timedelta(0)) == 0.0
    assert parse_duration(3) == 3.0 and isinstance(parse_duration(3), float)
    assert parse_duration("1500ms") == 1.5


@pytest.mark.parametrize(
    "value",
    [-1, timedelta(seconds=-2), math.nan, math.inf, True, "soon"],
)
def test_bad_durations_name_the_parameter_and_value(value):
    with pytest.raises(ConfigError) as info:
        Observable.of(1).debounce(value)
    assert str(info.value) == (
        f"debounce(period={value!r}): period must be a duration (seconds, a timedelta, "
        f"or a string like '250ms', '30s', '5m') > 0, got {value!r}"
    )


# -- reactive operators, marble for marble ---------------------------------------------------
@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda d: Observable.interval(d).take(3), "-01(2|)"),
        (lambda d: Observable.timer(2 * d), "--(0|)"),
        (lambda d: Observable.timer(2 * d, d).take(3), "--01(2|)"),
        (lambda d: cold("-abc-d---e|").throttle(3 * d), "-a---d---e|"),
        (lambda d: cold("-ab----c---d|").debounce(2 * d), "----b----c--(d|)"),
        (lambda d: cold("-ab----c---|").sample(3 * d), "---b-----c-|"),
        (lambda d: cold("-a-b|").delay(2 * d), "---a-b|"),
        (lambda d: cold("-a----b|").timeout(3 * d, fallback=cold("x|")), "-a--x|"),
        (lambda d: cold("-ab----c---d|").pipe(ops.debounce(2 * d)), "----b----c--(d|)"),
    ],
    ids=[
        "interval",
        "timer",
        "timer-period",
        "throttle",
        "debounce",
        "sample",
        "delay",
        "timeout",
        "ops.debounce",
    ],
)
async def test_timed_operators_take_timedelta(autojump_clock, build, expected):
    assert (await run_marbles(build(1))).marbles == expected  # seconds, as before
    assert (await run_marbles(build(S))).marbles == expected


async def test_buffer_time_and_window_time_take_timedelta(autojump_clock):
    values = {"x": ["a", "b"], "y": ["c"], "z": ["d"]}
    buffered = cold("-ab-c---d-|").buffer_time(3 * S)
    assert (await run_marbles(buffered, values=values)).marbles == "---x--y--z|"
    values = {"x": ["a"], "y": ["b", "c"], "z": ["d"]}
    windows = cold("-a--bc-d|").window_time(timedelta(seconds=3))
    collected = windows.flat_map(lambda w: w.to_list(), max_concurrent=1)
    assert (await run_marbles(collected, values=values)).marbles == "---x--y-(z|)"


async def test_retry_backoff_takes_timedelta(autojump_clock):
    def make():
        return cold("-a#")

    rec = await run_marbles(Observable.defer(make).retry(2, backoff=S, reset_on_success=False))
    assert rec.marbles == "-a--a---a#"  # pauses of 1 and 2 s
    policy = RetryPolicy(attempts=3, backoff=timedelta(milliseconds=100), max_backoff=S, jitter=0)
    assert (policy.backoff, policy.max_backoff) == (0.1, 1.0)
    assert [policy.delay(n) for n in (1, 2, 5)] == [0.1, 0.2, 1.0]
    with pytest.raises(ConfigError, match=r"RetryPolicy\(backoff=.*\): backoff must be a duration"):
        RetryPolicy(backoff=timedelta(seconds=-1))


# -- windows ----------------------------------------------------------------------------------
def test_window_specs_take_timedelta():
    assert TumblingWindow(timedelta(minutes=5)).size == 300.0
    assert TumblingWindow(S, offset=timedelta(milliseconds=500)).offset == 0.5
    sliding = SlidingWindow(timedelta(minutes=1), every=timedelta(seconds=10))
    assert (sliding.size, sliding.every) == (60.0, 10.0)
    assert SessionWindow(timedelta(minutes=30)).gap == 1800.0
    with pytest.raises(ConfigError, match=r"SessionWindow\(gap=.*\): gap must be a duration"):
        SessionWindow(timedelta(seconds=-1))


async def test_event_time_windows_with_timedelta_match_seconds():
    def run(size, lateness):
        return WindowedAggregateNode(
            name="w",
            window=TumblingWindow(size),
            key="key",
            timestamp="ts",
            aggregate=Count(),
            allowed_lateness=lateness,
        )

    events = [{"key": "a", "ts": t} for t in (0, 3, 9.5, 12, 4, 15, 21)]
    results = []
    for node in (run(10, 5), run(timedelta(seconds=10), timedelta(seconds=5))):
        ctx = NodeContext("w")
        out = await node.process_batch(events, ctx) + await node.flush(ctx)
        results.append(sorted((r.key, r.start, r.end, r.count) for r in out))
    assert (
        results[0]
        == results[1]
        == [("a", 0.0, 10.0, 4), ("a", 10.0, 20.0, 2), ("a", 20.0, 30.0, 1)]
    )


async def test_processing_time_window_of_a_timedelta_closes_on_the_clock(autojump_clock):
    source = MemorySource()
    pipeline = StreamingPipeline("durations")
    pipeline.set_source(source)
    pipeline.add_node(
        WindowedAggregateNode(
            name="w",
            window=TumblingWindow(timedelta(milliseconds=1000)),
            key="key",
            time="processing",
            aggregate=Count(),
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    seen = []

    async def feed():
        await source.push({"key": "a"})
        await trio.sleep(0.5)
        await source.push({"key": "a"})
        await trio.sleep(2)
        seen.append(len(sink.items))
        source.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        await pipeline.execute()
    assert seen == [1]
    assert [(r.count, r.end - r.start) for r in sink.items] == [(2, 1.0)]


# -- TTLs, sessions, caches, checkpoints --------------------------------------------------------
async def test_state_ttls_take_timedelta(autojump_clock):
    store = StateStore(default_ttl=timedelta(minutes=1))
    await store.put("default", 1)
    await store.put("short", 2, ttl=timedelta(seconds=10))
    await trio.sleep(9)
    assert await store.get("short") == 2
    await trio.sleep(2)
    assert await store.get("short") is None and await store.get("default") == 1
    await trio.sleep(50)
    assert await store.get("default") is None
    with pytest.raises(ConfigError, match=r"StateStore\(ttl=.*\): ttl must be a duration"):
        await store.put("k", 1, ttl=timedelta(seconds=-5))


async def test_session_state_and_window_state_take_timedelta(autojump_clock):
    sessions = SessionState(timeout=timedelta(minutes=30))
    session = await sessions.get_or_create("u")
    session.event_count = 3
    await sessions.save(session)
    await trio.sleep(29 * 60)
    assert (await sessions.get_or_create("u")).event_count == 3
    await trio.sleep(31 * 60)
    assert (await sessions.get_or_create("u")).event_count == 0
    window = WindowState(window_size=timedelta(minutes=5))
    assert window.window_size == 300.0
    await window.add_to_window({"v": 1}, timestamp=0)
    assert await window.add_to_window({"v": 2}, timestamp=400) == [{"v": 2}]


async def test_result_cache_ttl_takes_timedelta(autojump_clock):
    cache = ResultCache("1MB", ttl=timedelta(minutes=1))
    cache.put("a", 1)
    await trio.sleep(59)
    assert cache.get("a") == (True, 1)
    await trio.sleep(2)
    assert cache.get("a") == (False, None)


def test_checkpoint_interval_and_sqlite_busy_timeout_take_timedelta():
    assert Checkpointer(StateStore(), name="p", interval=timedelta(seconds=5)).interval == 5.0
    assert SQLiteStateBackend(busy_timeout=timedelta(milliseconds=1500)).busy_timeout == 1.5
    with pytest.raises(ConfigError, match=r"SQLiteStateBackend\(busy_timeout=nan\): busy_timeout must be a duration"):
        SQLiteStateBackend(busy_timeout=math.nan)
