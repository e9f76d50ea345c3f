"""Observability for haive-dataflow: metrics, Prometheus, alerts, a live dashboard, ``haive top``.

The seed's names (``StreamAnalytics``, ``MetricsCollector``, ``ThroughputMetric``,
``LatencyMetric``, ``ErrorRateMetric``, ``BackpressureMetric``, ``AlertManager``, ``Alert``,
``Dashboard``, ``LineChart``, ``Histogram``) are also importable from
``haive.dataflow.streaming``.

Example::

    >>> import haive_plugin_observability
    >>> from haive.dataflow.streaming import MetricsCollector, Dashboard
    >>> MetricsCollector is haive_plugin_observability.MetricsCollector
    True
"""

from __future__ import annotations

from .alerts import (
    ActiveAlert,
    Alert,
    AlertEvent,
    AlertManager,
    AlertRule,
    DroppingItemsRule,
    ErrorSpikeRule,
    HighLatencyRule,
    QueueSaturationRule,
)
from .analytics import StreamAnalytics
from .dashboard import Dashboard, Histogram, LineChart, Widget
from .hdr import LogHistogram, RollingHistogram
from .metrics import (
    BackpressureMetric,
    BackpressureSnapshot,
    EdgeSnapshot,
    ErrorRateMetric,
    ErrorRateSnapshot,
    LatencyMetric,
    LatencySnapshot,
    Metric,
    MetricsCollector,
    MetricsSnapshot,
    ThroughputMetric,
    ThroughputSnapshot,
)
from .notifiers import (
    AlertNotifier,
    CallbackNotifier,
    LogNotifier,
    NotifierError,
    SinkNotifier,
    WebhookNotifier,
)
from .progress import ProgressReporter
from .prometheus import SnapshotCollector, render
from .websocket import WebSocketMetric, WebSocketSnapshot

__all__ = [
    "ActiveAlert",
    "Alert",
    "AlertEvent",
    "AlertManager",
    "AlertNotifier",
    "AlertRule",
    "BackpressureMetric",
    "BackpressureSnapshot",
    "CallbackNotifier",
    "Dashboard",
    "DroppingItemsRule",
    "EdgeSnapshot",
    "ErrorRateMetric",
    "ErrorRateSnapshot",
    "ErrorSpikeRule",
    "HighLatencyRule",
    "Histogram",
    "LatencyMetric",
    "LatencySnapshot",
    "LineChart",
    "LogHistogram",
    "LogNotifier",
    "Metric",
    "MetricsCollector",
    "MetricsSnapshot",
    "NotifierError",
    "ProgressReporter",
    "QueueSaturationRule",
    "RollingHistogram",
    "SinkNotifier",
    "SnapshotCollector",
    "StreamAnalytics",
    "ThroughputMetric",
    "ThroughputSnapshot",
    "WebSocketMetric",
    "WebSocketSnapshot",
    "WebhookNotifier",
    "Widget",
    "render",
]
