"""Hook implementations of {{ cookiecutter.project_slug }}."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from haive.dataflow import DataSource, StreamProcessor, hookimpl


class CountingSource(DataSource):
    """Yields the integers 0 .. count-1."""

    PLUGIN_NAME = "{{ cookiecutter.capability_name }}"

    def __init__(self, count: int = 10) -> None:
        self.count = count

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        for start in range(0, self.count, chunk_size):
            yield list(range(start, min(start + chunk_size, self.count)))


class UpperCaseProcessor(StreamProcessor):
    """Upper-cases strings; anything else fails the item."""

    PLUGIN_NAME = "{{ cookiecutter.capability_name }}"

    def process(self, item: Any) -> Any:
        if not isinstance(item, str):
            raise TypeError(f"expected str, got {type(item).__name__}")
        return item.upper()


@hookimpl
def haive_register_sources() -> list[type[Any]]:
    return [CountingSource]


@hookimpl
def haive_register_processors() -> list[type[Any]]:
    return [UpperCaseProcessor]
