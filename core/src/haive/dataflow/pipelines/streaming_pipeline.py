"""StreamingPipeline: source -> processors -> sink, with a per-item result stream."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from ..errors import ConfigError, NodeError, unwrap_node_errors
from ..io.serializers import Serializer
from ..io.sinks import RejectedItems, StreamSink
from ..io.sources import DataSource
from ..io.trace_headers import sending_trace_headers
from ..parallel.runner import ParallelSettings, apply_parallelism, executor_runner
from ..runtime.backpressure import BoundedBuffer, BufferProducer
from ..runtime.caching import CacheSettings, ResultCache, apply_caching
from ..runtime.config import StreamConfig
from ..runtime.graph import INPUT, OUTPUT, Graph, GraphRun, RunSettings
from ..runtime.instrumentation import RunInstrumentation, run_instrumentation
from ..runtime.memory import MemoryGovernor, governor_for_run
from ..runtime.nodes import Node, NodeStats, as_node
from ..runtime.results import Result
from ..runtime.retry import NO_RETRY, RetryPolicy
from ..runtime.schemas import SCHEMA_NODE_NAME, schema_node
from ..runtime.units import Duration
from ..runtime.validation import NON_EMPTY_STR, instance_of, optional_duration, size


class PipelineMonitor(Protocol):
    """Watches a running pipeline; ``monitor`` runs as a task until the pipeline ends.

    Monitors pull counters (``run.node_stats()``, ``run.buffers()``) on their own schedule,
    so observing costs nothing per item.
    """

    async def monitor(self, run: PipelineRun) -> None: ...


@attrs.define
class RunReport:
    """Totals of one finished run.

    Example::

        >>> RunReport(processed=10, failed=1, elapsed=0.5).events_per_second
        22.0
    """

    processed: int = 0
    failed: int = 0
    elapsed: float = 0.0
    dropped: int = 0
    read: int = 0
    last_errors: list[Result] = attrs.field(factory=list)

    @property
    def events_per_second(self) -> float:
        return (self.processed + self.failed) / self.elapsed if self.elapsed else 0.0


class StreamingPipeline:
    """A linear pipeline: one source, processors in order, one sink.

    Every item comes out as a :class:`~haive.dataflow.runtime.results.Result`: a failing item becomes
    a failed result (after the retry policy) and the stream goes on. With a sink set,
    successful outputs are written to it before their results are yielded; failed ones go to
    the dead-letter sink when one is set (else, with an acknowledging source, to its
    ``reject``). A sink that rejects single items (:class:`~haive.dataflow.io.sinks.RejectedItems`)
    has them fail the same way, node ``"sink:<class>"``, while the rest counts as written.
    Successful results keep input order; a failed result travels on its own path and may
    arrive before outputs of earlier items.

    Example::

        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> pipeline = StreamingPipeline("demo")
        >>> pipeline.set_source(IterableSource([1, 2, 0, 4]))
        >>> pipeline.add_processor(lambda x: 8 // x)
        >>> sink = MemorySink()
        >>> pipeline.set_sink(sink)
        >>> async def main():
        ...     async with pipeline.run() as stream:
        ...         return sorted([r.success async for r in stream])
        >>> trio.run(main)
        [False, True, True, True]
        >>> sink.items
        [8, 4, 2]
    """

    def __init__(
        self,
        name: str = "pipeline",
        *,
        config: StreamConfig | None = None,
        on_error: str = "result",
        retry: RetryPolicy | None = None,
        backpressure: object = "block",
    ) -> None:
        NON_EMPTY_STR.check("StreamingPipeline", "name", name)
        if config is not None:
            instance_of(StreamConfig, "a StreamConfig").check("StreamingPipeline", "config", config)
        self.name = name
        self.config = config or StreamConfig()
        self.on_error = on_error
        self.retry = NO_RETRY if retry is None else retry
        self.backpressure = backpressure
        # Check every setting (and resolve a backpressure name) now rather than at run time.
        self._settings()
        self.source: DataSource | None = None
        self.sink: StreamSink | None = None
        self.dead_letter: StreamSink | None = None
        self.nodes: list[Node] = []
        self._schema_node: Node | None = None
        self.monitors: list[PipelineMonitor] = []
        self.serializer: Serializer | None = None
        #: Set by :meth:`enable_parallel_processing` / :meth:`enable_caching`; applied to the
        #: nodes present when a run starts.
        self.parallel: ParallelSettings | None = None
        self.caching: CacheSettings | None = None
        self.cache: ResultCache | None = None
        # Set while the pipeline may read; cleared by pause(). A new Event on resume since a
        # trio Event cannot be reset.
        self._reading_allowed = trio.Event()
        self._reading_allowed.set()
        #: The run in progress (None between runs): what an operations console acts on.
        self.current_run: PipelineRun | None = None
        self.failure_observers: list[Callable[[list[Result]], None]] = []
        #: Set by :meth:`instrument`; else a plugin may give each run one (tracing).
        self.instrumentation: RunInstrumentation | None = None

    # -- building ------------------------------------------------------------------------
    def set_source(self, source: DataSource) -> None:
        if not isinstance(source, DataSource):
            raise ConfigError(f"set_source expects a DataSource, got {source!r}")
        self.source = source

    def set_sink(self, sink: StreamSink) -> None:
        if not isinstance(sink, StreamSink):
            raise ConfigError(f"set_sink expects a StreamSink, got {sink!r}")
        self.sink = sink

    def set_dead_letter_sink(self, sink: StreamSink) -> None:
        """Failed results (item, error, node) are written here as well as yielded."""
        if not isinstance(sink, StreamSink):
            raise ConfigError(f"set_dead_letter_sink expects a StreamSink, got {sink!r}")
        self.dead_letter = sink

    def add_node(self, node: Node | Callable[[Any], Any]) -> None:
        """Append a processing step (a Node, StreamProcessor or plain function)."""
        node = as_node(node, len(self.nodes))
        if any(existing.name == node.name for existing in self.nodes):
            raise ConfigError(f"StreamingPipeline {self.name!r}: duplicate node name {node.name!r}")
        self.nodes.append(node)

    add_processor = add_node

    def set_schema(self, model: type[Any]) -> None:
        """Validate every item the source delivers against ``model`` (a ``msgspec.Struct``,
        pydantic model or attrs class: :class:`~haive.dataflow.runtime.schemas.Schema`)
        before any processor sees it: the processors get typed events, and a record that
        does not match goes to the dead-letter sink (or the source's ``reject``) with the
        validation error while the pipeline goes on. Calling it again replaces the schema.

        Example::

            >>> import msgspec, trio
            >>> from haive.dataflow.builtins.sinks import MemorySink
            >>> from haive.dataflow.builtins.sources import IterableSource
            >>> class Order(msgspec.Struct):
            ...     id: int
            ...     total: float
            >>> pipeline = StreamingPipeline("orders")
            >>> pipeline.set_source(IterableSource([{"id": 1, "total": 9.5}, {"id": "x"}]))
            >>> pipeline.set_schema(Order)
            >>> pipeline.add_processor(lambda order: order.total * 2)
            >>> dead, out = MemorySink(), MemorySink()
            >>> pipeline.set_dead_letter_sink(dead)
            >>> pipeline.set_sink(out)
            >>> report = trio.run(pipeline.execute)
            >>> out.items, dead.items[0]["error"]["message"]
            ([19.0], 'does not match Order: Expected `int`, got `str` - at `$.id`')
        """
        previous = self._schema_node
        rest = [n for n in self.nodes if n is not previous]
        if any(n.name == SCHEMA_NODE_NAME for n in rest):
            raise ConfigError(
                f"StreamingPipeline {self.name!r}: set_schema adds a node named "
                f"{SCHEMA_NODE_NAME!r}, and a processor already has that name"
            )
        self._schema_node = schema_node(model, name=SCHEMA_NODE_NAME)
        self.nodes = [self._schema_node, *rest]

    def add_monitor(self, monitor: PipelineMonitor) -> None:
        """Attach a monitor; its ``monitor(run)`` task runs for the whole run."""
        if not callable(getattr(monitor, "monitor", None)):
            raise ConfigError(
                f"add_monitor expects an object with async monitor(run), got {monitor!r}"
            )
        self.monitors.append(monitor)

    def observe_failures(self, observer: Callable[[list[Result]], None]) -> None:
        """Call ``observer(failed_results)`` for every batch of failures once it was handed
        to the dead-letter sink (else to the acknowledging source's ``reject``).

        An observer only looks (an operations console keeps the last ones to show): where
        failures go does not change. It runs in the pipeline's task, so it must be quick and
        must not raise (what it raises stops the run like a sink's error would).

        Example::

            >>> import trio
            >>> from haive.dataflow.builtins.sources import IterableSource
            >>> seen = []
            >>> pipeline = StreamingPipeline("doc")
            >>> pipeline.set_source(IterableSource([1, 0, 2]))
            >>> pipeline.add_processor(lambda x: 1 // x)
            >>> pipeline.observe_failures(lambda failed: seen.extend(r.data for r in failed))
            >>> report = trio.run(pipeline.execute)
            >>> seen, report.failed
            ([0], 1)
        """
        if not callable(observer):
            raise ConfigError(f"observe_failures expects a callable, got {observer!r}")
        self.failure_observers.append(observer)

    # -- operating ----------------------------------------------------------------------
    def pause(self) -> None:
        """Stop reading the source: the loop waits before feeding its next batch.

        Items already read finish their way through the pipeline (and are acknowledged at the
        next acknowledgment point); nothing is dropped. A broker-backed source keeps its
        unread entries on the broker, so a long pause may let a consumer group's claim timer
        hand them to another worker. :meth:`resume` reads again.

        Example::

            >>> pipeline = StreamingPipeline("orders")
            >>> pipeline.pause(); pipeline.paused
            True
            >>> pipeline.resume(); pipeline.paused
            False
        """
        if self._reading_allowed.is_set():
            self._reading_allowed = trio.Event()

    def resume(self) -> None:
        """Read the source again after :meth:`pause` (does nothing when not paused)."""
        self._reading_allowed.set()

    @property
    def paused(self) -> bool:
        return not self._reading_allowed.is_set()

    async def wait_until_resumed(self) -> None:
        """Return at once when not paused, else when :meth:`resume` is called."""
        while not self._reading_allowed.is_set():
            await self._reading_allowed.wait()
    def instrument(self, instrumentation: RunInstrumentation | None) -> None:
        """Instrument every run with ``instrumentation`` (``None``: ask the plugins per run).

        Without it, each run asks the installed instrumentation factories once
        (:func:`~haive.dataflow.runtime.instrumentation.run_instrumentation`): the tracing
        plugin's answers while tracing is on.
        See :mod:`haive.dataflow.runtime.instrumentation`.
        """
        if instrumentation is not None and not isinstance(instrumentation, RunInstrumentation):
            raise ConfigError(
                f"instrument expects a RunInstrumentation or None, got {instrumentation!r}"
            )
        self.instrumentation = instrumentation

    def set_serializer(self, serializer: Serializer) -> None:
        """Encode and decode the bytes this pipeline's source and sinks move with ``serializer``.

        When a run starts, every one of them that moves bytes (has a ``use_serializer``
        method, e.g. the Redis stream source and sink) is handed the serializer; one that was
        given a different codec of its own is an error. A pipeline whose source and sinks
        all take Python objects (memory, iterables, JSON lines) refuses to run, rather than
        ignore the setting. WebSocket connections negotiate their codec per client
        (``ConnectionConfig(serializer=...)``) and do not take it.
        """
        if not isinstance(serializer, Serializer):
            raise ConfigError(f"set_serializer expects a Serializer, got {serializer!r}")
        self.serializer = serializer

    def _apply_serializer(self) -> None:
        serializer = self.serializer
        if serializer is None:
            return
        parts = [p for p in (self.source, self.sink, self.dead_letter) if p is not None]
        takers: list[Any] = [p for p in parts if callable(getattr(p, "use_serializer", None))]
        if not takers:
            names = ", ".join(type(p).__name__ for p in parts)
            raise ConfigError(
                f"StreamingPipeline {self.name!r}: set_serializer({type(serializer).__name__}()) "
                f"would have no effect: none of its source and sinks ({names}) encodes bytes; "
                "use a source or sink that does (e.g. RedisStreamSource, RedisStreamSink) "
                "or remove the call"
            )
        for part in takers:
            part.use_serializer(serializer)

    def _graph(self) -> Graph:
        graph = Graph()
        previous = INPUT
        for node in self.nodes:
            graph.add(node)
            graph.connect(previous, node.name)
            previous = node.name
        graph.connect(previous, OUTPUT)
        return graph

    def _settings(self) -> RunSettings:
        return RunSettings.from_config(
            self.config,
            backpressure=self.backpressure,
            on_error=self.on_error,
            retry=self.retry,
            config_owner="StreamingPipeline",
        )

    # -- running -------------------------------------------------------------------------
    @asynccontextmanager
    async def run(self) -> AsyncIterator[ResultStream]:
        """Run the pipeline for the duration of the block, yielding a :class:`ResultStream`.

        Iterate the stream to the end to process everything; leaving the block earlier
        cancels the run (use :meth:`execute` to run to completion without reading results).
        """
        if self.source is None:
            raise ConfigError(f"StreamingPipeline {self.name!r}: no source set (set_source)")
        results: BoundedBuffer[Result] = self._settings().buffer(f"{self.name}.results", "block")
        with unwrap_node_errors():
            async with trio.open_nursery() as nursery:
                run = PipelineRun(self, results)
                await run.start(nursery)
                self.current_run = run
                try:
                    yield ResultStream(run, results)
                finally:
                    self.current_run = None
                if run.finished.is_set():
                    # Read to the end: let the source give its last acknowledgment and close.
                    await run.source_done.wait()
                # Leaving the block stops the run: whatever was not consumed is abandoned.
                run.stop_monitors()
                nursery.cancel_scope.cancel()

    async def execute(self) -> RunReport:
        """Run until the source is exhausted; return totals (no per-item results kept)."""
        if self.source is None:
            raise ConfigError(f"StreamingPipeline {self.name!r}: no source set (set_source)")
        with unwrap_node_errors():
            async with trio.open_nursery() as nursery:
                run = PipelineRun(self, None)
                await run.start(nursery)
                self.current_run = run
                try:
                    await run.finished.wait()
                finally:
                    self.current_run = None
                run.stop_monitors()
        return run.report()

    def enable_checkpointing(self, store: Any, **options: Any) -> Any:
        """Save source position and node state together into ``store`` periodically.

        ``store`` is a ``StateStore``, a backend, a path or a URL; options are those of
        :class:`~haive.dataflow.state.checkpoint.Checkpointer` (``interval="5s"``, ``every=N``
        items, ``name=``, ``resume=True``). Call it after :meth:`set_source` (and
        :meth:`set_sink`). A run started again with the same store resumes after the last
        checkpoint. Returns the ``Checkpointer``.
        """
        from ..state.checkpoint import Checkpointer

        return Checkpointer.attach(self, store, **options)

    def enable_parallel_processing(
        self, parallelism: int | None = None, ordered: bool = False
    ) -> None:
        """Run transforms ``parallelism``-way parallel (see :mod:`haive.dataflow.parallel`).

        Applied when a run starts, to the nodes present then: CPU-bound transforms
        (``executor="process"``) get ``parallelism`` worker processes (default
        ``config.worker_threads``), async and ``executor="thread"`` ones ``parallelism``
        items in flight (default ``config.io_threads``). ``ordered=False`` lets results
        overtake each other.
        """
        self.parallel = ParallelSettings(parallelism, ordered)

    def enable_caching(
        self,
        cache_size: int | str = "500MB",
        ttl: Duration | None = 300,
        *,
        nodes: list[str] | None = None,
        key: Any = None,
    ) -> ResultCache:
        """Memoize per-item results of cacheable nodes (see :mod:`haive.dataflow.runtime.caching`).

        One cache of ``cache_size`` (LRU by approximate bytes) whose entries live ``ttl``
        seconds (not milliseconds; a ``timedelta`` or ``"5m"`` works too); ``nodes`` limits it
        to the named nodes, ``key`` maps an item to its cache
        key (one function, or a mapping from node name to function). Returns the cache,
        whose ``stats`` and ``stats_for(node_name)`` give hit rates.
        """
        # Checked here so that errors name this method's parameters (ResultCache's differ).
        size("enable_caching", "cache_size", cache_size)
        optional_duration("enable_caching", "ttl", ttl)
        settings = CacheSettings(cache_size, ttl, tuple(nodes) if nodes is not None else None, key)
        self.caching = settings
        self.cache = settings.make_cache(name=f"{self.name}.cache")
        return self.cache

    def _prepare_nodes(self) -> None:
        """Apply parallelism, caching and serializer settings (at run start)."""
        self._apply_serializer()
        if self.parallel is not None:
            apply_parallelism(self.nodes, self.parallel, self.config)
        if self.caching is not None and self.cache is not None:
            apply_caching(self.nodes, self.cache, names=self.caching.nodes, key=self.caching.key)


#: Marks a run keeps per kind before the oldest are forgotten; a monitor draining them a few
#: times a second loses none even at a million items/s.
FLOW_MARKS_KEPT = 8192


def _marks_deque() -> deque[tuple[int, float]]:
    return deque(maxlen=FLOW_MARKS_KEPT)


@attrs.define
class FlowMarks:
    """Per-batch ``(cumulative items, trio time)`` marks, for end-to-end latency.

    ``entered`` gets a mark per batch read from the source, ``delivered`` one per batch the
    sink accepted. A monitor drains both (``popleft``) and matches delivered positions with
    entered ones (FIFO), so latency costs two appends per batch and nothing per item. A run
    keeps marks only when its pipeline has monitors.

    Example::

        >>> marks = FlowMarks()
        >>> marks.entered.append((100, 0.25))
        >>> marks.delivered.append((100, 0.75))
        >>> marks.delivered[0][1] - marks.entered[0][1]
        0.5
    """

    entered: deque[tuple[int, float]] = attrs.field(factory=_marks_deque)
    delivered: deque[tuple[int, float]] = attrs.field(factory=_marks_deque)


class PipelineRun:
    """The live state of one :class:`StreamingPipeline` run (what monitors look at)."""

    def __init__(self, pipeline: StreamingPipeline, results: BoundedBuffer[Result] | None) -> None:
        self.pipeline = pipeline
        self.results = results
        settings = pipeline._settings()
        # Drained into the dead-letter sink by the error task: never drops a failure.
        self.errors: BoundedBuffer[Result] = settings.error_buffer(
            f"{pipeline.name}.errors", drained=True
        )
        pipeline._prepare_nodes()
        self.graph = GraphRun(pipeline._graph(), settings, errors=self.errors, runner=executor_runner)
        _refuse_lossy_buffers(pipeline, self.graph)
        #: The run's tracing (None when off: then nothing below calls it).
        self.instrumentation: RunInstrumentation | None = (
            pipeline.instrumentation or run_instrumentation(pipeline)
        )
        self._source_trace_headers = False
        self._sink_name = f"sink:{type(pipeline.sink).__name__}"
        if self.instrumentation is not None:
            self.instrumentation.instrument(self.graph)
            source = pipeline.source
            self._source_trace_headers = source is not None and source.want_trace_headers()
        #: Keeps buffers and caches under ``config.max_memory_usage`` (None without a cap).
        self.memory: MemoryGovernor | None = governor_for_run(self)
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.read = 0
        self.processed = 0
        self.failed = 0
        #: Per-batch entry/delivery marks for monitors (None when there are no monitors).
        self.marks: FlowMarks | None = FlowMarks() if pipeline.monitors else None
        self.last_errors: list[Result] = []
        self.finished = trio.Event()
        #: Set when the source task ended (after its last acknowledgment and ``aclose``).
        self.source_done = trio.Event()
        self._results_producers: list[BufferProducer[Result]] = []
        self._monitor_scope = trio.CancelScope()
        self._pending_done = 2
        #: Of the sink and error loops, how many ended because their input ended (not by an
        #: exception): the end-of-input acknowledgment needs both.
        self._completed = 0
        self._dead_letter_lock = trio.Lock()
        self._dead_letter_open = False
        self._errors_handled = 0
        self._errors_progress = trio.Event()
        # The source loop and inject() both feed the graph: one batch at a time.
        self._feed_lock = trio.Lock()
        self._input_closed = False

    async def start(self, nursery: trio.Nursery) -> None:
        pipeline = self.pipeline
        if self.results is not None:
            self._results_producers = [self.results.open_producer() for _ in range(2)]
        self.graph.start(nursery)
        nursery.start_soon(self._read_source, name=f"haive-source:{pipeline.name}")
        nursery.start_soon(self._deliver, name=f"haive-sink:{pipeline.name}")
        nursery.start_soon(self._handle_errors, name=f"haive-errors:{pipeline.name}")
        if pipeline.monitors:
            nursery.start_soon(self._run_monitors, name=f"haive-monitors:{pipeline.name}")
        await trio.lowlevel.checkpoint()

    async def _run_monitors(self) -> None:
        with self._monitor_scope:
            async with trio.open_nursery() as nursery:
                for monitor in self.pipeline.monitors:
                    nursery.start_soon(monitor.monitor, self)

    def stop_monitors(self) -> None:
        self._monitor_scope.cancel()

    async def _read_source(self) -> None:
        source = self.pipeline.source
        assert source is not None
        chunk_size = self.graph.settings.chunk_size
        instrumentation = self.instrumentation
        acknowledging = source.acknowledges
        unacknowledged = 0
        try:
            await source.open()
            async with aclosing(source.batches(chunk_size)) as batches:  # type: ignore[type-var]
                async for batch in batches:
                    if not batch:
                        # An empty batch is the source asking for an acknowledgment point.
                        if acknowledging and unacknowledged:
                            await self.settle()
                            await source.acknowledge(unacknowledged)
                            unacknowledged = 0
                        continue
                    # Paused: hold this batch (read, not yet fed) until resumed. Checked
                    # between batches, so a pause costs nothing per item.
                    await self.pipeline.wait_until_resumed()
                    unacknowledged += len(batch)
                    if instrumentation is not None:
                        self._trace_source_batch(instrumentation, source, batch)
                    await self._feed(batch)
            if acknowledging and unacknowledged:
                # End of input: let every node flush and the sinks finish, then acknowledge.
                self._close_input()
                await self.finished.wait()
                if self._completed == 2:
                    await source.acknowledge(unacknowledged)
                # else a sink or the dead-letter sink failed: its exception is stopping the
                # run, and what it did not write stays unacknowledged (redelivered).
        except Exception as exc:
            raise NodeError(f"source:{type(source).__name__}", exc) from exc
        finally:
            self._close_input()
            with trio.CancelScope(shield=True):
                await source.aclose()
            self.source_done.set()

    async def _feed(self, batch: list[Any]) -> None:
        lock = self._feed_lock
        try:
            # Uncontended (inject() is rare): take the lock without the schedule point
            # ``async with`` adds, a pass of the scheduler per batch before it is fed.
            # Feeding's put is the cancel point.
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._feed_locked(batch)
        finally:
            lock.release()

    async def _feed_locked(self, batch: list[Any]) -> None:
        if self._input_closed:
            raise ConfigError(
                f"PipelineRun.inject: the input of {self.pipeline.name!r} is closed "
                "(its source ended or the run is stopping)"
            )
        self.read += len(batch)
        if self.marks is not None:
            self.marks.entered.append((self.read, trio.current_time()))
        if self.memory is not None:
            batch = await self.memory.admit(batch)
        await self.graph.feed(batch)

    def _close_input(self) -> None:
        self._input_closed = True
        self.graph.close_input()

    async def inject(self, items: list[Any]) -> None:
        """Feed ``items`` into the running pipeline's input, as if its source had read them
        (what replaying dead letters does). They are not the source's to acknowledge.

        Raises :class:`~haive.dataflow.errors.ConfigError` once the input is closed (the
        source ended or the run is stopping).
        """
        if not isinstance(items, list):
            raise ConfigError(f"PipelineRun.inject: items must be a list, got {items!r}")
        if items:
            await self._feed(items)
    def _trace_source_batch(
        self, instrumentation: RunInstrumentation, source: DataSource, batch: list[Any]
    ) -> None:
        headers = source.take_trace_headers() if self._source_trace_headers else None
        if headers is not None and len(headers) != len(batch):
            headers = None  # a source whose record does not match its batch: start new traces
        instrumentation.source_batch(batch, headers)

    async def _write(self, sink: StreamSink, batch: list[Any]) -> None:
        instrumentation = self.instrumentation
        if instrumentation is None:
            await sink.write_batch(batch)
            return
        with instrumentation.sink_batch(self._sink_name, batch) as headers:
            if headers is None:
                await sink.write_batch(batch)
            else:
                with sending_trace_headers(headers):
                    await sink.write_batch(batch)

    async def _deliver(self) -> None:
        sink = self.pipeline.sink
        producer = self._results_producers[0] if self._results_producers else None
        output = self.graph.output
        marks = self.marks
        try:
            if sink is not None:
                await sink.open()
            while True:
                try:
                    batch = await output.get_batch()
                except trio.EndOfChannel:
                    break
                taken = len(batch)
                if sink is not None:
                    try:
                        await self._write(sink, batch)
                    except RejectedItems as exc:
                        # The rest is written; the rejected items fail like in a processor.
                        node = f"sink:{type(sink).__name__}"
                        if self.pipeline.on_error == "raise":
                            raise NodeError(node, exc) from exc
                        failed = [
                            Result.failed(batch[i], error, node=node)
                            for i, error in sorted(exc.errors.items())
                        ]
                        batch = [item for i, item in enumerate(batch) if i not in exc.errors]
                        await self._dispose_failures(failed, producer)
                    except Exception as exc:
                        raise NodeError(f"sink:{type(sink).__name__}", exc) from exc
                self.processed += len(batch)
                if marks is not None:
                    marks.delivered.append((self.processed, trio.current_time()))
                if producer is not None and batch:
                    await producer.put_batch([Result(True, item) for item in batch])
                self.graph.note_output_taken(taken)
            self._completed += 1
        finally:
            if producer is not None:
                producer.close()
            if self.instrumentation is not None:
                self.instrumentation.close()
            with trio.CancelScope(shield=True):
                if sink is not None:
                    await sink.aclose()
                await self._close_dead_letter_if_last()
            self._one_done()

    async def _dispose_failures(
        self, batch: list[Result], producer: BufferProducer[Result] | None
    ) -> None:
        """Count failed results, write them to the dead-letter sink (else hand them to the
        acknowledging source's ``reject``), then yield them; raises if that write fails."""
        dead_letter = self.pipeline.dead_letter
        source = self.pipeline.source
        self.failed += len(batch)
        self.last_errors.extend(batch)
        del self.last_errors[:-100]
        async with self._dead_letter_lock:  # the sink task and the error task share it
            if dead_letter is not None:
                await self._open_dead_letter()
                try:
                    await dead_letter.write_batch([r.to_dict() for r in batch])
                except Exception as exc:
                    name = f"dead-letter sink:{type(dead_letter).__name__}"
                    raise NodeError(name, exc) from exc
            elif source is not None and source.acknowledges:
                # Without a dead-letter sink an acknowledging source keeps its failures
                # itself (a broker's dead-letter queue, or redelivery): acknowledging
                # must not lose them.
                try:
                    await source.reject(batch)
                except Exception as exc:
                    raise NodeError(f"source:{type(source).__name__}", exc) from exc
        for observer in self.pipeline.failure_observers:
            try:
                observer(batch)
            except Exception as exc:
                raise NodeError(f"failure observer:{observer!r}", exc) from exc
        if producer is not None:
            await producer.put_batch(batch)

    async def _handle_errors(self) -> None:
        dead_letter = self.pipeline.dead_letter
        producer = self._results_producers[1] if self._results_producers else None
        try:
            if dead_letter is not None:
                async with self._dead_letter_lock:
                    await self._open_dead_letter()
            while True:
                try:
                    batch = await self.errors.get_batch()
                except trio.EndOfChannel:
                    break
                await self._dispose_failures(batch, producer)
                self._errors_handled += len(batch)
                self._errors_progress.set()
            self._completed += 1
        finally:
            if producer is not None:
                producer.close()
            with trio.CancelScope(shield=True):
                await self._close_dead_letter_if_last()
            self._one_done()

    async def _open_dead_letter(self) -> None:
        dead_letter = self.pipeline.dead_letter
        if dead_letter is not None and not self._dead_letter_open:
            await dead_letter.open()
            self._dead_letter_open = True

    async def _close_dead_letter_if_last(self) -> None:
        """The sink task and the error task both write dead letters: the last one closes."""
        dead_letter = self.pipeline.dead_letter
        if dead_letter is not None and self._pending_done == 1 and self._dead_letter_open:
            self._dead_letter_open = False
            await dead_letter.aclose()

    async def settle(self) -> None:
        """Wait until every item read so far has left the pipeline.

        That is: written by the sink (its ``write_batch`` returned), or failed and handed to
        the dead-letter sink (else to the acknowledging source's ``reject``) and the result
        stream, or filtered out, or dropped by a backpressure strategy (refused with an
        acknowledging source). Acknowledging sources (:attr:`DataSource.acknowledges`) are
        acknowledged only after this. Items a stateful node holds across batches (an open
        window) count as handled once absorbed.
        """
        await self.graph.wait_idle()
        while self._errors_handled < self.errors.stats.items_in:
            self._errors_progress = trio.Event()
            await self._errors_progress.wait()

    def _one_done(self) -> None:
        self._pending_done -= 1
        if self._pending_done == 0:
            self.ended = time.perf_counter()
            self.finished.set()

    # -- introspection -------------------------------------------------------------------
    def node_stats(self) -> dict[str, NodeStats]:
        return self.graph.node_stats()

    def buffers(self) -> list[BoundedBuffer[Any]]:
        return list(self.graph.buffers())

    @property
    def elapsed(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def report(self) -> RunReport:
        return RunReport(
            processed=self.processed,
            failed=self.failed,
            elapsed=self.elapsed,
            dropped=sum(buf.stats.dropped for buf in self.graph.buffers()),
            read=self.read,
            last_errors=list(self.last_errors),
        )


def _refuse_lossy_buffers(pipeline: StreamingPipeline, graph: GraphRun) -> None:
    """An acknowledging source acknowledges what a dropping buffer threw away: refuse it."""
    source = pipeline.source
    if source is None or not source.acknowledges:
        return
    lossy = [buf for buf in graph.buffers() if not buf.strategy.blocks]
    if lossy:
        raise ConfigError(
            f"StreamingPipeline {pipeline.name!r}: backpressure={pipeline.backpressure!r} "
            f"drops items when buffer {lossy[0].name!r} is full, but the source "
            f"{type(source).__name__} acknowledges what it read (at-least-once delivery), so "
            "dropped items would be acknowledged without being written; use "
            "backpressure='block' with this source"
        )


class ResultStream:
    """The results of a running :class:`StreamingPipeline`, item by item or batch by batch.

    Example: see :class:`StreamingPipeline`.
    """

    def __init__(self, run: PipelineRun, results: BoundedBuffer[Result]) -> None:
        self.run = run
        self._results = results
        self._batch: list[Result] = []
        self._index = 0

    def __aiter__(self) -> ResultStream:
        return self

    async def __anext__(self) -> Result:
        if self._index < len(self._batch):
            item = self._batch[self._index]
            self._index += 1
            return item
        try:
            self._batch = await self._results.get_batch()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._index = 1
        return self._batch[0]

    async def batches(self) -> AsyncIterator[list[Result]]:
        """Results in the batches they arrive in (cheapest way to consume a fast stream)."""
        if self._index < len(self._batch):
            rest = self._batch[self._index :]
            self._index = len(self._batch)
            yield rest
        while True:
            try:
                yield await self._results.get_batch()
            except trio.EndOfChannel:
                return

    def report(self) -> RunReport:
        """Totals so far."""
        return self.run.report()
