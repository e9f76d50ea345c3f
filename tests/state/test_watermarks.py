"""Watermarks over several inputs or partitions, idle inputs, late-event routing."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.backpressure import BoundedBuffer
from haive.dataflow.runtime.config import StreamConfig
from haive.dataflow.runtime.nodes import NodeContext
from haive.dataflow.state import (
    Count,
    SlidingWindow,
    TumblingWindow,
    WatermarkTracker,
    WindowedAggregateNode,
)


def test_frontier_is_the_minimum_and_never_goes_back():
    tracker = WatermarkTracker(lateness=1.0)  # partitions discovered as they send
    tracker.observe("p0", 10.0, now=0)
    assert tracker.advance(now=0) == 9.0
    tracker.observe("p1", 4.0, now=0)
    assert tracker.advance(now=0) == 9.0  # a new, slower partition cannot move it back
    tracker.observe("p0", 30.0, now=0)
    tracker.observe("p1", 20.0, now=0)
    assert tracker.advance(now=0) == 19.0
    assert tracker.frontier == 20.0


def test_declared_inputs_hold_the_watermark_until_they_send_or_idle():
    tracker = WatermarkTracker(inputs=("a", "b"), idle_timeout=5.0)
    tracker.start(now=0.0)
    tracker.observe("a", 100.0, now=1.0)
    assert tracker.advance(now=4.9) == -math.inf  # "b" never sent, not idle yet
    assert tracker.next_idle_deadline(now=4.9) == 5.0  # five seconds after the start
    assert tracker.advance(now=5.0) == 100.0
    assert tracker.idle_inputs(now=5.0) == ["b"]
    assert tracker.next_idle_deadline(now=5.0) == 6.0
    # "a" idle too: nothing moves, nothing goes back.
    assert tracker.advance(now=50.0) == 100.0
    assert tracker.next_idle_deadline(now=50.0) is None
    tracker.observe("b", 120.0, now=51.0)  # back: active again
    tracker.observe("a", 130.0, now=51.0)
    assert tracker.advance(now=51.0) == 120.0


def test_tracker_state_round_trip_restarts_idle_clocks():
    tracker = WatermarkTracker(inputs=("a", "b"), idle_timeout=1.0)
    tracker.observe("a", 5.0, now=0.0)
    tracker.observe("b", 7.0, now=0.0)
    tracker.advance(now=0.0)
    restored = WatermarkTracker(inputs=("a", "b"), idle_timeout=1.0)
    restored.set_state(tracker.state())
    assert restored.frontier == 5.0
    assert restored.advance(now=1000.0) == 5.0  # clocks start again at the restart
    assert restored.next_idle_deadline(now=1000.0) == 1001.0


def node(**kwargs):
    defaults = {"name": "w", "window": TumblingWindow(10), "key": "k", "timestamp": "ts"}
    return WindowedAggregateNode(**{**defaults, **kwargs})


async def test_fast_partition_does_not_close_windows_a_slow_one_still_feeds():
    ctx = NodeContext("w")
    single = node()
    split = node(partition="p", partitions=(0, 1))
    events = [{"k": "a", "ts": 95.0, "p": 0}, {"k": "a", "ts": 3.0, "p": 1}]
    # One input: 95 closes [0, 10) before the slow partition's 3 arrives: 3 is late.
    assert await single.process_batch(events[:1], ctx) == []
    await single.process_batch(events[1:], ctx)
    assert single.late_events == 1
    # Partitioned: the watermark waits for partition 1 (min(95, 3) = 3): 3 is on time.
    await split.process_batch(events[:1], ctx)
    await split.process_batch(events[1:], ctx)
    assert split.late_events == 0
    out = await split.process_batch([{"k": "a", "ts": 96.0, "p": 1}], ctx)
    assert [(r.start, r.count) for r in out] == [(0.0, 1)]
    assert split.watermark == 95.0


async def test_discovered_partitions_count_from_their_first_item():
    ctx = NodeContext("w")
    w = node(partition="p")
    await w.process_batch([{"k": 1, "ts": 50.0, "p": 0}, {"k": 1, "ts": 5.0, "p": 1}], ctx)
    assert w.watermark == 5.0
    await w.process_batch([{"k": 1, "ts": 7.0, "p": 1}, {"k": 1, "ts": 3.0, "p": 2}], ctx)
    assert w.watermark == 5.0  # the newcomer (3) holds it; it does not go back
    assert w.late_events == 0  # 3 was judged against 5: window [0, 10) is still open


async def test_declared_partitions_wait_for_each_other():
    ctx = NodeContext("w")
    w = node(partition="p", partitions=("p0", "p1"))
    assert await w.process_batch([{"k": 1, "ts": 50.0, "p": "p0"}], ctx) == []
    assert w.watermark == -math.inf
    assert await w.process_batch([{"k": 1, "ts": 60.0, "p": "p1"}], ctx) == []
    assert w.watermark == 50.0
    out = await w.process_batch([{"k": 1, "ts": 70.0, "p": "p0"}], ctx)
    assert [(r.start, r.count) for r in out] == [(50.0, 1)]


async def test_idle_partition_releases_windows_on_a_timer(autojump_clock):
    w = node(window=SlidingWindow(10, 5), partition="p", idle_timeout="2s", aggregate=Count())
    inbox: BoundedBuffer = BoundedBuffer(10)
    out: list = []

    async def emit(batch):
        out.extend((trio.current_time(), r.start, r.count) for r in batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run, NodeContext("w"), inbox, emit)
        async with inbox.open_producer() as producer:
            await producer.put_batch([{"k": 1, "ts": 1.0, "p": "slow"}])
            await trio.sleep(1)
            await producer.put_batch([{"k": 1, "ts": 40.0, "p": "fast"}])
            await trio.sleep(10)  # nothing arrives; "slow" idles at t=2, "fast" at t=3
            assert w.watermark == 40.0
    assert out[:2] == [(pytest.approx(2.0), -5.0, 1), (pytest.approx(2.0), 0.0, 1)]
    assert [r[1:] for r in out[2:]] == [(35.0, 1), (40.0, 1)]  # the end of the input


async def test_late_events_reach_the_dead_letter_sink_with_the_reason():
    events = [
        {"k": "a", "ts": 1.0},
        {"k": "a", "ts": 25.0},
        {"k": "a", "ts": 4.0},  # [0, 10) closed when 25 - 5 passed its end
        {"k": "a", "ts": 21.0},  # [20, 30) is open
    ]
    pipeline = StreamingPipeline("w", config=StreamConfig(chunk_size=1))
    pipeline.set_source(IterableSource(events))
    sink, dead = MemorySink(), MemorySink()
    pipeline.set_sink(sink)
    pipeline.set_dead_letter_sink(dead)
    w = node(allowed_lateness=5, on_late="dead_letter")
    pipeline.add_node(w)
    report = await pipeline.execute()
    assert [(r.start, r.value) for r in sink.items] == [(0.0, 1), (20.0, 2)]
    (record,) = dead.items
    assert record["data"] == {"k": "a", "ts": 4.0}
    assert record["error"] == {
        "type": "LateEventError",
        "message": "late: event time 4.0 < watermark 25.0 - lateness 5.0",
        "node": "w",
        "attempts": 1,
    }
    assert w.late_events == 1 and report.failed == 1


async def test_late_events_to_a_side_output_sink():
    side = MemorySink()
    w = node(on_late=side)
    ctx = NodeContext("w")
    await w.process_batch([{"k": 1, "ts": 30.0}, {"k": 1, "ts": 2.0}], ctx)
    assert side.items == [{"k": 1, "ts": 2.0}] and w.late_events == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeout": 5}, "give partition="),
        ({"partitions": ("a",)}, "give partition="),
        ({"partition": "p", "time": "processing"}, "needs time='event'"),
        ({"partition": "p", "window": TumblingWindow(count=5)}, "needs time='event'"),
        ({"partition": "p", "idle_timeout": -1}, "idle_timeout must be a duration"),
        ({"on_late": "drop"}, "on_late must be a function, a StreamSink, 'dead_letter'"),
    ],
)
def test_watermark_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        node(**kwargs)


@settings(max_examples=150, deadline=None)
@given(
    raw=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 40)), max_size=50),
    cuts=st.lists(st.integers(1, 6), min_size=50, max_size=50),
    size=st.integers(1, 8),
    lateness=st.integers(0, 4),
)
def test_partitioned_windows_match_a_reference(raw, cuts, size, lateness):
    """Random partitioned, out-of-order input in random batches: the windows and the late
    events are those of a reference that recomputes the watermark (min over the partitions
    seen so far of their largest time, minus the lateness) before each batch."""
    events = [{"p": p, "k": k, "ts": float(t), "id": i} for i, (p, k, t) in enumerate(raw)]
    batches, at = [], 0
    for cut in cuts:
        if at >= len(events):
            break
        batches.append(events[at : at + cut])
        at += cut
    maxes: dict[int, float] = {}
    frontier = -math.inf
    want: Counter = Counter()
    want_late = []
    for batch in batches:
        wm = frontier - lateness
        for e in batch:
            start = math.floor(e["ts"] / size) * size
            if start + size <= wm:
                want_late.append(e["id"])
            else:
                want[(e["k"], float(start))] += 1
        for e in batch:
            maxes[e["p"]] = max(maxes.get(e["p"], -math.inf), e["ts"])
        frontier = max(frontier, min(maxes.values()))

    late: list = []
    w = node(
        window=TumblingWindow(size), partition="p", allowed_lateness=lateness, on_late=late.extend
    )

    async def main():
        ctx = NodeContext("w")
        out = []
        for batch in batches:
            out += await w.process_batch(batch, ctx)
        return out + await w.flush(ctx)

    got = Counter()
    for r in trio.run(main):
        got[(r.key, r.start)] += r.count
    assert got == want
    assert sorted(e["id"] for e in late) == sorted(want_late)


async def test_partitioned_watermark_is_saved_in_snapshots():
    ctx = NodeContext("w")
    first = node(partition="p", partitions=("a", "b"))
    await first.process_batch([{"k": 1, "ts": 30.0, "p": "a"}, {"k": 1, "ts": 12.0, "p": "b"}], ctx)
    again = node(partition="p", partitions=("a", "b"))
    await again.restore(first.snapshot())
    assert again.watermark == first.watermark == 12.0
    # "b" still holds it back after the restore: 31 from "a" alone closes nothing.
    assert await again.process_batch([{"k": 1, "ts": 31.0, "p": "a"}], ctx) == []
    out = await again.process_batch([{"k": 1, "ts": 25.0, "p": "b"}], ctx)
    assert [(r.start, r.count) for r in out] == [(10.0, 1)]
