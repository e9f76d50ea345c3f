"""Cost of observability: the 5-stage pipeline with and without a metrics monitor.

The same pipeline as ``pipeline``: a source of ints, five trivial ``x + 1`` processors and a
counting sink. "On" attaches a ``MetricsCollector`` with the seed's four metrics (sampling
every 0.25 s: node counters, edge buffers and the per-batch flow marks for end-to-end
latency); "off" has no monitor. Runs alternate and the best of each is kept, so both see the
same machine noise. Target: under 10 % overhead.
"""

from __future__ import annotations

import time

import trio
from haive_plugin_observability import (
    BackpressureMetric,
    ErrorRateMetric,
    LatencyMetric,
    MetricsCollector,
    ThroughputMetric,
)

from bench.cases._shared import STAGES, five_stage_pipeline
from bench.recorder import Recorder
from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sources import IterableSource

DESCRIPTION = "metrics on vs off on the 5-stage pipeline: events/s and overhead %"


def collector() -> MetricsCollector:
    return MetricsCollector(
        {
            "throughput": ThroughputMetric(window="1m"),
            "latency": LatencyMetric(percentiles=[50, 95, 99]),
            "error_rate": ErrorRateMetric(threshold=0.01),
            "backpressure": BackpressureMetric(),
        }
    )


def run_once(n: int, metrics: MetricsCollector | None) -> float:
    pipeline, sink = five_stage_pipeline(n, "bench-metrics")
    if metrics is not None:
        pipeline.add_monitor(metrics)

    async def main() -> None:
        await pipeline.execute()
        if metrics is not None:
            snapshot = metrics.get_current()
            assert snapshot.throughput.total == n
            assert snapshot.latency.total_count == n

    started = time.perf_counter()
    trio.run(main)
    elapsed = time.perf_counter() - started
    assert sink.count == n
    return n / elapsed


def run(rec: Recorder) -> None:
    n = 200_000 if rec.quick else 1_000_000
    rounds = 2 if rec.quick else 3
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        off.append(run_once(n, None))
        on.append(run_once(n, collector()))
    best_off, best_on = max(off), max(on)
    rec.figure("metrics.off.events_per_s", best_off, "events/s", f"{n:,} ints, best of {rounds}")
    rec.figure("metrics.on.events_per_s", best_on, "events/s", "MetricsCollector monitor attached")
    rec.figure("metrics.overhead_pct", (best_off - best_on) / best_off * 100, "%", "target < 10")

    async def sample_cost() -> float:
        metrics = collector()
        pipeline = StreamingPipeline("bench-sample")
        pipeline.set_source(IterableSource(range(10_000)))
        for _ in range(STAGES):
            pipeline.add_processor(lambda x: x + 1)
        pipeline.add_monitor(metrics)
        await pipeline.execute()
        started = time.perf_counter()
        for _ in range(200):
            metrics.get_current()
        return (time.perf_counter() - started) / 200 * 1e6

    rec.figure("metrics.snapshot_us", trio.run(sample_cost), "us", "get_current() of a 5-stage run")

    async def record_cost() -> float:
        metrics = collector()
        events = [{"latency_ms": i % 100, "success": i % 50 != 0} for i in range(50_000)]
        started = time.perf_counter()
        for event in events:
            metrics.record_nowait(event)
        return len(events) / (time.perf_counter() - started)

    rec.figure(
        "metrics.record.events_per_s", trio.run(record_cost), "events/s", "per-event record() API"
    )
