"""Helpers shared by the observability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from haive.dataflow.io.sources import DataSource


class PacedSource(DataSource):
    """Emits ``count`` ints, ``batch`` at a time, one batch every ``every`` seconds (trio time)."""

    PLUGIN_NAME = "paced-test"

    def __init__(self, count: int, *, every: float, batch: int = 1) -> None:
        self.count = count
        self.every = every
        self.batch = batch

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        sent = 0
        while sent < self.count:
            size = min(self.batch, self.count - sent, chunk_size)
            yield list(range(sent, sent + size))
            sent += size
            await trio.sleep(self.every)
