"""The source protocol: where a pipeline's items come from."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, ClassVar


class DataSource(abc.ABC):
    """Produces items in batches. Subclasses implement :meth:`batches`.

    A batch is whatever is ready now: a source never waits to fill one. ``open`` and
    ``aclose`` bracket a run (connect, open files); the pipeline calls both.

    Example::

        >>> import trio
        >>> class Countdown(DataSource):
        ...     PLUGIN_NAME = "countdown"
        ...     async def batches(self, max_items):
        ...         yield [3, 2, 1]
        >>> async def main():
        ...     return [b async for b in Countdown().batches(10)]
        >>> trio.run(main)
        [[3, 2, 1]]
    """

    PLUGIN_NAME: ClassVar[str] = ""

    async def open(self) -> None:
        """Acquire resources before the first batch."""

    async def aclose(self) -> None:
        """Release resources; called after the last batch, on error or cancellation too."""

    @abc.abstractmethod
    def batches(self, max_items: int) -> AsyncIterator[list[Any]]:
        """Yield lists of at most ``max_items`` items until the source is exhausted."""

    async def __aenter__(self) -> DataSource:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
