"""The core bridge (haive.dataflow.runtime.bridge) with real threads and a real asyncio loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest
import trio

from haive.dataflow.errors import BridgeClosedError, ConfigError
from haive.dataflow.runtime.bridge import open_asyncio_bridge, open_thread_bridge

#: Generous real-time bound for anything that should take milliseconds (the machine is loaded).
PATIENCE = 20.0


async def wait_until(predicate, what: str) -> None:
    """Poll ``predicate``: it reads state another thread changes, which trio cannot await."""
    deadline = trio.current_time() + PATIENCE
    while trio.current_time() < deadline:
        if predicate():
            return
        await trio.sleep(0.005)
    raise AssertionError(f"timed out waiting for: {what}")


def bridge_threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.endswith(f"-bridge-{name}")]


# --- ThreadBridge ---------------------------------------------------------------------------


async def test_thread_bridge_runs_many_calls_in_order_on_one_thread():
    seen: list[tuple[int, int, int]] = []  # (task, call, thread ident)
    running = 0
    overlaps = 0

    def work(task: int, call: int) -> int:
        nonlocal running, overlaps
        running += 1
        overlaps += running > 1
        seen.append((task, call, threading.get_ident()))
        time.sleep(0.0001)
        running -= 1
        return task * 1000 + call

    async with open_thread_bridge(name="order") as bridge:
        results: dict[int, list[int]] = {}

        async def caller(task: int) -> None:
            results[task] = [await bridge.run(work, task, call) for call in range(100)]

        async with trio.open_nursery() as nursery:
            for task in range(4):
                nursery.start_soon(caller, task)

    assert overlaps == 0
    assert len({ident for _, _, ident in seen}) == 1
    assert seen[0][2] != threading.get_ident()
    for task in range(4):
        assert results[task] == [task * 1000 + call for call in range(100)]
        assert [call for t, call, _ in seen if t == task] == list(range(100))


async def test_thread_bridge_raises_the_calls_exception_naming_the_thread():
    error = KeyError("partition 7")

    def fail() -> None:
        raise error

    async with open_thread_bridge(name="failing") as bridge:
        with pytest.raises(KeyError) as caught:
            await bridge.run(fail)
        assert caught.value is error
        assert any("haive-thread-bridge-failing" in note for note in caught.value.__notes__)
        assert await bridge.run(int, "41") == 41  # the bridge still works


async def test_thread_bridge_cancelled_caller_waits_for_the_call_by_default():
    started, release = threading.Event(), threading.Event()
    returned_at: list[float] = []

    def blocking() -> str:
        started.set()
        release.wait(PATIENCE)
        returned_at.append(time.monotonic())
        return "done"

    async with open_thread_bridge(name="waits") as bridge:
        scope = trio.CancelScope()

        async def cancel_then_release() -> None:
            await wait_until(started.is_set, "call started")
            scope.cancel()
            await trio.sleep(0.1)
            assert not returned_at  # still inside the call, and its caller still waits
            release.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_then_release)
            with scope:
                await bridge.run(blocking)
                await trio.lowlevel.checkpoint()  # the cancellation is seen here
            resumed_at = time.monotonic()
        assert scope.cancelled_caught
        assert returned_at and returned_at[0] <= resumed_at
        assert await bridge.run(str, 5) == "5"


async def test_thread_bridge_abandon_cancels_the_caller_at_once_and_close_waits_for_the_call():
    started, release = threading.Event(), threading.Event()
    finished = threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(PATIENCE)
        finished.set()

    async with open_thread_bridge(name="abandon") as bridge:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_started() -> None:
                    await wait_until(started.is_set, "call started")
                    scope.cancel()

                nursery.start_soon(cancel_when_started)
                await bridge.run(blocking, abandon=True)
        assert scope.cancelled_caught
        assert not finished.is_set()  # the caller left while the call still runs
        threading.Timer(0.2, release.set).start()
    # Leaving the block waited for the running call, then joined the thread.
    assert finished.is_set()
    assert not bridge_threads("abandon")


async def test_thread_bridge_close_joins_the_thread_and_refuses_later_use():
    async with open_thread_bridge(name="closing") as bridge:
        assert len(bridge_threads("closing")) == 1
        await bridge.run(time.sleep, 0)
    assert bridge.closed
    assert not bridge_threads("closing")
    with pytest.raises(BridgeClosedError, match="haive-thread-bridge-closing"):
        await bridge.run(time.sleep, 0)


async def test_thread_bridge_calls_queued_at_close_fail_with_bridge_closed():
    started, release = threading.Event(), threading.Event()
    outcomes: list[object] = []

    def blocking() -> None:
        started.set()
        release.wait(PATIENCE)

    async def queued_caller(bridge) -> None:  # outlives the bridge's block
        await wait_until(started.is_set, "first call started")
        try:
            await bridge.run(outcomes.append, "ran")
        except BridgeClosedError as error:
            outcomes.append(error)

    async with trio.open_nursery() as nursery:
        async with open_thread_bridge(name="queued") as bridge:
            nursery.start_soon(queued_caller, bridge)
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:

                    async def cancel_soon() -> None:
                        await wait_until(started.is_set, "first call started")
                        await trio.sleep(0.1)  # the queued caller has queued its call
                        scope.cancel()

                    inner.start_soon(cancel_soon)
                    await bridge.run(blocking, abandon=True)
            threading.Timer(0.2, release.set).start()
        nursery.cancel_scope.cancel()
    assert len(outcomes) == 1 and isinstance(outcomes[0], BridgeClosedError)


async def test_thread_bridge_submit_overlaps_the_call_with_the_callers_work():
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def fetch(n: int) -> list[int]:
        started.set()
        release.wait(PATIENCE)
        order.append("fetch")
        return list(range(n))

    async with open_thread_bridge(name="submit") as bridge:
        pending = bridge.submit(fetch, 3)  # no checkpoint: the caller goes on at once
        await wait_until(started.is_set, "the submitted call started")
        assert not pending.done
        later = bridge.submit(order.append, "after")  # queued behind it, in order
        order.append("caller worked meanwhile")
        release.set()
        assert await pending.result() == [0, 1, 2]
        assert pending.done
        await later.result()
        with pytest.raises(ZeroDivisionError):
            await bridge.submit(divmod, 1, 0).result()
        bridge.submit(time.sleep, 0.05)  # never awaited: runs, and the close waits for it
    assert order == ["caller worked meanwhile", "fetch", "after"]
    assert not bridge_threads("submit")
    with pytest.raises(BridgeClosedError):
        bridge.submit(time.sleep, 0)


# --- AsyncioBridge --------------------------------------------------------------------------


async def test_asyncio_bridge_runs_coroutines_in_its_loop_thread():
    async def where(n: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return n, threading.current_thread().name

    async with open_asyncio_bridge(name="loop") as bridge:
        results = [await bridge.run(where, n) for n in range(50)]
    assert results == [(n, "haive-asyncio-bridge-loop") for n in range(50)]


async def test_asyncio_bridge_raises_the_exception_unchanged():
    error = ConnectionRefusedError("nats: no servers available")

    async def fail() -> None:
        await asyncio.sleep(0)
        raise error

    async with open_asyncio_bridge(name="raise") as bridge:
        with pytest.raises(ConnectionRefusedError) as caught:
            await bridge.run(fail)
    assert caught.value is error
    assert any("haive-asyncio-bridge-raise" in note for note in caught.value.__notes__)


async def test_trio_cancellation_cancels_the_asyncio_task_and_waits_for_it():
    started = threading.Event()
    cleanup: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that takes a while, still awaited
            cleanup.append("cancelled")
            raise

    async with open_asyncio_bridge(name="cancel") as bridge:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_started() -> None:
                    await wait_until(started.is_set, "task started")
                    scope.cancel()

                nursery.start_soon(cancel_when_started)
                await bridge.run(forever)
        assert scope.cancelled_caught
        assert cleanup == ["cancelled"]  # finished cancelling before the caller resumed
        assert await bridge.run(asyncio.sleep, 0, "usable") == "usable"


async def test_asyncio_bridge_close_cancels_pending_tasks_closes_loop_and_joins():
    cancelled = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    async def start_background() -> None:  # as nats-py starts its reader and pinger tasks
        loops.append(asyncio.get_running_loop())
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)

    async with open_asyncio_bridge(name="shutdown") as bridge:
        await bridge.run(start_background)
        assert len(bridge_threads("shutdown")) == 1
    assert cancelled.is_set()
    assert loops[0].is_closed()
    assert not bridge_threads("shutdown")
    with pytest.raises(BridgeClosedError, match="haive-asyncio-bridge-shutdown"):
        await bridge.run(asyncio.sleep, 0)
    with pytest.raises(BridgeClosedError):
        bridge.stream(start_background)  # type: ignore[arg-type]


async def test_stream_backpressure_stops_the_asyncio_producer():
    produced = 0

    async def batches() -> AsyncIterator[list[int]]:
        nonlocal produced
        for start in range(0, 100, 10):
            produced += 1
            yield list(range(start, start + 10))

    async with open_asyncio_bridge(name="stream") as bridge:
        async with bridge.stream(batches, max_buffered=2) as stream:
            first = await stream.__anext__()
            # one taken + two buffered, and no more however long the consumer dawdles
            await wait_until(lambda: produced == 3, "producer filled the buffer")
            await trio.sleep(0.3)
            assert produced == 3
            rest = [batch async for batch in stream]
    assert [n for batch in [first, *rest] for n in batch] == list(range(100))


async def test_stream_error_reaches_the_trio_consumer():
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise RuntimeError("stream broke")

    got: list[int] = []
    async with open_asyncio_bridge(name="stream-error") as bridge:
        with pytest.raises(RuntimeError, match="stream broke"):
            async with bridge.stream(failing) as stream:
                async for item in stream:
                    got.append(item)
    assert got == [1, 2]


async def test_leaving_a_stream_early_cancels_the_generator():
    closed: list[str] = []

    async def endless() -> AsyncIterator[int]:
        n = 0
        try:
            while True:
                await asyncio.sleep(0)
                yield n
                n += 1
        finally:
            await asyncio.sleep(0.02)
            closed.append("closed")

    async with open_asyncio_bridge(name="early") as bridge:
        async with bridge.stream(endless, max_buffered=4) as stream:
            async for n in stream:
                if n == 10:
                    break
        assert closed == ["closed"]  # before the stream's block was left


async def test_leaving_a_stream_stops_a_generator_that_swallowed_the_cancellation():
    # nats-py's pull fetch does this on Python 3.11 when its reply is already queued as the
    # cancellation arrives (asyncio.wait_for returns the reply): the JetStream source's
    # fetch loop then went on, took the last permit and waited for another forever, and the
    # source that had left its stream waited for the loop to end: a hang at end of input.
    fetching = threading.Event()
    swallowed: list[str] = []
    resumed: list[str] = []

    async def stubborn() -> AsyncIterator[int]:
        while True:
            fetching.set()
            try:
                await asyncio.sleep(3600)  # a fetch waiting for the broker
            except asyncio.CancelledError:
                swallowed.append("swallowed")  # and the fetch returns as if nothing happened
            yield len(swallowed)
            if swallowed:
                # A fetch loop would fetch on here; end instead, so that the test fails
                # rather than hangs when the producer resumes the generator.
                resumed.append("resumed after the consumer left")
                return

    async with open_asyncio_bridge(name="stubborn") as bridge:
        async with bridge.stream(stubborn, max_buffered=2):
            await wait_until(fetching.is_set, "the generator waits in its fetch")
        assert swallowed == ["swallowed"]
        assert resumed == []


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
async def test_stream_max_buffered_must_be_a_positive_int(bad):
    async def nothing() -> AsyncIterator[int]:
        return
        yield

    async with open_asyncio_bridge(name="bad") as bridge:
        with pytest.raises(ConfigError, match=r"max_buffered=.*must be an integer >= 1"):
            bridge.stream(nothing, max_buffered=bad)


@pytest.mark.parametrize("opener", [open_thread_bridge, open_asyncio_bridge])
async def test_bridge_name_must_be_a_non_empty_string(opener):
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        async with opener(name=""):
            pass
