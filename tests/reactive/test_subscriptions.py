"""Subscribers (decorator, explicit, Subscriber objects, async for), lifetimes,
unsubscribing, error isolation and sharing."""

from __future__ import annotations

import gc
import logging

import pytest
import trio
import trio.testing

from haive.dataflow.errors import ClosedError, ConfigError
from haive.dataflow.reactive import Observable, ReactiveStream, Subscriber
from haive.dataflow.reactive.subject import YIELD_EVERY


def live_tasks() -> int:
    """Every task of this run (to check that nothing was left behind)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return count(trio.lowlevel.current_root_task())


async def test_decorator_form_starts_when_the_stream_opens():
    stream = ReactiveStream[int]()
    seen = []

    @stream.filter(lambda n: n > 1).subscribe
    async def on_item(item):
        seen.append(item)

    assert on_item.state == "pending"
    async with stream:
        assert on_item.state == "running"
        for n in range(4):
            await stream.emit(n)
    assert seen == [2, 3]
    assert on_item.state == "completed"
    assert on_item.delivered == 2


async def test_decorator_with_options():
    stream = ReactiveStream[int]()
    seen = []

    @stream.subscribe(buffer_size=2, backpressure="drop_newest")
    def on_item(item):
        seen.append(item)

    async with stream:
        await stream.emit_batch(range(5))
    assert seen == [0, 1]
    assert on_item.stats.dropped == 3
    with pytest.raises(ConfigError, match="already has an on_next"):
        on_item(print)


async def test_explicit_handlers_sync_and_async():
    stream = ReactiveStream[str]()
    log = []

    async def on_next(item):
        await trio.lowlevel.checkpoint()
        log.append(item)

    async with stream.subscribe(on_next, log.append, lambda: log.append("done")) as sub:
        await stream.emit("a")
        await stream.complete()
        await sub.wait()
    assert log == ["a", "done"]

    failing = ReactiveStream[str]()
    log.clear()
    async with failing.subscribe(
        log.append, lambda e: log.append(repr(e)), lambda: log.append("done")
    ) as sub:
        await failing.emit("a")
        await failing.error(ValueError("broken"))
        await sub.wait()  # handled by on_error: does not raise
    assert log == ["a", "ValueError('broken')"]
    assert sub.state == "failed" and isinstance(sub.error, ValueError)


async def test_subscriber_objects():
    class Collect(Subscriber[int]):
        def __init__(self):
            self.items, self.done = [], False

        async def on_next(self, item):
            self.items.append(item)

        def on_completed(self):
            self.done = True

    collect = Collect()
    async with Observable.of(1, 2).subscribe(collect) as sub:
        await sub.wait()
    assert collect.items == [1, 2] and collect.done

    class NoErrorHandler(Subscriber[int]):
        pass

    with pytest.raises(KeyError):  # on_error not overridden: the error is re-raised
        async with Observable.throw(KeyError("k")).subscribe(NoErrorHandler()) as sub:
            await sub.wait()


async def test_subscribe_in_a_nursery_and_start():
    stream = ReactiveStream[int]()
    first, second = [], []
    async with trio.open_nursery() as nursery:
        a = stream.subscribe(first.append, nursery=nursery)
        await a.wait_started()
        b = await stream.map(lambda n: -n).subscribe(second.append).start(nursery)
        await stream.emit_batch([1, 2])
        await stream.complete()
    assert first == [1, 2] and second == [-1, -2]
    assert a.state == b.state == "completed"
    with pytest.raises(RuntimeError, match="cannot start"):
        await a.start(nursery)


async def test_async_for_over_a_hot_stream():
    stream = ReactiveStream[int]()
    seen = []

    async def consume():
        async for item in stream.map(lambda n: n * 10):
            seen.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        await stream.emit_batch([1, 2, 3])
        await stream.complete()
    assert seen == [10, 20, 30]


async def test_breaking_out_of_async_for_detaches():
    stream = ReactiveStream[int]()
    got = []

    async def consume():
        async for item in stream.iterate(buffer_size=1):
            got.append(item)
            break

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert stream.subscriber_count == 1
        await stream.emit(1)
    gc.collect()
    assert got == [1]
    assert stream.subscriber_count == 0
    with trio.fail_after(1):  # nobody reads: a blocking buffer would have stalled the emitter
        for n in range(10):
            await stream.emit(n)
    assert stream.unobserved == 10


async def test_async_for_over_cold_and_task_based_observables(autojump_clock):
    assert [n async for n in Observable.of(1, 2).map(str)] == ["1", "2"]
    ticks = Observable.interval(1).take(3).debounce(0.5)
    with pytest.raises(TypeError, match=r"async with obs\.iterate"):
        async for _ in ticks:
            pass
    async with ticks.iterate() as items:
        assert [n async for n in items] == [0, 1, 2]


async def test_leaving_an_iterate_block_early_cancels_the_tasks(autojump_clock):
    produced = []
    ticks = Observable.interval(1).tap(produced.append).debounce(0.5)
    async with ticks.iterate() as items:
        async for n in items:
            if n == 2:
                break
    await trio.sleep(10)
    assert produced == [0, 1, 2]


async def test_unsubscribe_cancels_upstream_work(autojump_clock):
    produced = []
    seen = []
    before = live_tasks()
    async with trio.open_nursery() as nursery:
        sub = (
            Observable.interval(1)
            .tap(produced.append)
            .debounce(0.1)
            .subscribe(seen.append, nursery=nursery)
        )
        await trio.sleep(3.5)
        sub.unsubscribe()
        await sub.wait()
        await trio.sleep(10)
    assert produced == [0, 1, 2]
    assert seen == [0, 1, 2]
    assert sub.state == "unsubscribed"
    assert live_tasks() == before  # the subscription's tasks are gone with it


async def test_unsubscribe_detaches_from_a_hot_stream_and_drains(autojump_clock):
    stream = ReactiveStream[int]()
    seen = []

    async def slow(item):
        await trio.sleep(1)
        seen.append(item)

    async with stream.subscribe(slow) as sub:
        await stream.emit_batch([1, 2, 3])
        assert stream.subscriber_count == 1
    # leaving the block unsubscribes: the items already accepted were still handled
    assert seen == [1, 2, 3]
    assert sub.state == "unsubscribed"
    assert stream.subscriber_count == 0

    seen.clear()
    async with trio.open_nursery() as nursery:
        sub = await stream.subscribe(slow).start(nursery)
        await stream.emit_batch([1, 2, 3])
        await trio.sleep(1.5)
        sub.unsubscribe(drain=False)
    assert seen == [1]


async def test_an_error_in_one_subscriber_never_reaches_the_others(caplog):
    stream = ReactiveStream[int]()
    good, other = [], []

    def fragile(item):
        if item == 2:
            raise RuntimeError("handler broke")

    def bad_map(item):
        if item == 3:
            raise ValueError("operator broke")
        return item

    failing_handler = stream.subscribe(fragile)
    failing_chain = stream.map(bad_map).subscribe(other.append)
    healthy = stream.subscribe(good.append)
    with caplog.at_level(logging.ERROR, logger="haive.dataflow.reactive"):
        async with stream:
            for n in range(6):
                await stream.emit(n)
    assert good == [0, 1, 2, 3, 4, 5]
    assert other == [0, 1, 2]
    assert healthy.state == "completed"
    assert failing_handler.state == "failed" and isinstance(failing_handler.error, RuntimeError)
    assert failing_chain.state == "failed" and isinstance(failing_chain.error, ValueError)
    # nothing handled them: they are logged (the stream's nursery owns these subscriptions)
    assert "handler broke" in caplog.text and "operator broke" in caplog.text
    with pytest.raises(RuntimeError, match="handler broke"):
        await failing_handler.wait()


async def test_an_unhandled_error_surfaces_where_the_subscription_is_owned():
    stream = ReactiveStream[int]()
    with pytest.raises(ZeroDivisionError):
        async with stream.map(lambda n: 1 // n).subscribe(print):
            await stream.emit(0)
    handled = []
    async with stream.map(lambda n: 1 // n).subscribe(print, handled.append):
        await stream.emit(0)
    assert [type(e) for e in handled] == [ZeroDivisionError]


async def test_share_runs_the_upstream_once_for_every_subscriber():
    source = ReactiveStream[int]()
    runs = []
    shared = source.tap(runs.append).map(lambda n: n * n).share()
    a, b = [], []
    shared.subscribe(a.append)
    shared.filter(lambda n: n > 1).subscribe(b.append)

    @shared.subscribe
    def fragile(item):
        raise RuntimeError("only this one")

    async with source:
        await source.emit_batch([1, 2, 3])
    assert runs == [1, 2, 3]  # one upstream run, not one per subscriber
    assert a == [1, 4, 9] and b == [4, 9]
    assert fragile.state == "failed"


async def test_share_of_a_cold_observable_connects_for_a_block(autojump_clock):
    shared = Observable.interval(1).share()
    a, b = [], []
    async with trio.open_nursery() as nursery:
        async with shared:
            sa = await shared.subscribe(a.append).start(nursery)
            await trio.sleep(2.5)
            sb = await shared.subscribe(b.append).start(nursery)
            await trio.sleep(2)
        # leaving the block disconnected the upstream: subscribers complete
    assert a == [0, 1, 2, 3] and b == [2, 3]
    assert sa.state == sb.state == "completed"


async def test_reactive_stream_lifecycle():
    stream = ReactiveStream[int](name="events")
    await stream.emit(1)
    assert stream.unobserved == 1 and stream.emitted == 1
    await stream.complete()
    await stream.complete()  # idempotent
    with pytest.raises(ClosedError, match="events"):
        await stream.emit(2)
    # a late subscriber of an ended stream completes at once
    assert await stream.to_list() == []
    failed = ReactiveStream[int]()
    await failed.error(OSError("gone"))
    with pytest.raises(OSError, match="gone"):
        await failed.to_list()


async def test_closing_the_stream_waits_for_subscribers_and_leaves_no_task(autojump_clock):
    stream = ReactiveStream[int]()
    seen = []
    before = live_tasks()

    @stream.buffer(2).subscribe
    async def slow(batch):
        await trio.sleep(5)
        seen.append(batch)

    async with stream:
        await stream.emit_batch([1, 2, 3])
    assert seen == [[1, 2], [3]]  # the partial buffer was flushed at completion
    assert live_tasks() == before


async def test_cancelling_the_owner_stops_everything(autojump_clock):
    stream = ReactiveStream[int]()
    sub = stream.debounce(1).subscribe(print)
    before = live_tasks()
    with trio.move_on_after(5):
        async with stream:
            assert live_tasks() > before
            await trio.sleep_forever()
    assert live_tasks() == before
    assert sub.state == "unsubscribed"


async def test_the_seed_pattern_subscribing_another_streams_emit():
    source = ReactiveStream[int]()
    output = ReactiveStream[int]()
    received = []
    output.subscribe(received.append)
    source.map(lambda n: n + 100).subscribe(output.emit)
    async with output, source:
        await source.emit_batch([1, 2])
    assert received == [101, 102]


async def test_a_busy_producer_still_lets_subscribers_run():
    stream = ReactiveStream[int]()
    emitted_when_seen = []
    async with stream.subscribe(lambda n: emitted_when_seen.append(stream.emitted)):
        for n in range(1000):
            await stream.emit(n)  # no other await: emit itself gives the subscriber turns
    assert len(emitted_when_seen) == 1000
    # the subscriber got many turns while the producer ran (emit yields every YIELD_EVERY
    # calls), and consecutive emits reached it in batches, not one task switch per item
    turns = len(set(emitted_when_seen))
    assert 1000 // (4 * YIELD_EVERY) <= turns <= 1000 // 2
    assert emitted_when_seen[0] <= 4 * YIELD_EVERY
