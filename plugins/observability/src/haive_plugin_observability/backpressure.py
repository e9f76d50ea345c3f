"""Backpressure: :class:`BackpressureMetric` (depth, drops and blocked time of every edge
buffer) and its :class:`BackpressureSnapshot` of :class:`EdgeSnapshot` records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .metric_base import Metric
from .sampling import EdgeSample, RunSample
from .windows import CounterWindow, as_seconds


@attrs.frozen
class EdgeSnapshot:
    """One edge buffer: depth now, drops and blocked time (totals and over the window).

    Example::

        >>> EdgeSnapshot(name="p/parse.in", depth=8, capacity=10).pressure
        0.8
    """

    name: str
    depth: int = 0
    capacity: int = 1
    strategy: str = "block"
    dropped: int = 0
    drops_per_second: float = 0.0
    blocked_count: int = 0
    blocked_seconds: float = 0.0
    blocked_fraction: float = 0.0
    max_depth: int = 0
    items_in: int = 0
    items_out: int = 0

    @property
    def pressure(self) -> float:
        return self.depth / self.capacity if self.capacity else 0.0


@attrs.frozen
class BackpressureSnapshot:
    """Every watched edge and totals.

    ``blocked_fraction`` is the largest share of the window any producer spent blocked on a
    full edge; ``max_pressure`` the fullest edge now.

    Example::

        >>> BackpressureSnapshot(dropped=3).dropped
        3
    """

    edges: Mapping[str, EdgeSnapshot] = attrs.field(factory=dict)
    dropped: int = 0
    drops_per_second: float = 0.0
    blocked_seconds: float = 0.0
    blocked_fraction: float = 0.0
    max_pressure: float = 0.0


class _EdgeState:
    __slots__ = ("latest", "window")

    def __init__(self, latest: EdgeSample, window: float) -> None:
        self.latest = latest
        self.window = CounterWindow(window, width=2)


class BackpressureMetric(Metric):
    """Queue depth, drops and blocked time of every edge of monitored pipelines.

    Edges of a monitored pipeline are named ``"<pipeline>/<node>.in"`` (the input of a node)
    and ``"<pipeline>/output"`` (the sink's input). Other buffers — a
    :class:`~haive.dataflow.BackpressureManager`'s, or any
    :class:`~haive.dataflow.BoundedBuffer` — are added with :meth:`watch`.

    Example::

        >>> import trio, trio.testing
        >>> from haive_plugin_observability import MetricsCollector
        >>> from haive.dataflow import BoundedBuffer
        >>> async def demo():
        ...     bp = BackpressureMetric()
        ...     metrics = MetricsCollector({"backpressure": bp})
        ...     buf = BoundedBuffer(10, "drop_newest", name="ingest")
        ...     bp.watch(buf)
        ...     buf.put_nowait_batch(range(15))
        ...     snap = metrics.get_current().backpressure
        ...     return snap.dropped, snap.max_pressure, snap.edges["ingest"].depth
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (5, 1.0, 10)
    """

    kind = "backpressure"

    def __init__(self, *, window: Duration = "1m") -> None:
        self.window = as_seconds(window, "BackpressureMetric window")
        self._edges: dict[str, _EdgeState] = {}
        self._watched: list[tuple[str, Any]] = []
        self._managers: list[Any] = []

    def watch(self, buffer: Any, name: str | None = None) -> None:
        """Include a :class:`~haive.dataflow.BoundedBuffer` made outside a pipeline."""
        if not hasattr(buffer, "stats") or not hasattr(buffer, "buffer_size"):
            raise ConfigError(f"BackpressureMetric.watch expects a BoundedBuffer, got {buffer!r}")
        self._watched.append((name or buffer.name, buffer))

    def watch_manager(self, manager: Any) -> None:
        """Include every buffer a :class:`~haive.dataflow.BackpressureManager` tracks, now and later."""
        if not hasattr(manager, "buffers"):
            raise ConfigError(f"watch_manager expects a BackpressureManager, got {manager!r}")
        self._managers.append(manager)

    def _update(self, key: str, edge: EdgeSample, now: float) -> None:
        state = self._edges.get(key)
        if state is None:
            state = self._edges[key] = _EdgeState(edge, self.window)
        state.latest = edge
        state.window.update(now, (edge.dropped, edge.blocked_seconds))

    def observe_sample(self, sample: RunSample, now: float) -> None:
        for edge in sample.edges:
            self._update(f"{sample.pipeline}/{edge.name}", edge, now)

    def poll(self, now: float) -> None:
        for name, buffer in self._watched:
            self._update(name, EdgeSample.of(buffer, name), now)
        for manager in self._managers:
            for name, buffer in manager.buffers.items():
                self._update(name, EdgeSample.of(buffer, name), now)

    def _edge(self, key: str, state: _EdgeState, now: float) -> EdgeSnapshot:
        edge = state.latest
        d_dropped, d_blocked = state.window.delta(now)
        span = state.window.span(now)
        return EdgeSnapshot(
            name=key,
            depth=edge.depth,
            capacity=edge.capacity,
            strategy=edge.strategy,
            dropped=edge.dropped,
            drops_per_second=d_dropped / span if span > 0 else 0.0,
            blocked_count=edge.blocked_count,
            blocked_seconds=edge.blocked_seconds,
            blocked_fraction=min(1.0, d_blocked / span) if span > 0 else 0.0,
            max_depth=edge.max_depth,
            items_in=edge.items_in,
            items_out=edge.items_out,
        )

    def snapshot(self, now: float) -> BackpressureSnapshot:
        edges = {key: self._edge(key, state, now) for key, state in self._edges.items()}
        values = list(edges.values())
        return BackpressureSnapshot(
            edges=edges,
            dropped=sum(e.dropped for e in values),
            drops_per_second=sum(e.drops_per_second for e in values),
            blocked_seconds=sum(e.blocked_seconds for e in values),
            blocked_fraction=max((e.blocked_fraction for e in values), default=0.0),
            max_pressure=max((e.pressure for e in values), default=0.0),
        )

    @property
    def dropped(self) -> int:
        return self.snapshot(self.fresh_now()).dropped

    @property
    def blocked_fraction(self) -> float:
        return self.snapshot(self.fresh_now()).blocked_fraction

    @property
    def max_pressure(self) -> float:
        return self.snapshot(self.fresh_now()).max_pressure

    @property
    def edges(self) -> Mapping[str, EdgeSnapshot]:
        return self.snapshot(self.fresh_now()).edges
