"""EventPipeline: a graph of nodes wired by name, fed event by event or as a stream."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..errors import ClosedError, ConfigError, GraphError, unwrap_node_errors
from ..parallel.runner import executor_runner
from ..runtime.backpressure import BoundedBuffer, BufferProducer
from ..runtime.config import StreamConfig
from ..runtime.graph import Graph, GraphRun, RunSettings
from ..runtime.nodes import Node, NodeStats
from ..runtime.results import Result
from ..runtime.retry import NO_RETRY, RetryPolicy
from ..runtime.validation import NON_EMPTY_STR, instance_of

CONFIG = instance_of(StreamConfig, "a StreamConfig")


@attrs.frozen
class SendResult:
    """What one :meth:`PipelineHandle.send` produced at ``"output"``.

    ``outputs`` is empty when the event was filtered out or absorbed into a window that is not
    full yet; ``errors`` holds failed items when the pipeline's error policy is ``"result"``.

    Example::

        >>> r = SendResult(outputs=[{"trend_direction": "up"}])
        >>> r.output["trend_direction"], r.filtered
        ('up', False)
    """

    outputs: list[Any] = attrs.field(factory=list)
    errors: list[Result] = attrs.field(factory=list)

    @property
    def output(self) -> Any:
        """The first output, or ``None`` when there was none."""
        return self.outputs[0] if self.outputs else None

    @property
    def filtered(self) -> bool:
        """True when nothing reached the output and nothing failed."""
        return not self.outputs and not self.errors


class EventPipeline:
    """A named graph of processing nodes between ``"input"`` and ``"output"``.

    Nodes are wired by name; fan-out (one node to several) copies each output to every
    successor, fan-in (several into one) merges. Each edge is a bounded buffer of
    ``buffer_size`` items and nodes take at most ``chunk_size`` items at a time, given here
    or by ``config`` (a :class:`~haive.dataflow.runtime.config.StreamConfig`, which also sets
    ``error_buffer_size``), never both; the defaults are StreamConfig's. ``max_batch`` is the
    deprecated name of ``chunk_size``. Settings are checked when the pipeline is made; the
    graph is validated (unknown/duplicate names, cycles, dangling nodes) when it starts.

    Example::

        >>> from haive.dataflow.runtime.nodes import FilterNode, TransformNode
        >>> pipeline = EventPipeline("demo")
        >>> _ = pipeline.add_node(FilterNode(name="even", filter_fn=lambda x: x % 2 == 0))
        >>> _ = pipeline.add_node(TransformNode(name="square", transform_fn=lambda x: x * x))
        >>> _ = pipeline.connect("input", "even").connect("even", "square")
        >>> _ = pipeline.connect("square", "output")
        >>> async def main():
        ...     async with pipeline.process() as p:
        ...         return [(await p.send(n)).outputs for n in (1, 2, 3, 4)]
        >>> trio.run(main)
        [[], [4], [], [16]]
    """

    def __init__(
        self,
        name: str = "pipeline",
        *,
        buffer_size: int | None = None,
        chunk_size: int | None = None,
        backpressure: object = "block",
        on_error: str = "raise",
        retry: RetryPolicy | None = None,
        config: StreamConfig | None = None,
        max_batch: int | None = None,
    ) -> None:
        NON_EMPTY_STR.check("EventPipeline", "name", name)
        if max_batch is not None:
            # The README once showed max_batch=; the one name from StreamConfig down is chunk_size.
            warnings.warn(
                "EventPipeline(max_batch=) is deprecated: use chunk_size=",
                DeprecationWarning,
                stacklevel=2,
            )
            if chunk_size is not None:
                raise ConfigError(
                    f"EventPipeline(chunk_size={chunk_size!r}, max_batch={max_batch!r}): "
                    "max_batch is the deprecated name of chunk_size; give chunk_size only"
                )
            chunk_size = max_batch
        if config is not None:
            CONFIG.check("EventPipeline", "config", config)
            if buffer_size is not None or chunk_size is not None:
                # Both would be silently overridden by the config's: refuse instead.
                raise ConfigError(
                    f"EventPipeline(buffer_size={buffer_size!r}, chunk_size={chunk_size!r}, "
                    "config=...): give buffer_size/chunk_size or a config, not both (a config "
                    "sets them from its buffer_size and chunk_size)"
                )
        # Sizes come from a StreamConfig (the default one unless given) as they do for
        # StreamingPipeline; those given here replace its defaults.
        sizes = StreamConfig() if config is None else config
        # Every setting is checked (and a backpressure name resolved) here, not once running.
        settings = RunSettings(
            buffer_size=sizes.buffer_size if buffer_size is None else buffer_size,
            chunk_size=sizes.chunk_size if chunk_size is None else chunk_size,
            error_buffer_size=sizes.error_buffer_size,
            backpressure=backpressure,
            on_error=on_error,
            retry=NO_RETRY if retry is None else retry,
            config_owner="EventPipeline",
        )
        self.name = name
        self.config = config
        self.graph = Graph()
        self.settings = settings

    def add_node(self, node: Node) -> EventPipeline:
        """Add a node; its ``name`` is what :meth:`connect` refers to."""
        self.graph.add(node)
        return self

    def connect(self, source: str, target: str) -> EventPipeline:
        """Wire ``source``'s outputs into ``target`` (``"input"``/``"output"`` are the ends)."""
        self.graph.connect(source, target)
        return self

    def validate(self) -> list[str]:
        """Check the wiring now; returns node names in topological order."""
        return self.graph.validate()

    @asynccontextmanager
    async def process(self) -> AsyncIterator[PipelineHandle]:
        """Run the graph for the duration of the block; yields a :class:`PipelineHandle`.

        Leaving the block closes the input and waits until every item is drained through
        every node. A node failing under the ``"raise"`` policy ends the block with
        :class:`~haive.dataflow.errors.NodeError` naming the node.
        """
        errors: BoundedBuffer[Result] | None = None
        if self.settings.error_policy == "result":
            # Nobody drains it but failures(): it keeps the latest error_buffer_size.
            errors = self.settings.error_buffer(f"{self.name}.errors", drained=False)
        run = GraphRun(self.graph, self.settings, errors=errors, runner=executor_runner)
        handle = PipelineHandle(self, run)
        try:
            with unwrap_node_errors():
                async with trio.open_nursery() as nursery:
                    run.start(nursery)
                    nursery.start_soon(handle._collect, name="haive-collect-output")
                    try:
                        yield handle
                    finally:
                        run.close_input()
        finally:
            handle._closed = True


