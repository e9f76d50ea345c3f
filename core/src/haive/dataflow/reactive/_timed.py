"""Operators on trio's clock: debounce, sample, buffer_time, window_time, delay, timeout.

Each runs its upstream and a timer in a nursery of its own; only ``trio.current_time``,
``sleep_until`` and cancel-scope deadlines are used, so ``MockClock`` drives them. A timer
is never cancelled while it hands an item downstream (that could lose the item): at
completion it is told to stop and finishes its current emit first.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from ..runtime.backpressure import BoundedBuffer
from ..runtime.defaults import DEFAULT_BUFFER_SIZE
from ._hot import WindowSource
from ._runtime import NOTHING, Emit, Ready, SerialEmit, open_nursery, start_run
from ._source import FunctionSource, Source


def debounce(source: Source[Any], period: float) -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        pending: Any = NOTHING
        due = math.inf
        done = False
        wake = trio.lowlevel.ParkingLot()

        async def timer() -> None:
            nonlocal pending
            while not done:
                if pending is NOTHING or trio.current_time() < due:
                    with trio.move_on_at(due if pending is not NOTHING else math.inf):
                        await wake.park()
                    continue
                item, pending = pending, NOTHING
                await emit([item])

        async def on_batch(batch: list[Any]) -> None:
            nonlocal pending, due
            idle = pending is NOTHING
            pending = batch[-1]
            due = trio.current_time() + period
            if idle:
                wake.unpark_all()  # a busy timer notices the later `due` when it wakes

        async with open_nursery() as nursery:
            nursery.start_soon(timer)
            await source._run(on_batch, ready)
            done = True
            wake.unpark_all()
        if pending is not NOTHING:
            await emit([pending])

    return FunctionSource(
        run, label=f"{source._label} → debounce({period:g}s)", roots=source._roots
    )


def sample(source: Source[Any], period: float) -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        latest: Any = NOTHING
        done = False
        sleeping = trio.CancelScope()

        async def ticker() -> None:
            nonlocal latest, sleeping
            start = trio.current_time()
            n = 1
            while not done:
                sleeping = trio.CancelScope(deadline=start + n * period)
                with sleeping:
                    await trio.sleep_forever()
                if done:
                    return
                n += 1
                if latest is not NOTHING:
                    item, latest = latest, NOTHING
                    await emit([item])

        async def on_batch(batch: list[Any]) -> None:
            nonlocal latest
            latest = batch[-1]

        async with open_nursery() as nursery:
            nursery.start_soon(ticker)
            await source._run(on_batch, ready)
            done = True
            sleeping.cancel()
        if latest is not NOTHING:
            await emit([latest])

    return FunctionSource(run, label=f"{source._label} → sample({period:g}s)", roots=source._roots)


def buffer_time(
    source: Source[Any], period: float, max_count: int | None, emit_empty: bool
) -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        items: list[Any] = []
        done = False
        period_start = trio.current_time()
        wake = trio.lowlevel.ParkingLot()
        serial = SerialEmit(emit)

        async def timer() -> None:
            nonlocal items, period_start
            while not done:
                with trio.move_on_at(period_start + period):
                    await (
                        wake.park()
                    )  # woken early at completion or when a count flush restarts the period
                if done:
                    return
                if trio.current_time() < period_start + period:
                    continue
                out, items = items, []
                period_start += period
                if out or emit_empty:
                    await serial([out])

        async def on_batch(batch: list[Any]) -> None:
            nonlocal items, period_start
            items.extend(batch)
            if max_count is not None and len(items) >= max_count:
                full: list[list[Any]] = []
                while len(items) >= max_count:
                    full.append(items[:max_count])
                    items = items[max_count:]
                period_start = trio.current_time()
                wake.unpark_all()
                await serial(full)

        period_start = trio.current_time()
        async with open_nursery() as nursery:
            nursery.start_soon(timer)
            await source._run(on_batch, ready)
            done = True
            wake.unpark_all()
        if items:
            await emit([items])

    return FunctionSource(
        run, label=f"{source._label} → buffer_time({period:g}s)", roots=source._roots
    )


def windows(
    source: Source[Any],
    count: int | None,
    period: float | None,
    window_class: type[WindowSource[Any]],
) -> Source[Any]:
    """``window(count)`` and ``window_time(period)``: windows of ``window_class`` (a
    :class:`~._hot.WindowSource` the caller gives the fluent API to).

    The upstream (and the timer) run in a task of their own and put each new window in a
    bounded queue that the consumer drains, so a consumer that waits for a window to close
    never blocks what closes it. The queue bounds memory: when it is full the upstream
    waits.
    """
    label = f"window({count})" if count is not None else f"window_time({period:g}s)"

    async def run(emit: Emit, ready: Ready) -> None:
        queue: BoundedBuffer[WindowSource[Any]] = BoundedBuffer(
            DEFAULT_BUFFER_SIZE, "block", name=label
        )
        current: WindowSource[Any] | None = None
        filled = 0

        async def on_batch(batch: list[Any]) -> None:
            nonlocal current, filled
            if count is None:
                assert current is not None
                current._push_now(batch)
                if len(queue) >= queue.buffer_size:
                    await queue.wait_below(0.5)  # the consumer is far behind: slow down
                return
            i = 0
            while i < len(batch):
                if current is None:
                    opened: WindowSource[Any] = window_class(name=label)
                    await queue.put(opened)
                    current, filled = opened, 0
                n = min(count - filled, len(batch) - i)
                current._push_now(batch[i : i + n])
                filled += n
                i += n
                if filled == count:
                    current._finish()
                    current = None

        async def timer() -> None:
            nonlocal current
            assert period is not None
            start = trio.current_time()
            n = 1
            while True:
                await trio.sleep_until(start + n * period)
                n += 1
                opened: WindowSource[Any] = window_class(name=label)
                await queue.put(opened)  # cancelled here, nothing has changed yet
                closing, current = current, opened
                if closing is not None:
                    closing._finish()

        async def produce(*, task_status: trio.TaskStatus[None]) -> None:
            nonlocal current
            error: BaseException | None = None
            try:
                async with open_nursery() as nursery:
                    if period is not None:
                        current = window_class(name=label)
                        await queue.put(current)
                        nursery.start_soon(timer)
                    await start_run(source, on_batch, task_status=task_status)
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                error = exc
                raise
            finally:
                if current is not None:
                    current._finish(error)
                queue.close()

        async with open_nursery() as nursery:
            await nursery.start(produce)
            ready.started()
            while True:
                try:
                    batch = await queue.get_batch()
                except trio.EndOfChannel:
                    break
                await emit(batch)

    return FunctionSource(run, label=f"{source._label} → {label}", roots=source._roots)


def delay(source: Source[Any], period: float) -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        # (due time, item) pairs; bounded, so a fast upstream waits for the delayed ones.
        queue: BoundedBuffer[tuple[float, Any]] = BoundedBuffer(
            DEFAULT_BUFFER_SIZE, "block", name="delay"
        )
        completion_due = math.inf

        async def on_batch(batch: list[Any]) -> None:
            due = trio.current_time() + period
            await queue.put_batch([(due, item) for item in batch])

        async def upstream(*, task_status: trio.TaskStatus[None]) -> None:
            nonlocal completion_due
            producer = queue.open_producer()
            try:
                await start_run(source, on_batch, task_status=task_status)
                completion_due = trio.current_time() + period
            finally:
                producer.close()

        async with open_nursery() as nursery:
            await nursery.start(upstream)
            ready.started()
            while True:
                try:
                    entries = await queue.get_batch()
                except trio.EndOfChannel:
                    break
                i = 0
                while i < len(entries):
                    await trio.sleep_until(entries[i][0])
                    now = trio.current_time()
                    j = i
                    while j < len(entries) and entries[j][0] <= now:
                        j += 1
                    await emit([item for _, item in entries[i:j]])
                    i = j
        await trio.sleep_until(completion_due)

    return FunctionSource(run, label=f"{source._label} → delay({period:g}s)", roots=source._roots)


def timeout(source: Source[Any], period: float, fallback: Source[Any] | None) -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        scope = trio.CancelScope(deadline=trio.current_time() + period)

        async def on_batch(batch: list[Any]) -> None:
            scope.deadline = math.inf  # time spent waiting on a slow consumer does not count
            await emit(batch)
            scope.deadline = trio.current_time() + period

        with scope:
            await source._run(on_batch, ready)
        ready.started()
        if scope.cancelled_caught:
            if fallback is None:
                raise TimeoutError(f"{source._label}: no item within {period:g} s")
            await fallback._run(emit, ready)

    roots = source._roots if fallback is None else (*source._roots, *fallback._roots)
    return FunctionSource(run, label=f"{source._label} → timeout({period:g}s)", roots=roots)
