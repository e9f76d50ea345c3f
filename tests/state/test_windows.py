"""Window semantics: tumbling/sliding/session, count/time, event/processing time, lateness."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource, MemorySource
from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.events import Event
from haive.dataflow.runtime.nodes import NodeContext
from haive.dataflow.state import (
    Collect,
    Count,
    Fold,
    Max,
    Mean,
    Min,
    SessionWindow,
    SlidingWindow,
    Sum,
    TumblingWindow,
    WindowedAggregateNode,
)


def ev(key, ts, value=1):
    return {"key": key, "ts": ts, "value": value}


async def run_batches(node, batches, policy="raise"):
    ctx = NodeContext(node.name, error_policy=policy)
    out = []
    for batch in batches:
        out += await node.process_batch(batch, ctx)
    out += await node.flush(ctx)
    return out, ctx


def rows(results):
    return sorted((r.key, r.start, r.end, r.count, r.value) for r in results)


def node(window, **kw):
    kw.setdefault("key", "key")
    kw.setdefault("timestamp", "ts")
    kw.setdefault("aggregate", Sum("value"))
    return WindowedAggregateNode(name="w", window=window, **kw)


# -- reference implementations (one event at a time) --------------------------------------


def reference_grid(events, size, every, lateness, offset=0.0):
    mx = -math.inf
    windows: dict = {}
    late = 0
    for e in events:
        mx = max(mx, e["ts"])
        wm = mx - lateness
        missed = False
        j = math.floor((e["ts"] - offset - size) / every) + 1
        while offset + j * every <= e["ts"]:
            start = offset + j * every
            if start + size <= wm:
                missed = True
            else:
                slot = windows.setdefault((e["key"], start), [0, 0])
                slot[0] += 1
                slot[1] += e["value"]
            j += 1
        late += missed
    return sorted((k, s, s + size, n, v) for (k, s), (n, v) in windows.items()), late


event_lists = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 60), st.integers(-5, 5)),
    max_size=60,
).map(lambda xs: [ev(k, t / 4, v) for k, t, v in xs])


@settings(max_examples=60, deadline=None)
@given(events=event_lists, lateness=st.sampled_from([0, 0.5, 2, 100]), cut=st.integers(1, 7))
def test_tumbling_matches_reference_for_any_batching(events, lateness, cut):
    expected, expected_late = reference_grid(events, 2.0, 2.0, lateness)
    w = node(TumblingWindow("2s"), allowed_lateness=lateness)
    batches = [events[i : i + cut] for i in range(0, len(events), cut)]
    out, _ = trio.run(run_batches, w, batches)
    assert rows(out) == expected
    assert w.late_events == expected_late


@settings(max_examples=60, deadline=None)
@given(events=event_lists, lateness=st.sampled_from([0, 1, 100]), cut=st.integers(1, 7))
def test_sliding_matches_reference_for_any_batching(events, lateness, cut):
    expected, expected_late = reference_grid(events, 3.0, 1.0, lateness)
    w = node(SlidingWindow("3s", every="1s"), allowed_lateness=lateness)
    batches = [events[i : i + cut] for i in range(0, len(events), cut)]
    out, _ = trio.run(run_batches, w, batches)
    assert rows(out) == expected
    assert w.late_events == expected_late


async def test_tumbling_emits_when_watermark_passes_and_routes_late_events():
    late_seen = []
    w = node(TumblingWindow("10s"), on_late=late_seen.extend)
    ctx = NodeContext("w")
    assert await w.process_batch([ev("a", 1), ev("b", 2), ev("a", 9.5)], ctx) == []
    out = await w.process_batch([ev("a", 10)], ctx)  # watermark 10 closes [0, 10)
    assert rows(out) == [("a", 0.0, 10.0, 2, 2), ("b", 0.0, 10.0, 1, 1)]
    assert await w.process_batch([ev("b", 3, 7)], ctx) == []
    assert w.late_events == 1 and late_seen == [ev("b", 3, 7)]
    assert w.watermark == 10
    assert rows(await w.flush(ctx)) == [("a", 10.0, 20.0, 1, 1)]


async def test_allowed_lateness_keeps_windows_open():
    w = node(TumblingWindow("10s"), allowed_lateness="5s")
    ctx = NodeContext("w")
    assert await w.process_batch([ev("a", 1), ev("a", 12)], ctx) == []
    assert await w.process_batch([ev("a", 4)], ctx) == []  # late by 8s, within 5s of wm? wm=7
    out = await w.process_batch([ev("a", 15)], ctx)  # wm=10 closes [0,10)
    assert rows(out) == [("a", 0.0, 10.0, 2, 2)]
    await w.process_batch([ev("a", 2)], ctx)
    assert w.late_events == 1


async def test_session_windows_merge_and_close_after_gap():
    w = node(SessionWindow("5s"), aggregate=Collect(lambda items: [i["ts"] for i in items]))
    ctx = NodeContext("w")
    out = await w.process_batch([ev("a", 0), ev("a", 3), ev("b", 1), ev("a", 20)], ctx)
    # watermark 20: a's [0, 8) and b's [1, 6) are closed; a's session at 20 is open.
    assert rows(out) == [("a", 0, 8, 2, [0, 3]), ("b", 1, 6, 1, [1])]
    out = await w.process_batch([ev("a", 30), ev("a", 24)], ctx)
    assert rows(out) == [("a", 20, 29, 2, [20, 24])]
    assert rows(await w.flush(ctx)) == [("a", 30, 35, 1, [30])]


async def test_session_bridging_event_merges_two_sessions():
    w = node(SessionWindow("4s"), aggregate=Count(), allowed_lateness=100)
    ctx = NodeContext("w")
    await w.process_batch([ev("a", 0), ev("a", 10)], ctx)
    assert w.open_windows() == 2
    await w.process_batch([ev("a", 3), ev("a", 6.5)], ctx)  # 3 joins [0..], 6.5 bridges to 10
    assert w.open_windows() == 1
    assert rows(await w.flush(ctx)) == [("a", 0, 14, 4, 4)]


async def test_session_late_event_counted():
    w = node(SessionWindow("2s"), aggregate=Count())
    out, _ = await run_batches(w, [[ev("a", 0), ev("a", 10)], [ev("a", 1)]])
    assert w.late_events == 1
    assert rows(out) == [("a", 0, 2, 1, 1), ("a", 10, 12, 1, 1)]


async def test_session_fold_needs_merge():
    with pytest.raises(ConfigError, match="merge"):
        node(SessionWindow("1s"), aggregate=Fold(int, lambda a, i: a + 1))


async def test_count_windows_tumbling_and_sliding():
    items = [ev("a", 0, v) for v in range(7)] + [ev("b", 0, 100)]
    tumbling = node(TumblingWindow(count=3))
    out, _ = await run_batches(tumbling, [items[:2], items[2:5], items[5:]])
    assert rows(out) == [
        ("a", 0, 3, 3, 3),
        ("a", 3, 6, 3, 12),
        ("a", 6, 7, 1, 6),
        ("b", 0, 1, 1, 100),
    ]
    sliding = node(
        SlidingWindow(count=3, every=2), aggregate=Collect(lambda xs: [x["value"] for x in xs])
    )
    out, _ = await run_batches(sliding, [items[:4], items[4:]])
    assert [r.value for r in out if r.key == "a"] == [[0, 1], [1, 2, 3], [3, 4, 5], [4, 5, 6]]


async def test_aggregators():
    values = [ev("a", 0, v) for v in (4, 1, 7)]
    for agg, expected in [
        (Count(), 3),
        (Sum("value"), 12),
        (Mean("value"), 4.0),
        (Min("value"), 1),
        (Max("value"), 7),
    ]:
        out, _ = await run_batches(
            node(TumblingWindow("1s"), aggregate=agg), [values[:1], values[1:]]
        )
        assert out[0].value == expected, agg
    out, _ = await run_batches(node(TumblingWindow("1s"), aggregate=len), [values])
    assert out[0].value == 3


async def test_whole_stream_without_key_and_event_objects():
    events = [Event(type="t", key="k", timestamp=float(t)) for t in range(5)]
    w = WindowedAggregateNode(name="w", window=TumblingWindow("2s"), aggregate=Count())
    out, _ = await run_batches(w, [events])
    assert [(r.key, r.start, r.value) for r in out] == [
        (None, 0.0, 2),
        (None, 2.0, 2),
        (None, 4.0, 1),
    ]
    keyed = WindowedAggregateNode(
        name="w", window=TumblingWindow("10s"), key="key", aggregate=Count()
    )
    out, _ = await run_batches(keyed, [events])
    assert [(r.key, r.value) for r in out] == [("k", 5)]


async def test_datetime_timestamps():
    import datetime as dt

    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    items = [{"key": "a", "ts": t0 + dt.timedelta(seconds=s), "value": 1} for s in (0, 1, 61)]
    out, _ = await run_batches(node(TumblingWindow("1m")), [items])
    assert [r.count for r in out] == [2, 1]


async def test_bad_items_fail_alone():
    items = [ev("a", 1), {"ts": 2}, {"key": "a", "ts": "soon"}, ev("a", 3)]
    w = node(TumblingWindow("10s"), aggregate=Count())
    out, ctx = await run_batches(w, [items], policy="skip")
    assert rows(out) == [("a", 0.0, 10.0, 2, 2)]
    assert ctx.stats.errors == 2


def test_config_errors():
    with pytest.raises(ConfigError, match="not both"):
        TumblingWindow("1s", count=3)
    with pytest.raises(ConfigError, match="every"):
        SlidingWindow("1s")
    with pytest.raises(ConfigError):
        TumblingWindow("soon")
    with pytest.raises(ConfigError, match="event time"):
        node(TumblingWindow("1s"), time="processing", allowed_lateness=1)
    with pytest.raises(ConfigError, match="time must be"):
        node(TumblingWindow("1s"), time="wall")


async def test_snapshot_restore_round_trip():
    w = node(TumblingWindow("10s"))
    ctx = NodeContext("w")
    await w.process_batch([ev("a", 1, 5), ev("b", 2, 1)], ctx)
    snap = w.snapshot()
    await w.process_batch([ev("a", 3, 100)], ctx)  # after the snapshot: must not leak into it
    again = node(TumblingWindow("10s"))
    await again.restore(snap)
    assert rows(await again.flush(ctx)) == [("a", 0.0, 10.0, 1, 5), ("b", 0.0, 10.0, 1, 1)]


async def test_processing_time_windows_close_on_timer(autojump_clock):
    source = MemorySource()
    pipeline = StreamingPipeline("proc")
    pipeline.set_source(source)
    w = WindowedAggregateNode(
        name="w", window=TumblingWindow("1s"), key="key", time="processing", aggregate=Count()
    )
    pipeline.add_node(w)
    sink = MemorySink()
    pipeline.set_sink(sink)
    seen_at = []

    async def feed():
        start = trio.current_time()
        await source.push({"key": "a"})
        await source.push({"key": "b"})
        await trio.sleep(0.5)
        await source.push({"key": "a"})
        # No more input for a while: the timer must close [start, start+1) by itself.
        await trio.sleep(2)
        seen_at.append((trio.current_time() - start, len(sink.items)))
        await source.push({"key": "a"})
        source.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        await pipeline.execute()
    assert seen_at == [(2.5, 2)]
    counts = sorted((r.key, r.count) for r in sink.items)
    assert counts == [("a", 1), ("a", 2), ("b", 1)]
    first = next(r for r in sink.items if r.count == 2)
    assert first.end - first.start == 1.0


async def test_processing_time_sessions(autojump_clock):
    source = MemorySource()
    pipeline = StreamingPipeline("sessions")
    pipeline.set_source(source)
    pipeline.add_node(
        WindowedAggregateNode(
            name="w", window=SessionWindow("30m"), key="user", time="processing", aggregate=Count()
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)

    async def feed():
        for pause in (0, 10, 25):  # events at minutes 0, 10 and 35: one session
            await trio.sleep(60 * pause)
            await source.push({"user": "ada"})
        await trio.sleep(31 * 60)
        assert [r.count for r in sink.items] == [3]
        source.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        await pipeline.execute()
    assert [r.count for r in sink.items] == [3]


async def test_in_pipeline_event_time_totals():
    events = [ev(f"k{i % 7}", i / 100, i % 5) for i in range(5000)]
    pipeline = StreamingPipeline("win")
    pipeline.set_source(IterableSource(events))
    pipeline.add_node(node(TumblingWindow("1s")))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sum(r.count for r in sink.items) == 5000
    assert sum(r.value for r in sink.items) == sum(e["value"] for e in events)
    assert Counter(r.key for r in sink.items) == {f"k{i}": 50 for i in range(7)}


async def test_processing_time_windows_restored_from_another_process_close_at_once(autojump_clock):
    first = WindowedAggregateNode(
        name="w", window=TumblingWindow("1h"), key="key", time="processing", aggregate=Count()
    )
    await first.process_batch([{"key": "a"}, {"key": "a"}], NodeContext("w"))
    snap = first.snapshot()

    restored = WindowedAggregateNode(
        name="w", window=TumblingWindow("1h"), key="key", time="processing", aggregate=Count()
    )
    await restored.restore(snap)
    source = MemorySource()
    pipeline = StreamingPipeline("restored")
    pipeline.set_source(source)
    pipeline.add_node(restored)
    sink = MemorySink()
    pipeline.set_sink(sink)

    async def watch():
        await trio.sleep(1)
        assert [(r.key, r.count) for r in sink.items] == [("a", 2)]
        source.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await pipeline.execute()
