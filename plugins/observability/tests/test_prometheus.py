"""The Prometheus exposition parses with prometheus_client's own parser and adds up."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from haive_plugin_observability import (
    Alert,
    AlertManager,
    MetricsCollector,
    SnapshotCollector,
    render,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from haive.dataflow import StreamingPipeline, TransformNode

from .conftest import PacedSource


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_exposition_of_a_monitored_pipeline(autojump_clock: Any) -> None:
    metrics = MetricsCollector()
    pipeline = StreamingPipeline("prom", on_error="skip")
    pipeline.set_source(PacedSource(200, every=0.05, batch=10))

    async def work(x: int) -> int:
        await trio.sleep(0.001)
        if x % 100 == 0:
            raise ValueError("bad")
        return x

    pipeline.add_processor(TransformNode(name="work", transform_fn=work))
    pipeline.add_monitor(metrics)
    await pipeline.execute()
    alerts = AlertManager()
    alerts.add_rule(lambda m: Alert("warning", "w"), name="always")
    await alerts.evaluate(metrics)

    s = samples(render(metrics.get_current(), alerts))
    assert s[("haive_pipeline_items_read_total", (("pipeline", "prom"),))] == 200
    assert s[("haive_pipeline_items_processed_total", (("pipeline", "prom"),))] == 198
    assert s[("haive_pipeline_running", (("pipeline", "prom"),))] == 0
    assert s[("haive_node_errors_total", (("node", "work"), ("pipeline", "prom")))] == 2
    assert s[("haive_node_items_in_total", (("node", "work"), ("pipeline", "prom")))] == 200
    assert s[("haive_errors_total", (("metric", "error_rate"),))] == 2
    assert s[("haive_error_rate", (("metric", "error_rate"),))] == pytest.approx(0.01)
    assert s[("haive_edge_capacity", (("edge", "prom/work.in"),))] == 1024
    assert s[("haive_edge_dropped_total", (("edge", "prom/output"),))] == 0
    assert s[("haive_alerts_active", (("rule", "always"), ("severity", "warning")))] == 1
    # The histogram is cumulative and complete.
    count = s[("haive_latency_seconds_count", (("metric", "latency"),))]
    assert count == 198
    assert s[("haive_latency_seconds_bucket", (("le", "+Inf"), ("metric", "latency")))] == count
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in s.items()
        if name == "haive_latency_seconds_bucket" and dict(labels)["le"] != "+Inf"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    # Each batch of 10 takes 10 ms through the 1 ms-per-item node and leaves as a batch; the
    # two failed items make the FIFO matching approximate by up to one batch (50 ms).
    assert dict(buckets)[0.0001] == 0 and dict(buckets)[0.1] == count
    assert dict(buckets)[0.01] >= count * 0.8
    assert (
        s[("haive_latency_window_seconds", (("metric", "latency"), ("quantile", "0.5")))] <= 0.0102
    )


async def test_snapshot_collector_in_an_application_registry(autojump_clock: Any) -> None:
    metrics = MetricsCollector()
    await metrics.record({"latency_ms": 5})
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(metrics))
    text = generate_latest(registry)
    assert b'haive_throughput_events_total{metric="throughput"} 1.0' in text
    assert b"haive_latency_seconds_bucket" in text
