"""The plugin's registrations: streaming exports, rules, notifiers, CLI command."""

from __future__ import annotations

import importlib

import haive_plugin_observability as obs

from haive.dataflow.plugins import get_registry
from haive.dataflow.plugins.catalogue import exporter_of

SEED_NAMES = [
    "StreamAnalytics",
    "MetricsCollector",
    "ThroughputMetric",
    "LatencyMetric",
    "ErrorRateMetric",
    "BackpressureMetric",
    "AlertManager",
    "Alert",
    "Dashboard",
    "LineChart",
    "Histogram",
]


def test_seed_names_resolve_from_haive_dataflow_streaming() -> None:
    streaming = importlib.import_module("haive.dataflow.streaming")
    for name in SEED_NAMES:
        assert getattr(streaming, name) is getattr(obs, name), name
        assert exporter_of(name).distribution == "haive-plugin-observability"
        assert name in dir(streaming)


def test_the_plugin_is_listed_with_what_it_provides() -> None:
    plugins = {name: (dist, items) for name, dist, items in get_registry().plugins()}
    dist, items = plugins["observability"]
    assert dist == "haive-plugin-observability"
    provided = {(p.kind, p.name) for p in items}
    assert {
        ("alert_rule", "high_latency"),
        ("alert_rule", "error_spike"),
        ("alert_notifier", "webhook"),
        ("alert_notifier", "log"),
        ("cli_command", "top"),
    } <= provided
