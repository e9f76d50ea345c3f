"""The source protocol: where a pipeline's items come from."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from ._resource import AsyncResource


class DataSource(AsyncResource):
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

    #: True for sources that must learn when their items are fully handled (at-least-once
    #: delivery: a message broker acknowledges a message only after the sink wrote it).
    #: :class:`~haive.dataflow.streaming_pipeline.StreamingPipeline` then calls
    #: :meth:`acknowledge` whenever the source yields an *empty batch* (its request for an
    #: acknowledgment point) and once more when the source is exhausted.
    acknowledges: bool = False

    async def open(self) -> None:
        """Acquire resources before the first batch."""

    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` unacknowledged items this source produced are fully handled.

        Called only when :attr:`acknowledges` is true, after every one of those items was
        written by the sink (``write_batch`` returned), handed to the dead-letter sink,
        filtered out or dropped by a backpressure strategy. Nothing after them is handled
        yet, so an acknowledging source can commit its position here; anything not
        acknowledged is redelivered after a crash (at-least-once).
        """

    async def aclose(self) -> None:
        """Release resources; called after the last batch, on error or cancellation too."""

    @abc.abstractmethod
    def batches(self, max_items: int) -> AsyncIterator[list[Any]]:
        """Yield lists of at most ``max_items`` items until the source is exhausted."""
