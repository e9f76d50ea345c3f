"""Per-subscription backpressure: the core's BoundedBuffer and strategies behind every
subscriber, so a slow consumer either slows the producer (block) or sheds load (drop_*),
and never grows memory without bound."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow.errors import ConfigError, UnknownPluginError
from haive.dataflow.reactive import Observable, ReactiveStream
from haive.dataflow.runtime.backpressure import SlidingWindowStrategy


async def test_block_makes_the_producer_wait_for_a_slow_subscriber(autojump_clock):
    stream = ReactiveStream[int]()
    seen = []

    async def slow(item):
        await trio.sleep(1)
        seen.append(item)

    async with stream.subscribe(slow, buffer_size=2) as sub:
        start = trio.current_time()
        for n in range(6):
            await stream.emit(n)
        emitting = trio.current_time() - start
        await stream.complete()
        await sub.wait()
    assert seen == [0, 1, 2, 3, 4, 5]
    assert emitting >= 1.0  # the producer waited for the handler
    stats = sub.stats
    assert stats.dropped == 0 and stats.max_depth <= 2 and stats.blocked_count >= 1


@pytest.mark.parametrize(
    ("strategy", "kept", "dropped"),
    [("drop_oldest", [7, 8, 9], 7), ("drop_newest", [0, 1, 2], 7)],
)
async def test_drop_strategies_exact_counts(strategy, kept, dropped):
    stream = ReactiveStream[int]()
    seen = []
    async with stream.subscribe(seen.append, buffer_size=3, backpressure=strategy) as sub:
        await stream.emit_batch(range(10))  # the subscriber has not run yet: its buffer overflows
    assert seen == kept
    assert sub.stats.dropped == dropped


async def test_sliding_window_drops_by_age(autojump_clock):
    stream = ReactiveStream[str]()
    seen = []

    async def handler(item):
        seen.append(item)
        if item == "x":
            await trio.sleep(3.2)  # busy: a, b and c wait in the buffer meanwhile

    async with stream.subscribe(
        handler, buffer_size=100, backpressure=SlidingWindowStrategy(window=1.5)
    ) as sub:
        await stream.emit("x")
        for item in "abc":
            await trio.sleep(1)
            await stream.emit(item)
        await stream.complete()
        await sub.wait()
    assert seen == ["x", "b", "c"]  # "a" was 2.2 s old when the handler came back
    assert sub.stats.dropped == 1


async def test_a_dropping_subscriber_never_holds_the_producer_back(autojump_clock):
    stream = ReactiveStream[int]()
    fast, slow_seen = [], []

    async def slow(item):
        await trio.sleep(1)
        slow_seen.append(item)

    async with (
        stream.subscribe(fast.append) as fast_sub,
        stream.subscribe(slow, buffer_size=2, backpressure="drop_oldest") as slow_sub,
    ):
        start = trio.current_time()
        for n in range(10):
            await stream.emit(n)
            await trio.sleep(0.1)
        assert trio.current_time() - start == pytest.approx(1.0)
        await stream.complete()
        await slow_sub.wait()
        await fast_sub.wait()
    assert fast == list(range(10))
    assert slow_seen[0] == 0 and slow_seen[-1] == 9
    assert len(slow_seen) + slow_sub.stats.dropped == 10
    assert slow_sub.stats.dropped > 0


async def test_strategies_apply_to_chains_that_run_tasks(autojump_clock):
    async def burst(emit):
        for n in range(10):
            await emit(n)

    seen = []

    async def slow(item):
        await trio.sleep(1)
        seen.append(item)

    start = trio.current_time()
    source = Observable.create(burst).map(lambda n: n * 10)
    async with source.subscribe(slow, buffer_size=2, backpressure="drop_newest") as sub:
        await sub.wait()
    assert seen[0] == 0
    assert len(seen) + sub.stats.dropped == 10 and sub.stats.dropped >= 6
    assert seen == sorted(seen)
    assert trio.current_time() - start == len(seen)  # the producer never waited


async def test_hot_streams_inside_a_chain_block_by_default(autojump_clock):
    stream = ReactiveStream[int]()
    seen = []

    async def slow(item):
        await trio.sleep(1)
        seen.append(item)

    # merge runs tasks: the hot stream feeds it through a bounded, blocking buffer
    async with stream.merge(Observable.never()).subscribe(slow, buffer_size=1) as sub:
        start = trio.current_time()
        for n in range(3000):
            await stream.emit(n)
        # at most ~2,050 items are on the way (a 1,024-item buffer, a batch in hand, the
        # subscription's buffer); the rest waited for the 1 item/s handler
        assert trio.current_time() - start >= 3000 - 2 * 1024 - 10
        sub.unsubscribe(drain=False)


async def test_bad_backpressure_settings_are_rejected_up_front():
    stream = ReactiveStream[int]()
    with pytest.raises(ConfigError, match="buffer_size"):
        stream.subscribe(print, buffer_size=0)
    with pytest.raises(UnknownPluginError, match="drop_oldst"):
        stream.subscribe(print, backpressure="drop_oldst")
