"""Observability for haive-dataflow: metrics, Prometheus, alerts, a live dashboard, ``haive top``.

The seed's names (``StreamAnalytics``, ``MetricsCollector``, ``StreamMetrics``, ``ThroughputMetric``,
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

import importlib
from typing import Any

#: Public name -> the submodule defining it. Submodules are imported on first use, so
#: importing this package (plugin discovery does) does not import the dashboard's server,
#: prometheus_client or httpx.
_SUBMODULE: dict[str, str] = {
    "ActiveAlert": "alerts",
    "Alert": "alerts",
    "AlertEvent": "alerts",
    "AlertManager": "alerts",
    "AlertRule": "alerts",
    "DroppingItemsRule": "alerts",
    "ErrorSpikeRule": "alerts",
    "HighLatencyRule": "alerts",
    "QueueSaturationRule": "alerts",
    "StreamAnalytics": "analytics",
    "Dashboard": "dashboard",
    "Histogram": "dashboard",
    "LineChart": "dashboard",
    "Widget": "dashboard",
    "LogHistogram": "hdr",
    "RollingHistogram": "hdr",
    "BackpressureMetric": "backpressure",
    "BackpressureSnapshot": "backpressure",
    "EdgeSnapshot": "backpressure",
    "ErrorRateMetric": "error_rate",
    "ErrorRateSnapshot": "error_rate",
    "LatencyMetric": "latency",
    "LatencySnapshot": "latency",
    "Metric": "metric_base",
    "MetricsCollector": "collector",
    "MetricsSnapshot": "collector",
    "StreamMetrics": "collector",
    "ThroughputMetric": "throughput",
    "ThroughputSnapshot": "throughput",
    "AlertNotifier": "notifiers",
    "CallbackNotifier": "notifiers",
    "LogNotifier": "notifiers",
    "NotifierError": "notifiers",
    "SinkNotifier": "notifiers",
    "WebhookNotifier": "notifiers",
    "ProgressReporter": "progress",
    "SnapshotCollector": "prometheus",
    "render": "prometheus",
    "WebSocketMetric": "websocket",
    "WebSocketSnapshot": "websocket",
}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULE})


__all__ = sorted(_SUBMODULE)
