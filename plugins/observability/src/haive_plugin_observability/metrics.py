"""The seed's metrics API: ``MetricsCollector`` and the metrics it holds.

Two ways feed a collector, and both can be used at once:

* ``pipeline.add_monitor(metrics)``: the collector samples the running pipeline's counters
  on its own schedule (``interval``, default 0.25 s) — no hook runs per item;
* ``await metrics.record(event)``: the seed's per-event API for streams the collector does
  not run itself (results, events, dicts with ``latency_ms``...).

Every metric answers at once (``metrics.latency.p99``, ``metrics.error_rate.current``) and
``metrics.get_current()`` returns an immutable :class:`MetricsSnapshot` with the same
attribute shape, which alert rules, the dashboard and the Prometheus endpoint consume.
Time is trio's clock, so every window is testable under ``trio.testing.MockClock``.

The code lives in single-purpose modules, re-exported here so that every import from this
module keeps working: :mod:`.metric_base` (``Metric``), :mod:`.event_fields`
(``latency_of``, ``is_error``), one module per metric with its snapshot
(:mod:`.throughput`, :mod:`.latency`, :mod:`.error_rate`, :mod:`.backpressure`) and
:mod:`.collector` (``MetricsCollector``, ``MetricsSnapshot``, ``default_metrics``).
"""

from __future__ import annotations

# The private names (``import _x as _x``) stay importable from here too, as before the split.
from .backpressure import BackpressureMetric, BackpressureSnapshot, EdgeSnapshot
from .backpressure import _EdgeState as _EdgeState
from .collector import MetricsCollector, MetricsSnapshot, default_metrics
from .collector import _coarse as _coarse
from .collector import _kind_of as _kind_of
from .collector import _plain as _plain
from .error_rate import ErrorRateMetric, ErrorRateSnapshot
from .event_fields import _field as _field
from .event_fields import is_error, latency_of
from .latency import (
    PROMETHEUS_LATENCY_BOUNDS,
    LatencyMetric,
    LatencySnapshot,
    NodeLatencySnapshot,
)
from .latency import _pname as _pname
from .metric_base import Clock, Metric
from .metric_base import _AsNumber as _AsNumber
from .metric_base import _default_clock as _default_clock
from .throughput import ThroughputMetric, ThroughputSnapshot

__all__ = [
    "PROMETHEUS_LATENCY_BOUNDS",
    "BackpressureMetric",
    "BackpressureSnapshot",
    "Clock",
    "EdgeSnapshot",
    "ErrorRateMetric",
    "ErrorRateSnapshot",
    "LatencyMetric",
    "LatencySnapshot",
    "Metric",
    "MetricsCollector",
    "MetricsSnapshot",
    "NodeLatencySnapshot",
    "ThroughputMetric",
    "ThroughputSnapshot",
    "default_metrics",
    "is_error",
    "latency_of",
]
