"""The creation operators' runs: the sources behind ``Observable.from_iterable``,
``from_async_iterable``, ``from_``, ``interval``/``timer`` (``ticks``), ``empty``, ``never``,
``throw``, ``defer``, ``create`` and ``from_pipeline``.

Each builds a :class:`~._source.FunctionSource` from a run function (items emitted in the
run's task) and, where the items can be read without a task, a pull function. The public
methods, with their argument documentation and examples, are on
:class:`~haive.dataflow.reactive.Observable`, which wraps these sources.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import ConfigError
from ..runtime.defaults import DEFAULT_CHUNK_SIZE
from ._runtime import (
    Emit,
    Ready,
    check_callable,
    positive_int,
)
from ._source import (
    ASYNC_ITERABLE,
    AWAITABLE,
    ITERABLE,
    OBSERVABLE,
    FunctionSource,
    PullOptions,
    Source,
    classify,
)

if TYPE_CHECKING:
    from ..pipelines.streaming_pipeline import StreamingPipeline


def from_iterable(iterable: Iterable[Any], chunk_size: int) -> Source[Any]:
    positive_int(chunk_size, "from_iterable", "chunk_size")
    if isinstance(iterable, str | bytes) or not isinstance(iterable, Iterable):
        raise ConfigError(f"from_iterable expects an iterable, got {type(iterable).__name__}")

    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()
        iterator = iter(iterable)
        checkpoint = trio.lowlevel.checkpoint
        while True:
            batch: list[Any] = []
            try:
                batch.extend(itertools.islice(iterator, chunk_size))
            except Exception:
                if batch:
                    await emit(batch)
                raise
            if not batch:
                return
            await emit(batch)
            if len(batch) < chunk_size:
                return
            await checkpoint()

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        iterator = iter(iterable)
        while True:
            batch: list[Any] = []
            try:
                batch.extend(itertools.islice(iterator, chunk_size))
            except Exception:
                if batch:
                    yield batch
                raise
            if not batch:
                return
            await trio.lowlevel.checkpoint()
            yield batch
            if len(batch) < chunk_size:
                return

    return FunctionSource(run, pull, label="from_iterable")


def from_async_iterable(iterable: AsyncIterable[Any]) -> Source[Any]:
    if not hasattr(iterable, "__aiter__"):
        raise ConfigError(
            f"from_async_iterable expects an async iterable, got {type(iterable).__name__}"
        )

    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()
        async for item in iterable:
            await emit([item])

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        async for item in iterable:
            yield [item]

    return FunctionSource(run, pull, label="from_async_iterable")


def from_(value: object) -> Source[Any]:
    kind = classify(value)
    if kind == OBSERVABLE:
        return value  # type: ignore[return-value]
    if kind == ASYNC_ITERABLE:
        return from_async_iterable(value)  # type: ignore[arg-type]
    if kind == ITERABLE:
        return from_iterable(value, DEFAULT_CHUNK_SIZE)  # type: ignore[arg-type]
    if kind == AWAITABLE:
        awaitable: Awaitable[Any] = value  # type: ignore[assignment]

        async def run(emit: Emit, ready: Ready) -> None:
            ready.started()
            await emit([await awaitable])

        return FunctionSource(run, label="from_awaitable")
    return from_iterable((value,), DEFAULT_CHUNK_SIZE)


def empty() -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()
        await trio.lowlevel.checkpoint()

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        await trio.lowlevel.checkpoint()
        return
        yield  # pragma: no cover - makes this an async generator

    return FunctionSource(run, pull, label="empty")


def never() -> Source[Any]:
    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()
        await trio.sleep_forever()

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        await trio.sleep_forever()
        yield []  # pragma: no cover

    return FunctionSource(run, pull, label="never")


def throw(error: BaseException | Callable[[], BaseException]) -> Source[Any]:
    if not isinstance(error, BaseException) and not callable(error):
        raise ConfigError(f"throw expects an exception, got {error!r}")

    def make() -> BaseException:
        return error if isinstance(error, BaseException) else error()

    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()
        await trio.lowlevel.checkpoint()
        raise make()

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        await trio.lowlevel.checkpoint()
        raise make()
        yield []  # pragma: no cover

    return FunctionSource(run, pull, label="throw")


def defer(factory: Callable[[], Any]) -> Source[Any]:
    check_callable(factory, "defer")

    async def run(emit: Emit, ready: Ready) -> None:
        value = factory()
        if classify(value) == AWAITABLE:
            value = await value
        await from_(value)._run(emit, ready)

    # What the factory returns is known only per run, so this is read through a task.
    return FunctionSource(run, label="defer")


def create(
    producer: Callable[[Callable[[Any], Awaitable[None]]], Awaitable[None]],
) -> Source[Any]:
    check_callable(producer, "create")

    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()

        async def emit_one(item: Any) -> None:
            await emit([item])

        await producer(emit_one)

    return FunctionSource(run, label="create")


def ticks(period: float, label: str, *, first: float | None) -> Source[int]:
    """interval / timer: tick 0 at ``first`` (default: one period in), then one per ``period``."""

    def schedule() -> tuple[float, float]:
        start = trio.current_time()
        return start, start + (first if first is not None else period)

    def next_slot(start: float, slot: float) -> float:
        # Skip the slots a blocked consumer missed, keep the original phase.
        now = trio.current_time()
        if math.isinf(period):
            return math.inf
        slot += period
        if slot < now:
            slot += math.ceil((now - slot) / period) * period
        return slot

    async def run(emit: Emit, ready: Ready) -> None:
        ready.started()
        start, slot = schedule()
        n = 0
        while not math.isinf(slot):
            await trio.sleep_until(slot)
            await emit([n])
            n += 1
            slot = next_slot(start, slot)

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        start, slot = schedule()
        n = 0
        while not math.isinf(slot):
            await trio.sleep_until(slot)
            yield [n]
            n += 1
            slot = next_slot(start, slot)

    return FunctionSource(run, pull, label=label)


def from_pipeline(pipeline: StreamingPipeline, *, results: bool) -> Source[Any]:
    """See :meth:`Observable.from_pipeline`."""
    # Imported when used: importing reactive/ does not load the pipelines.
    from ..pipelines.streaming_pipeline import StreamingPipeline

    if not isinstance(pipeline, StreamingPipeline):
        raise ConfigError(f"from_pipeline expects a StreamingPipeline, got {pipeline!r}")

    async def run(emit: Emit, ready: Ready) -> None:
        async with pipeline.run() as stream:
            ready.started()
            async for batch in stream.batches():
                out = batch if results else [result.data for result in batch if result.success]
                if out:
                    await emit(out)

    return FunctionSource(run, label=f"pipeline({pipeline.name})")
