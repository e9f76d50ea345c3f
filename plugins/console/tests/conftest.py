"""A pipeline that runs until told to stop, watched by a served console."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from haive_plugin_console import Console, ConsoleAddress, serving

from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sources import DataSource


class Ticker(DataSource):
    """``batch`` ints every ``every`` seconds until ``stop`` is set."""

    PLUGIN_NAME = "ticker-test"

    def __init__(self, stop: trio.Event, *, batch: int = 10, every: float = 0.05) -> None:
        self.stop = stop
        self.batch = batch
        self.every = every

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        n = 0
        while not self.stop.is_set():
            yield list(range(n, n + self.batch))
            n += self.batch
            await trio.sleep(self.every)


class Flaky:
    """Fails items divisible by ``every`` while ``failing`` (a switch the test flips)."""

    def __init__(self, every: int = 7) -> None:
        self.every = every
        self.failing = True

    def __call__(self, x: int) -> int:
        if self.failing and x % self.every == 0:
            raise ValueError(f"cannot enrich {x}")
        return x * 10


@asynccontextmanager
async def served_pipeline(
    *, token: str | None = None, host: str = "127.0.0.1", interval: float = 0.2
) -> AsyncIterator[tuple[ConsoleAddress, StreamingPipeline, Flaky, MemorySink]]:
    stop = trio.Event()
    flaky = Flaky()
    pipeline = StreamingPipeline("orders")
    pipeline.set_source(Ticker(stop))
    pipeline.add_processor(TransformNode(name="parse", transform_fn=lambda x: x + 0))
    pipeline.add_processor(TransformNode(name="enrich", transform_fn=flaky))
    sink = MemorySink()
    pipeline.set_sink(sink)
    console = Console(interval=interval)
    console.watch(pipeline)
    async with trio.open_nursery() as nursery, serving(console, host=host, token=token) as address:
        nursery.start_soon(pipeline.execute)
        try:
            yield address, pipeline, flaky, sink
        finally:
            stop.set()


async def wait_for(check: Callable[[], Any], within: float = 20.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    with trio.fail_after(within):
        while True:
            value = check()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await trio.sleep(0.05)


@pytest.fixture
def serve() -> Callable[..., Any]:
    """``async with serve(token=..., host=...) as (address, pipeline, flaky, sink)``."""
    return served_pipeline


@pytest.fixture
def until() -> Callable[..., Any]:
    """``await until(check)``: poll ``check`` until it returns something truthy."""
    return wait_for
