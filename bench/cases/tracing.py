"""Cost of tracing: the 5-stage pipeline with the tracing plugin absent, off, and on.

The same pipeline as ``pipeline`` and ``metrics``: a source of ints, five trivial ``x + 1``
processors and a counting sink. "absent" builds the registry without the tracing plugin
(``HAIVE_DISABLE_PLUGINS=tracing``), "off" with it loaded and tracing off (its hook answers
``None``), "on" with tracing on at a 1 % parent-based ratio sampler (and at 100 %, for the
record), spans handed to OpenTelemetry's ``BatchSpanProcessor`` and an exporter that drops
them (what a deployment pays, minus the network). Runs alternate and the best of each is
kept, so all see the same machine noise. Rates are items per second of the process's CPU time
(all its threads), which other processes' load moves far less than wall time. Targets: off costs 0 (within noise) against absent,
on at 1 % under 5 %.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from typing import Any

import trio
from haive_plugin_tracing import enable_tracing
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench.cases._shared import five_stage_pipeline
from bench.recorder import Recorder
from haive.dataflow.plugins import get_registry, reset_registry

DESCRIPTION = "tracing absent vs off vs on at 1% on the 5-stage pipeline: events/s, overhead %"


class DroppingExporter(SpanExporter):
    """Counts the spans it is given and keeps none."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def use_registry(with_tracing: bool) -> None:
    """Rebuild the plugin registry with or without the tracing plugin (before timing)."""
    if with_tracing:
        os.environ.pop("HAIVE_DISABLE_PLUGINS", None)
    else:
        os.environ["HAIVE_DISABLE_PLUGINS"] = "tracing"
    reset_registry()
    names = [n for n, plugin in get_registry().plugin_manager.list_name_plugin() if plugin]
    assert ("tracing" in names) == with_tracing, names


def run_once(n: int, ratio: float | None, exporter: DroppingExporter | None = None) -> float:
    pipeline, sink = five_stage_pipeline(n, "bench-tracing")
    tracing: Any = None
    if ratio is not None:
        tracing = enable_tracing(ratio, exporter=exporter)
    try:
        # CPU time of the process (every thread: the span processor's too), not wall
        # time: on a shared machine, others' load moves wall time by 2x between runs.
        started = time.process_time()
        trio.run(pipeline.execute)
        elapsed = time.process_time() - started
    finally:
        if tracing is not None:
            tracing.shutdown()  # flushes: the exporter has every span after this
    assert sink.count == n
    return n / elapsed


def run(rec: Recorder) -> None:
    n = 200_000 if rec.quick else 500_000
    rounds = 5 if rec.quick else 9
    saved = os.environ.get("HAIVE_DISABLE_PLUGINS")
    rates: dict[str, list[float]] = {"absent": [], "off": [], "on_1pct": [], "on_100pct": []}
    exporter = DroppingExporter()
    shuffle = random.Random(18).shuffle
    try:
        for _ in range(rounds):
            order = list(rates)
            shuffle(order)  # no variant always runs first (or right after another)
            for variant in order:
                use_registry(variant != "absent")
                if variant in ("absent", "off"):
                    rates[variant].append(run_once(n, None))
                elif variant == "on_1pct":
                    rates[variant].append(run_once(n, 0.01, exporter))
                else:
                    rates[variant].append(run_once(n, 1.0, DroppingExporter()))
    finally:
        if saved is None:
            os.environ.pop("HAIVE_DISABLE_PLUGINS", None)
        else:
            os.environ["HAIVE_DISABLE_PLUGINS"] = saved
        reset_registry()
    best = {variant: max(values) for variant, values in rates.items()}
    note = f"{n:,} ints, best of {rounds}, per CPU second"
    rec.figure("tracing.absent.events_per_s", best["absent"], "events/s", f"{note}, plugin disabled")
    rec.figure("tracing.off.events_per_s", best["off"], "events/s", "plugin loaded, tracing off")
    rec.figure("tracing.on_1pct.events_per_s", best["on_1pct"], "events/s", "on, 1 % sampled")
    rec.figure("tracing.on_100pct.events_per_s", best["on_100pct"], "events/s", "on, all sampled")

    def overhead(variant: str) -> float:
        return (best["absent"] - best[variant]) / best["absent"] * 100

    rec.figure("tracing.off.overhead_pct", overhead("off"), "%", "vs absent; target 0 (noise)")
    rec.figure("tracing.on_1pct.overhead_pct", overhead("on_1pct"), "%", "vs absent; target < 5")
    rec.figure("tracing.on_100pct.overhead_pct", overhead("on_100pct"), "%", "for the record")
    rec.figure(
        "tracing.on_1pct.spans_per_run", exporter.spans / rounds, "spans", "exported, per run"
    )
