"""Operators over several streams: merge, zip, concat, combine_latest, with_latest_from,
start_with, and flat_map (a stream per item).

Each source runs in a task of its own (started with ``nursery.start``, so every source is
subscribed before the first item flows); their emissions are serialized into the one
downstream. Errors of any source fail the whole; a function that raises fails it too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import trio

from ..errors import ConfigError
from ..runtime.backpressure import BoundedBuffer
from ..runtime.defaults import DEFAULT_BUFFER_SIZE
from ._runtime import (
    NOTHING,
    Emit,
    Ready,
    RunState,
    SerialEmit,
    call,
    close_pull,
    open_nursery,
    open_pull_or_raise,
    start_run,
)
from ._source import (
    ASYNC_ITERABLE,
    AWAITABLE,
    ITERABLE,
    OBSERVABLE,
    SINGLE,
    FunctionSource,
    PullOptions,
    Source,
    as_source,
    classify,
    merge_roots,
)


def _sources_and_fn(
    args: Sequence[Any], what: str
) -> tuple[list[Source[Any]], Callable[..., Any] | None]:
    fn = None
    if args and callable(args[-1]) and not isinstance(args[-1], Source):
        fn, args = args[-1], args[:-1]
    sources = [as_source(arg, what) for arg in args]
    if not sources:
        raise ConfigError(f"{what} needs at least one observable")
    return sources, fn


def _labels(sources: Sequence[Source[Any]]) -> str:
    return ", ".join(source._label for source in sources)


def merge(args: Sequence[Any]) -> Source[Any]:
    sources = [as_source(arg, "merge") for arg in args]
    if not sources:
        raise ConfigError("merge needs at least one observable")
    if len(sources) == 1:
        return sources[0]

    async def run(emit: Emit, ready: Ready) -> None:
        serial = SerialEmit(emit)
        async with open_nursery() as nursery:
            for source in sources:
                await nursery.start(start_run, source, serial)
            ready.started()

    return FunctionSource(run, label=f"merge({_labels(sources)})", roots=merge_roots(*sources))


def concat(args: Sequence[Any]) -> Source[Any]:
    sources = [as_source(arg, "concat") for arg in args]
    if not sources:
        raise ConfigError("concat needs at least one observable")

    async def run(emit: Emit, ready: Ready) -> None:
        for source in sources:
            await source._run(emit, ready)
        ready.started()

    def pull(options: PullOptions) -> AsyncIterator[list[Any]] | None:
        return _pull_concat(sources, options)

    return FunctionSource(
        run,
        pull,
        label=f"concat({_labels(sources)})",
        roots=merge_roots(*sources),
        pullable=all(source._pullable() for source in sources),
    )


async def _pull_concat(
    sources: Sequence[Source[Any]], options: PullOptions
) -> AsyncIterator[list[Any]]:
    for source in sources:
        inner = open_pull_or_raise(source, options)  # opened only when its turn comes, as in push
        try:
            async for batch in inner:
                yield batch
        finally:
            await close_pull(inner)


def start_with(source: Source[Any], items: Sequence[Any]) -> Source[Any]:
    first = list(items)

    async def run(emit: Emit, ready: Ready) -> None:
        if not first:
            await source._run(emit, ready)
            return
        serial = SerialEmit(emit)
        async with open_nursery() as nursery:
            # Subscribe first (a hot source's items wait for the lock), then emit `items`.
            await serial.acquire()
            try:
                await nursery.start(start_run, source, serial)
                ready.started()
                await emit(first)
            finally:
                serial.release()

    def pull(options: PullOptions) -> AsyncIterator[list[Any]] | None:
        inner = source._open_pull(options)  # attaches now: nothing is missed
        return None if inner is None else _prepend(first, inner)

    return FunctionSource(
        run,
        pull,
        label=f"{source._label} → start_with",
        roots=source._roots,
        pullable=source._pullable(),
    )


async def _prepend(first: list[Any], inner: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    try:
        if first:
            await trio.lowlevel.checkpoint()
            yield first
        async for batch in inner:
            yield batch
    finally:
        await close_pull(inner)


def combine_latest(args: Sequence[Any]) -> Source[Any]:
    sources, fn = _sources_and_fn(args, "combine_latest")
    n = len(sources)

    async def run(emit: Emit, ready: Ready) -> None:
        latest: list[Any] = [NOTHING] * n
        missing = n
        serial = SerialEmit(emit)
        state = RunState()

        def on_batch_of(index: int) -> Emit:
            async def on_batch(batch: list[Any]) -> None:
                nonlocal missing
                if state.done:
                    return
                out: list[Any] = []
                try:
                    for item in batch:
                        if latest[index] is NOTHING:
                            missing -= 1
                        latest[index] = item
                        if missing == 0:
                            out.append(tuple(latest) if fn is None else await call(fn, *latest))
                except Exception as exc:
                    if out:
                        await serial(out)
                    state.fail(exc)
                    return
                if out:
                    await serial(out)

            return on_batch

        async def run_source(index: int, *, task_status: trio.TaskStatus[None]) -> None:
            source_ready = Ready(task_status)
            await sources[index]._run(on_batch_of(index), source_ready)
            source_ready.started()
            if latest[index] is NOTHING:
                state.stop()  # it can never contribute: nothing more will be emitted
                state.scope.cancel()

        with state.scope:
            async with open_nursery() as nursery:
                for index in range(n):
                    await nursery.start(run_source, index)
                ready.started()
        ready.started()
        if state.error is not None:
            raise state.error

    return FunctionSource(
        run, label=f"combine_latest({_labels(sources)})", roots=merge_roots(*sources)
    )


def with_latest_from(source: Source[Any], args: Sequence[Any]) -> Source[Any]:
    others, fn = _sources_and_fn(args, "with_latest_from")
    k = len(others)

    async def run(emit: Emit, ready: Ready) -> None:
        latest: list[Any] = [NOTHING] * k
        missing = k
        state = RunState()

        def update_of(index: int) -> Emit:
            async def update(batch: list[Any]) -> None:
                nonlocal missing
                if latest[index] is NOTHING:
                    missing -= 1
                latest[index] = batch[-1]

            return update

        async def on_batch(batch: list[Any]) -> None:
            if state.done or missing:
                return
            out: list[Any] = []
            try:
                for item in batch:
                    out.append((item, *latest) if fn is None else await call(fn, item, *latest))
            except Exception as exc:
                if out:
                    await emit(out)
                state.fail(exc)
                return
            await emit(out)

        async with open_nursery() as nursery:
            for index, other in enumerate(others):
                await nursery.start(start_run, other, update_of(index))
            with state.scope:
                await source._run(on_batch, ready)
            nursery.cancel_scope.cancel()
        ready.started()
        if state.error is not None:
            raise state.error

    return FunctionSource(
        run,
        label=f"{source._label} → with_latest_from({_labels(others)})",
        roots=merge_roots(source, *others),
    )


def zip_(args: Sequence[Any]) -> Source[Any]:
    sources, fn = _sources_and_fn(args, "zip")
    n = len(sources)

    async def run(emit: Emit, ready: Ready) -> None:
        # Each source fills a bounded buffer (a fast source waits for the slow ones).
        buffers: list[BoundedBuffer[Any]] = [
            BoundedBuffer(DEFAULT_BUFFER_SIZE, "block", name=f"zip[{i}]") for i in range(n)
        ]
        pending: list[deque[Any]] = [deque() for _ in range(n)]

        async def feed(index: int, *, task_status: trio.TaskStatus[None]) -> None:
            source_ready = Ready(task_status)
            producer = buffers[index].open_producer()
            try:
                await sources[index]._run(buffers[index].put_batch, source_ready)
            except trio.BrokenResourceError:
                pass  # zip completed: another source ran dry
            finally:
                producer.close()
            source_ready.started()

        async with open_nursery() as nursery:
            for index in range(n):
                await nursery.start(feed, index)
            ready.started()
            try:
                while True:
                    for index in range(n):
                        while not pending[index]:
                            try:
                                pending[index].extend(await buffers[index].get_batch())
                            except trio.EndOfChannel:
                                return
                    count = min(len(queue) for queue in pending)
                    out: list[Any] = []
                    try:
                        for _ in range(count):
                            values = [queue.popleft() for queue in pending]
                            out.append(tuple(values) if fn is None else await call(fn, *values))
                    except Exception:
                        if out:
                            await emit(out)
                        raise
                    await emit(out)
            finally:
                nursery.cancel_scope.cancel()
                for buffer in buffers:
                    buffer.close_receiving()

    return FunctionSource(run, label=f"zip({_labels(sources)})", roots=merge_roots(*sources))


async def _run_inner(result: Any, kind: int, emit: Emit) -> None:
    """Emit what one flat_map result stands for.

    As in Rx, an awaitable (a coroutine, a future) stands for one item: its result, unless
    that result is an observable, which is then flattened.
    """
    if kind == AWAITABLE:
        result = await result
        if not isinstance(result, Source):
            await emit([result])
            return
        kind = OBSERVABLE
    if kind == OBSERVABLE:
        await result._run(emit, Ready())
    elif kind == ASYNC_ITERABLE:
        async for item in result:
            await emit([item])
    elif kind == ITERABLE:
        out = list(result)
        if out:
            await emit(out)
    else:
        await emit([result])


async def _flat_map_batch(
    batch: list[Any],
    fn: Callable[[Any], Any],
    emit: Emit,
    state: RunState,
    on_inner: Callable[[Any, int], Awaitable[None]],
    *,
    emit_before_inner: bool,
) -> None:
    """One upstream batch of ``flat_map``: plain results (single items, iterables) are
    collected and emitted together; each other result (awaitable, async iterable,
    observable) goes to ``on_inner(result, kind)``, after what was collected so far is
    emitted if ``emit_before_inner``. On an error what was collected is emitted, then the
    run fails."""
    if state.done:
        return
    inline: list[Any] = []
    try:
        for item in batch:
            result = fn(item)
            kind = classify(result)
            if kind == ITERABLE:
                inline.extend(result)
            elif kind == SINGLE:
                inline.append(result)
            else:
                if emit_before_inner and inline:
                    await emit(inline)
                    inline = []
                await on_inner(result, kind)
    except Exception as exc:
        if inline:
            await emit(inline)
        state.fail(exc)
        return
    if inline:
        await emit(inline)


def flat_map(
    source: Source[Any], fn: Callable[[Any], Any], max_concurrent: int | None
) -> Source[Any]:
    label = f"{source._label} → flat_map"

    async def run_sequential(emit: Emit, ready: Ready) -> None:
        state = RunState()

        async def run_now(result: Any, kind: int) -> None:
            await _run_inner(result, kind, emit)

        async def on_batch(batch: list[Any]) -> None:
            await _flat_map_batch(batch, fn, emit, state, run_now, emit_before_inner=True)

        with state.scope:
            await source._run(on_batch, ready)
        ready.started()
        if state.error is not None:
            raise state.error

    async def run_concurrent(emit: Emit, ready: Ready) -> None:
        state = RunState()
        serial = SerialEmit(emit)
        slots = trio.Semaphore(max_concurrent) if max_concurrent is not None else None

        async def inner(result: Any, kind: int) -> None:
            try:
                await _run_inner(result, kind, serial)
            finally:
                if slots is not None:
                    slots.release()

        with state.scope:
            async with open_nursery() as nursery:

                async def start_inner(result: Any, kind: int) -> None:
                    if slots is not None:
                        await slots.acquire()  # all slots busy: upstream waits
                    nursery.start_soon(inner, result, kind)

                async def on_batch(batch: list[Any]) -> None:
                    await _flat_map_batch(
                        batch, fn, serial, state, start_inner, emit_before_inner=False
                    )

                await source._run(on_batch, ready)
        ready.started()
        if state.error is not None:
            raise state.error

    if max_concurrent == 1:
        return FunctionSource(run_sequential, label=label, roots=source._roots)
    return FunctionSource(run_concurrent, label=label, roots=source._roots)
