"""Error rate: :class:`ErrorRateMetric` (the share of items that fail, over a sliding
window) and its :class:`ErrorRateSnapshot`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .event_fields import is_error
from .metric_base import Metric, _AsNumber
from .sampling import RunSample
from .windows import CounterWindow, as_seconds


@attrs.frozen
class ErrorRateSnapshot:
    """Share of failed items over the window, and totals.

    Example::

        >>> ErrorRateSnapshot(current=0.02, threshold=0.01).exceeded
        True
    """

    current: float = 0.0
    threshold: float = 0.01
    errors: int = 0
    total: int = 0
    window: float = 60.0
    nodes: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def exceeded(self) -> bool:
        return self.current > self.threshold


class ErrorRateMetric(_AsNumber, Metric):
    """Share of items that fail, over a sliding window; ``exceeded`` past ``threshold``.

    From a pipeline each node's own share (errors / items it took in, over the window) is
    measured, and the pipeline's is the chance an item fails in any node,
    ``1 - prod(1 - node_share)``: a slow node downstream does not dilute its errors by items
    still queued before it. Several pipelines (and recorded events) are averaged, weighted by
    the items each read in the window. Node counters move per batch, so a node working
    through a large batch counts all of it as taken before its errors show: keep
    ``chunk_size`` modest for slow nodes. From :meth:`MetricsCollector.record`: events for
    which :func:`is_error` holds, over all events.

    Example::

        >>> import trio, trio.testing
        >>> from haive_plugin_observability import MetricsCollector
        >>> async def demo():
        ...     metrics = MetricsCollector({"error_rate": ErrorRateMetric(threshold=0.01)})
        ...     for i in range(100):
        ...         await metrics.record({"success": i % 25 != 0})
        ...     return metrics.error_rate.current, metrics.error_rate.exceeded
        >>> trio.run(demo, clock=trio.testing.MockClock(autojump_threshold=0))
        (0.04, True)
    """

    kind = "error_rate"

    def __init__(self, threshold: float = 0.01, *, window: Duration = "1m") -> None:
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 <= threshold <= 1
        ):
            raise ConfigError(
                f"ErrorRateMetric: threshold must be a fraction in [0, 1], got {threshold!r}"
            )
        self.threshold = float(threshold)
        self.window = as_seconds(window, "ErrorRateMetric window")
        self._attempts = 0
        self._errors = 0
        self._events = CounterWindow(self.window, width=2)
        self._event_totals = (0, 0)
        #: pipeline -> (items read so far, window of it)
        self._reads: dict[str, tuple[int, CounterWindow]] = {}
        #: pipeline -> node -> window of the node's (items_in, errors)
        self._node_windows: dict[str, dict[str, CounterWindow]] = {}
        self._nodes: dict[str, int] = {}

    def add(self, attempts: int, errors: int, now: float) -> None:
        """Count ``attempts`` recorded events of which ``errors`` failed, at ``now``."""
        self._attempts += attempts
        self._errors += errors
        attempts_total, errors_total = self._event_totals
        self._event_totals = (attempts_total + attempts, errors_total + errors)
        self._events.advance(now, self._event_totals)

    def observe(self, event: Any, now: float) -> None:
        self.add(1, 1 if is_error(event) else 0, now)

    def observe_sample(self, sample: RunSample, now: float) -> None:
        self._attempts += max(sample.delta_read, 0)
        self._errors += max(sample.delta_errors, 0)
        read, window = self._reads.get(sample.pipeline, (0, None))
        if window is None:
            window = CounterWindow(self.window, width=1)
        read += max(sample.delta_read, 0)
        window.update(now, (read,))
        self._reads[sample.pipeline] = (read, window)
        nodes = self._node_windows.setdefault(sample.pipeline, {})
        for node in sample.nodes:
            node_window = nodes.get(node.name)
            if node_window is None:
                node_window = nodes[node.name] = CounterWindow(self.window, width=2)
            node_window.update(now, (node.items_in, node.errors))
            if node.errors:
                self._nodes[f"{sample.pipeline}/{node.name}"] = node.errors

    def _rate(self, now: float) -> float:
        weighted = 0.0
        weights = 0.0
        attempts, errors = self._events.delta(now)
        if attempts > 0:
            weighted += errors
            weights += attempts
        for pipeline, nodes in self._node_windows.items():
            survive = 1.0
            busiest = 0.0
            for node_window in nodes.values():
                items_in, node_errors = node_window.delta(now)
                busiest = max(busiest, items_in)
                if items_in > 0 and node_errors > 0:
                    survive *= 1.0 - min(1.0, node_errors / items_in)
            weight = self._reads[pipeline][1].delta(now)[0] if pipeline in self._reads else 0
            weight = weight or busiest
            if weight > 0:
                weighted += (1.0 - survive) * weight
                weights += weight
        return min(1.0, weighted / weights) if weights > 0 else 0.0

    @property
    def current(self) -> float:
        """Failed share over the window (0..1)."""
        return self._rate(self.fresh_now())

    @property
    def exceeded(self) -> bool:
        return self.current > self.threshold

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def total(self) -> int:
        return self._attempts

    def snapshot(self, now: float) -> ErrorRateSnapshot:
        return ErrorRateSnapshot(
            current=self._rate(now),
            threshold=self.threshold,
            errors=self._errors,
            total=self._attempts,
            window=self.window,
            nodes=dict(self._nodes),
        )
