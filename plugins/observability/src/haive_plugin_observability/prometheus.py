"""Prometheus text exposition of a metrics snapshot (served at ``/metrics`` by the dashboard).

Built on ``prometheus_client``'s custom-collector API, so the output follows the text format
exactly and :class:`SnapshotCollector` can also be registered in an application's own
``prometheus_client`` registry. Names:

* ``haive_pipeline_items_{read,processed,failed}_total{pipeline}``, ``haive_pipeline_running``
* ``haive_node_items_{in,out}_total``, ``haive_node_{errors,retries,batches}_total``,
  ``haive_node_busy_seconds_total``, ``haive_node_in_progress``, ``haive_node_queue_depth``
  and ``haive_node_latency_seconds{quantile}`` — labels ``pipeline``, ``node``
* ``haive_edge_{depth,capacity,max_depth}``, ``haive_edge_dropped_total``,
  ``haive_edge_blocked_total``, ``haive_edge_blocked_seconds_total``,
  ``haive_edge_blocked_fraction`` — label ``edge``
* ``haive_throughput_events_per_second{metric,window}``, ``haive_throughput_events_total``
* ``haive_latency_seconds`` (a histogram over the whole run) and
  ``haive_latency_window_seconds{metric,quantile}`` (percentiles over the window)
* ``haive_error_rate{metric}``, ``haive_error_rate_threshold``, ``haive_errors_total``
* ``haive_websocket_connections``, ``haive_websocket_room_members{room}`` and message
  counters, from a :class:`~.websocket.WebSocketMetric`
* ``haive_alerts_active{rule,severity}``; extra gauges as ``haive_<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .backpressure import BackpressureSnapshot
from .collector import MetricsCollector, MetricsSnapshot
from .error_rate import ErrorRateSnapshot
from .latency import PROMETHEUS_LATENCY_BOUNDS, LatencySnapshot
from .throughput import ThroughputSnapshot
from .websocket import WebSocketSnapshot

CONTENT_TYPE = CONTENT_TYPE_LATEST
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(text: str) -> str:
    """A valid Prometheus metric name from free text.

    Example::

        >>> metric_name("websocket.rooms-active")
        'haive_websocket_rooms_active'
    """
    return "haive_" + _UNSAFE.sub("_", text).strip("_")


def _split(key: str) -> tuple[str, str]:
    pipeline, _, name = key.partition("/")
    return (pipeline, name) if name else ("", pipeline)


class SnapshotCollector:
    """A ``prometheus_client`` collector reading a snapshot at every scrape.

    ``source`` is a :class:`~.metrics.MetricsCollector` (sampled at scrape time, so scrape
    from inside the trio run: the dashboard's ``/metrics`` does) or any callable returning a
    :class:`~.metrics.MetricsSnapshot`.

    Example::

        >>> from haive_plugin_observability.metrics import ThroughputSnapshot
        >>> snap = MetricsSnapshot(time=0.0, values={"throughput": ThroughputSnapshot(per_second=5.0, total=9)})
        >>> print(render(snap).decode().split("\\n# HELP")[0])
        # HELP haive_throughput_events_per_second Events per second over a sliding window.
        # TYPE haive_throughput_events_per_second gauge
        haive_throughput_events_per_second{metric="throughput",window="1s"} 5.0
        haive_throughput_events_per_second{metric="throughput",window="1m"} 0.0
    """

    def __init__(
        self,
        source: MetricsCollector | Callable[[], MetricsSnapshot],
        alerts: Any = None,
    ) -> None:
        self._source = source
        self._alerts = alerts

    def _snapshot(self) -> MetricsSnapshot:
        if isinstance(self._source, MetricsCollector):
            return self._source.get_current()
        return self._source()

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from _pipelines(snap)
        for name, value in snap.values.items():
            if isinstance(value, ThroughputSnapshot):
                yield from _throughput(name, value)
            elif isinstance(value, LatencySnapshot):
                yield from _latency(name, value)
            elif isinstance(value, ErrorRateSnapshot):
                yield from _errors(name, value)
            elif isinstance(value, BackpressureSnapshot):
                yield from _edges(name, value)
            elif isinstance(value, WebSocketSnapshot):
                yield from _websocket(name, value)
        for key, value in sorted(snap.gauges.items()):
            gauge = GaugeMetricFamily(metric_name(key), f"Live figure {key}.")
            gauge.add_metric([], value)
            yield gauge
        if self._alerts is not None:
            active = GaugeMetricFamily(
                "haive_alerts_active",
                "1 for every alert whose condition holds.",
                labels=["rule", "severity"],
            )
            for rule, alert in sorted(self._alerts.active.items()):
                active.add_metric([rule, alert.alert.severity], 1.0)
            yield active
            evaluations = CounterMetricFamily(
                "haive_alert_evaluations", "Alert rule evaluation rounds."
            )
            evaluations.add_metric([], self._alerts.evaluations)
            yield evaluations


def _pipelines(snap: MetricsSnapshot) -> Iterator[Metric]:
    if not snap.pipelines:
        return
    labels = ["pipeline"]
    read = CounterMetricFamily(
        "haive_pipeline_items_read", "Items read from the source.", labels=labels
    )
    processed = CounterMetricFamily(
        "haive_pipeline_items_processed", "Items delivered to the sink.", labels=labels
    )
    failed = CounterMetricFamily(
        "haive_pipeline_items_failed", "Items that failed for good.", labels=labels
    )
    running = GaugeMetricFamily(
        "haive_pipeline_running", "1 while the pipeline runs.", labels=labels
    )
    node_labels = ["pipeline", "node"]
    families: dict[str, Any] = {
        "items_in": CounterMetricFamily(
            "haive_node_items_in", "Items a node took in.", labels=node_labels
        ),
        "items_out": CounterMetricFamily(
            "haive_node_items_out", "Items a node emitted.", labels=node_labels
        ),
        "errors": CounterMetricFamily(
            "haive_node_errors", "Items that failed in a node.", labels=node_labels
        ),
        "retries": CounterMetricFamily(
            "haive_node_retries", "Retries in a node.", labels=node_labels
        ),
        "batches": CounterMetricFamily(
            "haive_node_batches", "Batches a node processed.", labels=node_labels
        ),
        "busy_seconds": CounterMetricFamily(
            "haive_node_busy_seconds",
            "Seconds a node spent processing batches.",
            labels=node_labels,
        ),
        "in_progress": GaugeMetricFamily(
            "haive_node_in_progress", "Items a node is processing now.", labels=node_labels
        ),
        "depth": GaugeMetricFamily(
            "haive_node_queue_depth", "Items waiting in a node's input edge.", labels=node_labels
        ),
    }
    for name, sample in sorted(snap.pipelines.items()):
        read.add_metric([name], sample.read)
        processed.add_metric([name], sample.processed)
        failed.add_metric([name], sample.failed)
        running.add_metric([name], 1.0 if sample.running else 0.0)
        for node in sample.nodes:
            for field, family in families.items():
                family.add_metric([name, node.name], getattr(node, field))
    yield from (read, processed, failed, running, *families.values())


def _throughput(name: str, value: ThroughputSnapshot) -> Iterator[Metric]:
    rate = GaugeMetricFamily(
        "haive_throughput_events_per_second",
        "Events per second over a sliding window.",
        labels=["metric", "window"],
    )
    rate.add_metric([name, "1s"], value.per_second)
    rate.add_metric([name, "1m"], value.per_minute)
    if value.window not in (1.0, 60.0):
        rate.add_metric([name, f"{value.window:g}s"], value.current)
    yield rate
    total = CounterMetricFamily("haive_throughput_events", "Events counted.", labels=["metric"])
    total.add_metric([name], value.total)
    yield total


def _latency(name: str, value: LatencySnapshot) -> Iterator[Metric]:
    bounds_us = [b * 1e6 for b in PROMETHEUS_LATENCY_BOUNDS]
    cumulative = value.cumulative.count_at_or_below(bounds_us)
    buckets: list[tuple[str, float]] = [
        (f"{bound:g}", float(n))
        for bound, n in zip(PROMETHEUS_LATENCY_BOUNDS, cumulative, strict=True)
    ]
    buckets.append(("+Inf", float(value.cumulative.count)))
    hist = HistogramMetricFamily(
        "haive_latency_seconds", "End-to-end latency since the start.", labels=["metric"]
    )
    hist.add_metric([name], buckets, value.cumulative.total / 1e6)
    yield hist
    window = GaugeMetricFamily(
        "haive_latency_window_seconds",
        "End-to-end latency percentiles over the sliding window.",
        labels=["metric", "quantile"],
    )
    for pname, ms in value.percentiles.items():
        quantile = float(pname[1:].replace("_", ".")) / 100
        window.add_metric([name, f"{quantile:g}"], ms / 1000.0)
    yield window
    if value.nodes:
        nodes = GaugeMetricFamily(
            "haive_node_latency_seconds",
            "Estimated time items spend in a node (queue wait + service), over the window.",
            labels=["pipeline", "node", "quantile"],
        )
        for key, node in sorted(value.nodes.items()):
            pipeline, node_name = _split(key)
            for label, node_ms in (("0.5", node.p50), ("0.95", node.p95), ("0.99", node.p99)):
                nodes.add_metric([pipeline, node_name, label], node_ms / 1000.0)
        yield nodes


def _errors(name: str, value: ErrorRateSnapshot) -> Iterator[Metric]:
    rate = GaugeMetricFamily(
        "haive_error_rate", "Failed share of items over the window.", labels=["metric"]
    )
    rate.add_metric([name], value.current)
    yield rate
    threshold = GaugeMetricFamily(
        "haive_error_rate_threshold",
        "Error rate above which the metric is exceeded.",
        labels=["metric"],
    )
    threshold.add_metric([name], value.threshold)
    yield threshold
    errors = CounterMetricFamily("haive_errors", "Failed items counted.", labels=["metric"])
    errors.add_metric([name], value.errors)
    yield errors


def _edges(name: str, value: BackpressureSnapshot) -> Iterator[Metric]:
    labels = ["edge"]
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "depth": GaugeMetricFamily("haive_edge_depth", "Items buffered in an edge.", labels=labels),
        "capacity": GaugeMetricFamily("haive_edge_capacity", "Capacity of an edge.", labels=labels),
        "max_depth": GaugeMetricFamily(
            "haive_edge_max_depth", "Deepest an edge has been.", labels=labels
        ),
        "dropped": CounterMetricFamily(
            "haive_edge_dropped", "Items an edge dropped.", labels=labels
        ),
        "blocked_count": CounterMetricFamily(
            "haive_edge_blocked", "Times a producer blocked on a full edge.", labels=labels
        ),
        "blocked_seconds": CounterMetricFamily(
            "haive_edge_blocked_seconds",
            "Seconds producers spent blocked on an edge.",
            labels=labels,
        ),
        "blocked_fraction": GaugeMetricFamily(
            "haive_edge_blocked_fraction",
            "Share of the window producers spent blocked.",
            labels=labels,
        ),
    }
    for key, edge in sorted(value.edges.items()):
        for field, family in families.items():
            family.add_metric([key], getattr(edge, field))
    yield from families.values()


def _websocket(name: str, value: WebSocketSnapshot) -> Iterator[Metric]:
    labels = ["metric"]
    connections = GaugeMetricFamily(
        "haive_websocket_connections", "Open WebSocket connections.", labels=labels
    )
    connections.add_metric([name], value.connections)
    yield connections
    for field, doc in (
        ("connections_opened", "WebSocket connections accepted."),
        ("messages_received", "WebSocket messages received."),
        ("messages_sent", "WebSocket messages sent."),
        ("dropped_outbound", "Outbound WebSocket messages dropped for slow clients."),
    ):
        counter = CounterMetricFamily(f"haive_websocket_{field}", doc, labels=labels)
        counter.add_metric([name], getattr(value, field))
        yield counter
    rooms = GaugeMetricFamily(
        "haive_websocket_room_members", "Members of each WebSocket room.", labels=["metric", "room"]
    )
    for room, members in value.rooms.items():
        rooms.add_metric([name, room], members)
    yield rooms


def render(snapshot: MetricsSnapshot, alerts: Any = None) -> bytes:
    """The Prometheus text exposition of ``snapshot`` (and active ``alerts``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot, alerts))
    return generate_latest(registry)
