"""Hook implementations: what this plugin adds to haive-dataflow."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from haive.dataflow import hookimpl

_PACKAGE = "haive_plugin_observability"

#: Public names added to ``haive.dataflow.streaming`` (imported only when first used).
EXPORTS: dict[str, str] = {
    "StreamAnalytics": f"{_PACKAGE}.analytics:StreamAnalytics",
    "MetricsCollector": f"{_PACKAGE}.collector:MetricsCollector",
    "StreamMetrics": f"{_PACKAGE}.collector:StreamMetrics",
    "ThroughputMetric": f"{_PACKAGE}.throughput:ThroughputMetric",
    "LatencyMetric": f"{_PACKAGE}.latency:LatencyMetric",
    "ErrorRateMetric": f"{_PACKAGE}.error_rate:ErrorRateMetric",
    "BackpressureMetric": f"{_PACKAGE}.backpressure:BackpressureMetric",
    "AlertManager": f"{_PACKAGE}.alerts:AlertManager",
    "Alert": f"{_PACKAGE}.alerts:Alert",
    "Dashboard": f"{_PACKAGE}.dashboard:Dashboard",
    "LineChart": f"{_PACKAGE}.dashboard:LineChart",
    "Histogram": f"{_PACKAGE}.dashboard:Histogram",
}


@hookimpl
def haive_streaming_exports() -> Mapping[str, str]:
    return EXPORTS


@hookimpl
def haive_register_alert_rules() -> Iterable[type[Any]]:
    from .alerts import BUILTIN_RULES

    return BUILTIN_RULES


@hookimpl
def haive_register_alert_notifiers() -> Iterable[type[Any]]:
    from .notifiers import BUILTIN_NOTIFIERS

    return BUILTIN_NOTIFIERS


@hookimpl
def haive_register_cli_commands() -> Iterable[type[Any]]:
    from .top import TopCommand

    return [TopCommand]


@hookimpl
def haive_run_services(pipeline: Any) -> Any:
    from .analytics import dashboard_service

    return dashboard_service(pipeline)
