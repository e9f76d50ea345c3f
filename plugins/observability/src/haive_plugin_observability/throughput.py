"""Throughput: :class:`ThroughputMetric` (events per second over sliding windows) and
its :class:`ThroughputSnapshot`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from haive.dataflow.runtime.units import Duration

from .metric_base import Metric, _AsNumber
from .sampling import RunSample
from .windows import CounterWindow, as_seconds


@attrs.frozen
class ThroughputSnapshot:
    """Throughput at one moment (events per second).

    Example::

        >>> ThroughputSnapshot(current=10.0, per_second=12.0, per_minute=9.0, total=600).total
        600
    """

    current: float = 0.0
    per_second: float = 0.0
    per_minute: float = 0.0
    total: int = 0
    window: float = 60.0
    input_per_second: float = 0.0
    nodes: Mapping[str, float] = attrs.field(factory=dict)


class ThroughputMetric(_AsNumber, Metric):
    """Events per second over sliding 1 s and 1 min windows (and ``window``, for ``current``).

    From a pipeline it counts items the sink accepted (and, as ``input_per_second``, items
    read from the source, plus each node's output rate); from :meth:`MetricsCollector.record`
    one per event.

    Example::

        >>> import trio, trio.testing
        >>> from haive_plugin_observability import MetricsCollector
        >>> async def demo():
        ...     metrics = MetricsCollector({"throughput": ThroughputMetric(window="1m")})
        ...     for _ in range(50):
        ...         for _ in range(20):
        ...             await metrics.record({"n": 1})
        ...         await trio.sleep(0.1)
        ...     t = metrics.throughput
        ...     return t.total, round(t.per_second), round(t.current)
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (1000, 200, 200)
    """

    kind = "throughput"

    def __init__(self, window: Duration = "1m") -> None:
        self.window = as_seconds(window, "ThroughputMetric window")
        self._total = 0
        self._read = 0
        self._second = CounterWindow(1.0, width=2, resolution=0.05)
        self._minute = CounterWindow(60.0, width=2, resolution=1.0)
        if self.window == 1.0:
            self._main = self._second
        elif self.window == 60.0:
            self._main = self._minute
        else:
            self._main = CounterWindow(self.window, width=2)
        self._node_totals: dict[str, int] = {}
        self._nodes: dict[str, CounterWindow] = {}

    def add(
        self, delivered: int, now: float, *, read: int | None = None, sampled: bool = False
    ) -> None:
        """Count ``delivered`` events (and ``read`` source items, default the same) at ``now``.

        ``sampled`` says the counts are a sample of what happened up to ``now`` (the monitor)
        rather than events happening at ``now`` (:meth:`MetricsCollector.record`).
        """
        self._total += delivered
        self._read += delivered if read is None else read
        values = (self._total, self._read)
        windows = [self._second, self._minute]
        if self._main is not self._second and self._main is not self._minute:
            windows.append(self._main)
        for window in windows:
            if sampled:
                window.update(now, values)
            else:
                window.advance(now, values)

    def observe(self, event: Any, now: float) -> None:
        self.add(1, now)

    def observe_sample(self, sample: RunSample, now: float) -> None:
        self.add(sample.delta_processed, now, read=sample.delta_read, sampled=True)
        for node in sample.nodes:
            key = f"{sample.pipeline}/{node.name}"
            total = self._node_totals.get(key, 0) + node.delta_out
            self._node_totals[key] = total
            window = self._nodes.get(key)
            if window is None:
                window = self._nodes[key] = CounterWindow(1.0, width=1, resolution=0.05)
            window.update(now, (total,))

    @property
    def current(self) -> float:
        """Events per second over this metric's ``window``."""
        return self._main.rate(self.fresh_now())[0]

    @property
    def per_second(self) -> float:
        """Events per second over the last second."""
        return self._second.rate(self.fresh_now())[0]

    @property
    def per_minute(self) -> float:
        """Events per second averaged over the last minute."""
        return self._minute.rate(self.fresh_now())[0]

    @property
    def total(self) -> int:
        return self._total

    def snapshot(self, now: float) -> ThroughputSnapshot:
        return ThroughputSnapshot(
            current=self._main.rate(now)[0],
            per_second=self._second.rate(now)[0],
            per_minute=self._minute.rate(now)[0],
            total=self._total,
            window=self.window,
            input_per_second=self._second.rate(now)[1],
            nodes={key: w.rate(now)[0] for key, w in self._nodes.items()},
        )
