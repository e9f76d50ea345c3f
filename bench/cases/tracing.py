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
    pct, per_run_us = sorted(hook_cost_pct(n) for _ in range(3))[1]  # the median of 3
    rec.figure(
        "tracing.unsampled.hooks_pct", pct, "%", f"hooks timed alone: {per_run_us:,.0f} us per run"
    )


def hook_cost_pct(n: int) -> tuple[float, float]:
    """The tracing plugin's own work in an unsampled run, timed in isolation: each hook's
    cost (the source's receive, a node's batch, a sink write; nothing sampled) times how
    often a run of ``n`` calls it, over that run's CPU time. A figure the machine's load
    moves much less than the end-to-end ratio; it leaves out second-order effects (caches).
    Returns (percent, microseconds per run of hooks)."""
    from haive_plugin_tracing.spans import Marks, SpanInstrumentation, _TracedStep

    from haive.dataflow.runtime.backpressure import BoundedBuffer

    # How many batches each step of an (untraced) run handles.
    pipeline, _ = five_stage_pipeline(n, "bench-tracing-count")

    async def counted() -> tuple[int, int, int]:
        async with pipeline.run() as stream:
            sink_batches = 0
            async for _batch in stream.batches():
                sink_batches += 1
            stats = stream.run.node_stats()
            return stream.run.read, sum(s.batches for s in stats.values()), sink_batches

    started = time.process_time()
    read, node_batches, sink_batches = trio.run(counted)
    run_cpu = time.process_time() - started
    source_batches = -(-read // 1024)

    tracing = enable_tracing(0.0, exporter=DroppingExporter())  # nothing sampled
    try:
        instrumentation = SpanInstrumentation(tracing, "cost")
        marks = Marks()
        instrumentation.entry = [marks]
        batch = list(range(1024))
        reps = 20_000
        started = time.perf_counter()
        for _ in range(reps):
            instrumentation.source_batch(batch, None)
        source_us = (time.perf_counter() - started) / reps * 1e6
        started = time.perf_counter()
        for _ in range(reps):
            marks.produced += 512
            with instrumentation.sink_batch("sink", batch[:512]):
                pass
        instrumentation.output = marks
        sink_us = (time.perf_counter() - started) / reps * 1e6

        async def node_steps(traced: bool) -> float:
            # Small buffers kept small (a buffer's take is cheap only while it is short).
            inbox: BoundedBuffer[int] = BoundedBuffer(64, chunk_size=8)
            out: BoundedBuffer[int] = BoundedBuffer(64, chunk_size=8)
            emit = out.open_producer().put_batch
            step: _TracedStep | None = None
            if traced:
                instrumentation._by_buffer[id(inbox)] = Marks()
                step = _TracedStep(instrumentation, "n", inbox, [Marks()])
            items = list(range(8))
            begun = time.perf_counter()
            for _ in range(reps):
                inbox.put_nowait_batch(items)
                batch = await inbox.get_batch()
                if step is not None:  # what a node's task does per batch while traced
                    step.taken(batch)
                    step.emitting(batch)
                await emit(batch)
                out.get_nowait_batch()
            return time.perf_counter() - begun

        plains: list[float] = []
        traceds: list[float] = []
        for _ in range(7):  # interleaved, best of each: the difference is a few percent
            plains.append(trio.run(node_steps, False))
            traceds.append(trio.run(node_steps, True))
        plain, traced = min(plains), min(traceds)
        node_us = max(0.0, (traced - plain) / reps * 1e6)
    finally:
        tracing.shutdown()
    per_run_us = source_batches * source_us + node_batches * node_us + sink_batches * sink_us
    return per_run_us / (run_cpu * 1e6) * 100, per_run_us
