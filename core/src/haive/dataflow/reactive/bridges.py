"""Bridges to pipelines: an observable as a :class:`~haive.dataflow.DataSource`
(:class:`ObservableSource`), and a :class:`~haive.dataflow.StreamingPipeline`'s output as an
observable (:meth:`Observable.from_pipeline <haive.dataflow.reactive.Observable.from_pipeline>`).

Example: a reactive stream feeds a pipeline, whose outputs are observed again::

    >>> import trio
    >>> from haive.dataflow import StreamingPipeline
    >>> from haive.dataflow.reactive import Observable
    >>> pipeline = StreamingPipeline("double")
    >>> pipeline.set_source(ObservableSource(Observable.of(1, 2, 3).map(lambda n: n + 1)))
    >>> pipeline.add_processor(lambda n: n * 2)
    >>> outputs = Observable.from_pipeline(pipeline).scan(lambda a, b: a + b)
    >>> trio.run(outputs.to_list)
    [4, 10, 18]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from ..errors import ConfigError
from ..io.sources import DataSource
from ..runtime.backpressure import BoundedBuffer
from ..runtime.defaults import DEFAULT_BUFFER_SIZE
from ._source import PullOptions
from .observable import Observable
from .subscription import _Feed


class ObservableSource(DataSource):
    """Feeds a pipeline from an observable (cold or hot).

    Observables made of sources, hot streams and fused operators are read by the
    pipeline's source task itself; one that runs tasks of its own (time or combining
    operators) needs ``nursery=``, where it runs while the pipeline reads its buffer.
    ``buffer_size``/``backpressure`` size the buffer between a hot stream (or that task) and
    the pipeline. An error of the observable stops the pipeline's source with that error.

    Example: see :mod:`haive.dataflow.reactive.bridges`; with a time operator::

        >>> import trio
        >>> from trio.testing import MockClock
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> async def main():
        ...     sink = MemorySink()
        ...     async with trio.open_nursery() as nursery:
        ...         ticks = Observable.interval(0.001).take(5).buffer_time(0.0025)
        ...         pipeline = StreamingPipeline("sums")
        ...         pipeline.set_source(ObservableSource(ticks, nursery=nursery))
        ...         pipeline.add_processor(sum)
        ...         pipeline.set_sink(sink)
        ...         await pipeline.execute()
        ...     return sum(sink.items)
        >>> trio.run(main, clock=MockClock(autojump_threshold=0))
        10
    """

    def __init__(
        self,
        observable: Observable[Any],
        *,
        nursery: trio.Nursery | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        backpressure: object = "block",
    ) -> None:
        if not isinstance(observable, Observable):
            raise ConfigError(f"ObservableSource expects an Observable, got {observable!r}")
        if not observable._pullable() and nursery is None:
            raise ConfigError(
                f"ObservableSource: {observable!r} runs tasks of its own (time or combining "
                f"operators); pass nursery= (a nursery that outlives the pipeline run)"
            )
        self.observable = observable
        self.nursery = nursery
        # Validate now, not at run time; a backpressure name is resolved here.
        options = PullOptions(buffer_size, backpressure, config_owner="ObservableSource")
        self.buffer_size = options.buffer_size
        self.backpressure = options.backpressure
        self._pulled: AsyncIterator[list[Any]] | None = None
        self._feed: _Feed | None = None

    async def open(self) -> None:
        # Attach now, so a hot stream loses nothing between open() and the first read.
        if self.observable._pullable():
            self._pulled = self.observable._open_pull(
                PullOptions(self.buffer_size, self.backpressure)
            )
        if self._pulled is None:
            if self.nursery is None:
                raise ConfigError(f"ObservableSource: {self.observable!r} needs nursery=")
            buffer: BoundedBuffer[Any] = BoundedBuffer(
                self.buffer_size, self.backpressure, name=f"source({self.observable._label})"
            )
            self._feed = _Feed(self.observable, buffer)
            await self.nursery.start(self._feed.run)
        else:
            await trio.lowlevel.checkpoint()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        if self._pulled is None and self._feed is None:
            await self.open()
        batches = self._pulled if self._feed is None else self._feed.batches()
        assert batches is not None
        async for batch in batches:
            for start in range(0, len(batch), chunk_size):
                yield batch if len(batch) <= chunk_size else batch[start : start + chunk_size]

    async def aclose(self) -> None:
        pulled, self._pulled = self._pulled, None
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.scope.cancel()
            feed.buffer.close_receiving()
        closer = getattr(pulled, "aclose", None)
        if closer is not None:
            await closer()
        else:
            await trio.lowlevel.checkpoint()