class PipelineHandle:
    """The running side of :meth:`EventPipeline.process`.

    * ``await send(event)``: feed one event and wait until it has gone through the whole
      graph; returns a :class:`SendResult` with what reached ``"output"``. Sends are
      serialized, so results belong to the event sent.
    * ``await feed(event)`` / ``feed_batch(events)``: stream mode, no waiting; read outputs
      with ``async for out in handle.results()``.

    Example: see :class:`EventPipeline`.
    """

    def __init__(self, pipeline: EventPipeline, run: GraphRun) -> None:
        self.pipeline = pipeline
        self.run = run
        self._send_lock = trio.Lock()
        self._current: SendResult | None = None
        self._results: BoundedBuffer[Any] = pipeline.settings.buffer(
            f"{pipeline.name}.results", "block"
        )
        self._results_producer: BufferProducer[Any] = self._results.open_producer()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"pipeline {self.pipeline.name!r} is no longer processing")

    async def _collect(self) -> None:
        output = self.run.output
        async with self._results_producer:
            while True:
                try:
                    batch = await output.get_batch()
                except trio.EndOfChannel:
                    return
                if self._current is not None:
                    self._current.outputs.extend(batch)
                else:
                    await self._results_producer.put_batch(batch)
                self.run.note_output_taken(len(batch))

    async def send(self, event: Any) -> SendResult:
        """Process one event to completion and return what it produced."""
        return await self.send_batch([event])

    async def send_batch(self, events: Iterable[Any]) -> SendResult:
        """Process several events to completion; returns everything they produced."""
        self._check_open()
        async with self._send_lock:
            result = SendResult()
            self._current = result
            try:
                await self.run.feed(list(events))
                await self.run.wait_idle()
                # A node reports a failure before it counts the item as done, so once the
                # graph is idle every failure of this send is in the buffer.
                result.errors.extend(self.failures())
            finally:
                self._current = None
            return result

    async def feed(self, event: Any) -> None:
        """Stream mode: enqueue one event (waits only if the first edge is full)."""
        self._check_open()
        await self.run.feed([event])

    async def feed_batch(self, events: Iterable[Any]) -> None:
        """Stream mode: enqueue many events at once."""
        self._check_open()
        await self.run.feed(list(events))

    def close_input(self) -> None:
        """No more events: nodes drain and ``results()`` ends after the last output."""
        self.run.close_input()

    async def drain(self) -> None:
        """Wait until everything fed so far has been processed."""
        await self.run.wait_idle()

    async def results(self) -> AsyncIterator[Any]:
        """Outputs of stream-mode feeding, as they arrive, until the input is closed."""
        while True:
            try:
                batch = await self._results.get_batch()
            except trio.EndOfChannel:
                return
            for item in batch:
                yield item

    def failures(self) -> list[Result]:
        """Failed items not yet returned (error policy ``"result"``; keeps the latest
        ``error_buffer_size``, 10,000 by default)."""
        if self.run.errors is None:
            return []
        try:
            return self.run.errors.get_nowait_batch(self.run.errors.buffer_size)
        except (trio.WouldBlock, trio.EndOfChannel):
            return []

    def stats(self) -> dict[str, NodeStats]:
        """Per-node counters (items in/out, errors, retries, busy time)."""
        return self.run.node_stats()


__all__ = ["EventPipeline", "GraphError", "PipelineHandle", "SendResult"]
