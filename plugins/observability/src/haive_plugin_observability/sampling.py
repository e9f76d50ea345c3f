"""Turning a running pipeline's counters into samples, on the monitor's schedule.

A :class:`RunTracker` looks at one :class:`~haive.dataflow.pipelines.streaming_pipeline.PipelineRun`
whenever it is asked (a few times a second): it reads the cumulative per-node counters
(``run.node_stats()``), every edge buffer (``run.buffers()``) and drains the run's per-batch
flow marks (``run.marks``). Nothing runs per item.

End-to-end latency
    The run appends ``(items read so far, time)`` per source batch and
    ``(items delivered so far, time)`` per sink batch. The tracker maps delivered positions
    back to read positions first-in-first-out and records ``delivered time - entered time``
    for each overlapping source batch. Pipelines that drop or merge items (filters, failed
    items, aggregates) deliver fewer items than they read; the tracker then scales delivered
    positions by the pipeline's observed selectivity (the product of each node's
    ``items_out / items_in``), which is exact when selectivity is uniform over time and an
    approximation otherwise. For 1:1 pipelines the result is exact to the batch.

Per-node latency
    Estimated per sampling interval as queue wait plus service time: the wait by Little's
    law (inbox depth at the sample divided by the node's arrival rate over the interval), the
    service time as the mean batch processing time (``busy_seconds / batches``; every item
    of a batch waits for the whole batch). Percentiles of node latency are therefore over
    sampling intervals, weighted by the items each interval carried.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from haive.dataflow.runtime.backpressure import BoundedBuffer


@attrs.frozen
class NodeSample:
    """Cumulative counters of one node at a sample, plus what changed since the last one.

    Example::

        >>> NodeSample(name="parse", items_in=10, items_out=9).errors
        0
    """

    name: str
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    retries: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    in_progress: int = 0
    depth: int = 0
    delta_in: int = 0
    delta_out: int = 0
    delta_errors: int = 0
    #: Estimated seconds an item spent in this node during the interval (None: no traffic).
    latency: float | None = None


@attrs.frozen
class EdgeSample:
    """One edge buffer at a sample.

    Example::

        >>> EdgeSample(name="parse.in", depth=5, capacity=10).pressure
        0.5
    """

    name: str
    depth: int = 0
    capacity: int = 1
    strategy: str = "block"
    items_in: int = 0
    items_out: int = 0
    dropped: int = 0
    blocked_count: int = 0
    blocked_seconds: float = 0.0
    max_depth: int = 0

    @property
    def pressure(self) -> float:
        return self.depth / self.capacity if self.capacity else 0.0

    @classmethod
    def of(cls, buffer: BoundedBuffer[Any], name: str | None = None) -> EdgeSample:
        stats = buffer.stats
        return cls(
            name=name or buffer.name,
            depth=len(buffer),
            capacity=buffer.buffer_size,
            strategy=getattr(buffer.strategy, "PLUGIN_NAME", type(buffer.strategy).__name__),
            items_in=stats.items_in,
            items_out=stats.items_out,
            dropped=stats.dropped,
            blocked_count=stats.blocked_count,
            blocked_seconds=stats.blocked_seconds,
            max_depth=stats.max_depth,
        )


@attrs.frozen
class RunSample:
    """Everything the tracker saw of one pipeline run at time ``now``.

    ``delta_*`` fields count what happened since the previous sample of the same run;
    ``latencies`` are ``(seconds, items)`` pairs of end-to-end latency matched since then.

    Example::

        >>> RunSample(pipeline="p", now=1.0).latencies
        ()
    """

    pipeline: str
    now: float
    running: bool = True
    read: int = 0
    processed: int = 0
    failed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    delta_read: int = 0
    delta_processed: int = 0
    delta_errors: int = 0
    nodes: tuple[NodeSample, ...] = ()
    edges: tuple[EdgeSample, ...] = ()
    latencies: tuple[tuple[float, int], ...] = ()


class RunTracker:
    """Samples one pipeline run; keeps just enough state to compute deltas and latency.

    Example (a finished run of a 1:1 pipeline; every delivered item is matched)::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> class Keep:
        ...     async def monitor(self, run):
        ...         self.run = run
        >>> keep = Keep()
        >>> p = StreamingPipeline("doc")
        >>> p.set_source(IterableSource(range(1000)))
        >>> p.add_processor(lambda x: x + 1)
        >>> p.add_monitor(keep)
        >>> report = trio.run(p.execute)
        >>> sample = RunTracker(keep.run, now=0.0).sample(now=1.0, running=False)
        >>> sample.processed, sum(n for _, n in sample.latencies)
        (1000, 1000)
    """

    def __init__(self, run: Any, *, now: float) -> None:
        self.run = run
        self.pipeline: str = run.pipeline.name
        self._prev_time = now
        self._prev_read = 0
        self._prev_processed = 0
        self._prev_errors = 0
        self._prev_nodes: dict[str, tuple[int, int, int, int, float]] = {}
        #: Entered marks not yet fully matched, oldest first: (cumulative read, time).
        self._entries: deque[tuple[int, float]] = deque()
        #: Read position where the oldest kept entry batch starts.
        self._entry_floor = 0
        #: Read position (possibly fractional) up to which deliveries were matched.
        self._cursor = 0.0
        self._delivered = 0

    # -- latency -------------------------------------------------------------------------
    def _selectivity(self, stats: dict[str, Any]) -> float:
        ratio = 1.0
        for node in stats.values():
            consumed = node.items_in - node.in_progress
            if consumed > 0:
                ratio *= node.items_out / consumed
        return ratio

    def _entry_time_at(self, position: float) -> float | None:
        """Time the item at read ``position`` entered; drops entries wholly before it."""
        entries = self._entries
        while len(entries) > 1 and entries[0][0] <= position:
            self._entry_floor = entries.popleft()[0]
        return entries[0][1] if entries else None

    def _match(
        self, delivered: Iterable[tuple[int, float]], selectivity: float
    ) -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        scale = 1.0 / selectivity if selectivity > 0 else 1.0
        entries = self._entries
        for position, when in delivered:
            size = position - self._delivered
            self._delivered = position
            if size <= 0:
                continue
            lo = self._cursor
            hi = max(lo, position * scale)
            self._cursor = hi
            if not entries:
                continue
            if hi <= lo:
                entered = self._entry_time_at(lo)
                if entered is not None:
                    out.append((max(0.0, when - entered), size))
                continue
            # Spread ``size`` delivered items over the entry batches covering (lo, hi].
            remaining = size
            floor = self._entry_floor
            width = hi - lo
            for end, entered in entries:
                if end <= lo:
                    floor = end
                    continue
                start = max(floor, lo)
                overlap = min(end, hi) - start
                floor = end
                if overlap <= 0:
                    continue
                share = min(remaining, max(1, round(size * overlap / width)))
                if end >= hi or share >= remaining:
                    share = remaining
                out.append((max(0.0, when - entered), share))
                remaining -= share
                if remaining <= 0 or end >= hi:
                    break
            if remaining > 0:
                out.append((max(0.0, when - entries[-1][1]), remaining))
            # Forget entry batches that lie wholly before the cursor.
            while len(entries) > 1 and entries[0][0] <= hi:
                self._entry_floor = entries.popleft()[0]
        return out

    # -- sampling ------------------------------------------------------------------------
    def sample(self, *, now: float, running: bool = True) -> RunSample:
        """Read the run's counters now; return them with deltas and matched latencies."""
        run = self.run
        stats: dict[str, Any] = run.node_stats()
        buffers = list(run.buffers())
        inbox_depth = {buf.name[:-3]: len(buf) for buf in buffers if buf.name.endswith(".in")}
        elapsed_interval = now - self._prev_time

        latencies: list[tuple[float, int]] = []
        marks = getattr(run, "marks", None)
        if marks is not None:
            entered = marks.entered
            while entered:
                self._entries.append(entered.popleft())
            delivered = marks.delivered
            drained: list[tuple[int, float]] = []
            while delivered:
                drained.append(delivered.popleft())
            if drained:
                latencies = self._match(drained, self._selectivity(stats))

        nodes: list[NodeSample] = []
        errors_total = 0
        for name, st in stats.items():
            prev = self._prev_nodes.get(name, (0, 0, 0, 0, 0.0))
            d_in = st.items_in - prev[0]
            d_out = st.items_out - prev[1]
            d_err = st.errors - prev[2]
            d_batches = st.batches - prev[3]
            d_busy = st.busy_seconds - prev[4]
            depth = inbox_depth.get(name, 0)
            latency: float | None = None
            if d_in > 0 and elapsed_interval > 0:
                arrival_rate = d_in / elapsed_interval
                service = d_busy / d_batches if d_batches > 0 and d_busy > 0 else 0.0
                if service == 0.0 and st.in_progress:
                    service = st.in_progress / arrival_rate
                latency = depth / arrival_rate + service
            nodes.append(
                NodeSample(
                    name=name,
                    items_in=st.items_in,
                    items_out=st.items_out,
                    errors=st.errors,
                    retries=st.retries,
                    batches=st.batches,
                    busy_seconds=st.busy_seconds,
                    in_progress=st.in_progress,
                    depth=depth,
                    delta_in=d_in,
                    delta_out=d_out,
                    delta_errors=d_err,
                    latency=latency,
                )
            )
            self._prev_nodes[name] = (
                st.items_in,
                st.items_out,
                st.errors,
                st.batches,
                st.busy_seconds,
            )
            errors_total += st.errors

        read, processed = run.read, run.processed
        sample = RunSample(
            pipeline=self.pipeline,
            now=now,
            running=running,
            read=read,
            processed=processed,
            failed=run.failed,
            errors=errors_total,
            elapsed=run.elapsed,
            delta_read=read - self._prev_read,
            delta_processed=processed - self._prev_processed,
            delta_errors=errors_total - self._prev_errors,
            nodes=tuple(nodes),
            edges=tuple(EdgeSample.of(buf) for buf in buffers),
            latencies=tuple(latencies),
        )
        self._prev_time = now
        self._prev_read, self._prev_processed, self._prev_errors = read, processed, errors_total
        return sample
