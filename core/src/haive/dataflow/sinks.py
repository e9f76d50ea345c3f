"""The sink protocol: where a pipeline's outputs go."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from ._resource import AsyncResource


class StreamSink(AsyncResource):
    """Consumes outputs in batches. Subclasses implement :meth:`write_batch`.

    The pipeline calls ``open`` before the first batch and ``aclose`` after the last; when
    ``write_batch`` returns, the items count as delivered (at-least-once sources acknowledge
    them then), so a durable sink writes before it returns.

    Example::

        >>> import trio
        >>> class Printer(StreamSink):
        ...     PLUGIN_NAME = "printer"
        ...     async def write_batch(self, items):
        ...         print(*items)
        >>> trio.run(Printer().write, "hello")
        hello
    """

    PLUGIN_NAME: ClassVar[str] = ""

    async def open(self) -> None:
        """Acquire resources before the first batch."""

    async def aclose(self) -> None:
        """Flush and release resources."""

    @abc.abstractmethod
    async def write_batch(self, items: list[Any]) -> None:
        """Deliver ``items``; must not keep a reference to the list after returning."""

    async def write(self, item: Any) -> None:
        """Deliver one item."""
        await self.write_batch([item])
