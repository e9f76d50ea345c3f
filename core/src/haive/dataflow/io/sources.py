"""The source protocol: where a pipeline's items come from."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ._resource import AsyncResource

if TYPE_CHECKING:
    from ..runtime.results import Result


class DataSource(AsyncResource):
    """Produces items in batches. Subclasses implement :meth:`batches`.

    A batch is whatever is ready now: a source never waits to fill one. ``open`` and
    ``aclose`` bracket a run (connect, open files); the pipeline calls both.

    Example::

        >>> import trio
        >>> class Countdown(DataSource):
        ...     PLUGIN_NAME = "countdown"
        ...     async def batches(self, chunk_size):
        ...         yield [3, 2, 1]
        >>> async def main():
        ...     return [b async for b in Countdown().batches(10)]
        >>> trio.run(main)
        [[3, 2, 1]]
    """

    PLUGIN_NAME: ClassVar[str] = ""

    #: True for sources that must learn when their items are fully handled (at-least-once
    #: delivery: a message broker acknowledges a message only after the sink wrote it).
    #: :class:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline` then calls
    #: :meth:`acknowledge` whenever the source yields an *empty batch* (its request for an
    #: acknowledgment point) and once more when the source is exhausted.
    acknowledges: bool = False

    async def open(self) -> None:
        """Acquire resources before the first batch."""

    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` unacknowledged items this source produced are fully handled.

        Called only when :attr:`acknowledges` is true, after every one of those items was
        written by the sink (``write_batch`` returned), handed to the dead-letter sink or
        to :meth:`reject`, or filtered out (a pipeline whose buffers may drop items refuses
        an acknowledging source). Nothing after them is handled
        yet, so an acknowledging source can commit its position here; anything not
        acknowledged is redelivered after a crash (at-least-once).
        """

    async def reject(self, failed: list[Result]) -> None:
        """These items failed for good in a processor, and the pipeline has no dead-letter sink.

        Called only when :attr:`acknowledges` is true, before the failures count as handled
        (so before the :meth:`acknowledge` that covers them). A source backed by a broker
        makes each failure durable here: it dead-letters the message with the reason (the
        failure's ``error`` and ``node``), or marks it to stay unacknowledged so the broker
        redelivers it; when this returns, nothing of it may be lost by acknowledging. If it
        raises, the pipeline stops and nothing more is acknowledged. ``Result.data`` is the
        item as it entered the failing node: the very object this source yielded when that
        node was the first to change it. The default keeps nothing (the failures are still
        counted in the report and yielded as failed results).
        """

    async def aclose(self) -> None:
        """Release resources; called after the last batch, on error or cancellation too."""

    def want_trace_headers(self) -> bool:
        """Tracing is on: keep each item's incoming trace headers from now on.

        Called once by the pipeline before :meth:`open`, only when a tracing plugin
        instruments the run. A source whose messages carry headers (a broker's message
        headers, a stream entry's fields) starts recording them in a
        :class:`~haive.dataflow.io.trace_headers.TraceHeaderLog` and returns True; the
        default (a source of plain values) returns False, and its batches start new traces.
        """
        return False

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        """The trace headers of the items of the batch just yielded, one per item (``None``
        for an item without); ``None`` for none at all. Called by the pipeline right after
        each non-empty batch when :meth:`want_trace_headers` returned True."""
        return None

    @abc.abstractmethod
    def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        """Yield lists of at most ``chunk_size`` items until the source is exhausted."""
