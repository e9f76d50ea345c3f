"""Windowed aggregation next to Bytewax: per-key counts and sums in 1 s tumbling windows.

1,000,000 keyed events (1,000 keys, event time advancing 10,000 events per second, so 100
windows of 1 s), each ``{"key", "ts", "value"}``. Ours: a ``StreamingPipeline`` with an
``IterableSource``, a ``WindowedAggregateNode(TumblingWindow("1s"), key="key",
timestamp="ts", aggregate=Sum("value"))`` (each result carries count and sum) and a
``MemorySink``. Bytewax (``pip install bytewax``): ``TestingSource`` -> ``fold_window`` with
an ``EventClock`` and a ``TumblingWindower`` (count and sum in the fold) -> ``TestingSink``,
run by its local runner ``bytewax.testing.run_main`` in a subprocess. Both get the same
events (Bytewax's with ``datetime`` timestamps made before timing, as its clock requires);
only the dataflow run is timed. Bytewax's ``wait_for_system_duration`` is 200 ms: with 0 its
system-time watermark drops a few percent of these in-order events as late. Both runs'
totals are compared (windows, events counted, value sum).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time

import trio

from bench.recorder import Recorder
from haive.dataflow import StreamConfig, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.state import Sum, TumblingWindow, WindowedAggregateNode

DESCRIPTION = "1M keyed events, per-key count+sum in 1 s tumbling event-time windows, vs Bytewax"

KEYS = 1000
EVENTS_PER_SECOND = 10_000


def make_events(n: int) -> list[dict[str, object]]:
    rnd = random.Random(1)
    return [
        {"key": f"k{rnd.randrange(KEYS)}", "ts": i / EVENTS_PER_SECOND, "value": rnd.randrange(100)}
        for i in range(n)
    ]


def run_ours(events: list[dict[str, object]]) -> tuple[float, dict[str, int]]:
    pipeline = StreamingPipeline("bench-windows", config=StreamConfig(chunk_size=4096))
    pipeline.set_source(IterableSource(events))
    pipeline.add_node(
        WindowedAggregateNode(
            name="tumbling",
            window=TumblingWindow("1s"),
            key="key",
            timestamp="ts",
            aggregate=Sum("value"),
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    totals = {
        "windows": len(sink.items),
        "events": sum(r.count for r in sink.items),
        "value_sum": sum(r.value for r in sink.items),
    }
    return len(events) / elapsed, totals


_BYTEWAX = textwrap.dedent(
    """
    import json, random, sys, time
    from datetime import datetime, timedelta, timezone
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    n, keys, per_second = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rnd = random.Random(1)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    events = []
    for i in range(n):
        key = f"k{rnd.randrange(keys)}"
        events.append((key, (t0 + timedelta(seconds=i / per_second), rnd.randrange(100))))

    flow = Dataflow("tumbling")
    stream = op.input("in", flow, TestingSource(events, batch_size=4096))
    clock = win.EventClock(lambda v: v[0], wait_for_system_duration=timedelta(milliseconds=200))
    windower = win.TumblingWindower(length=timedelta(seconds=1), align_to=t0)
    folded = win.fold_window(
        "count_sum", stream, clock, windower,
        lambda: (0, 0),
        lambda acc, v: (acc[0] + 1, acc[1] + v[1]),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
    )
    out = []
    op.output("out", folded.down, TestingSink(out))
    started = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "events_per_s": n / elapsed,
        "windows": len(out),
        "events": sum(acc[0] for _key, (_wid, acc) in out),
        "value_sum": sum(acc[1] for _key, (_wid, acc) in out),
    }))
    """
)


def run_bytewax(n: int) -> dict[str, float] | None:
    try:
        import bytewax  # noqa: F401
    except ImportError:
        print("  bytewax is not installed (pip install -r bench/requirements.txt): skipped")
        return None
    proc = subprocess.run(
        [sys.executable, "-c", _BYTEWAX, str(n), str(KEYS), str(EVENTS_PER_SECOND)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        print(f"  bytewax run failed:\n{proc.stderr[-2000:]}")
        return None
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(rec: Recorder) -> None:
    n = 100_000 if rec.quick else 1_000_000
    events = make_events(n)
    ours = 0.0
    totals: dict[str, int] = {}
    for _ in range(2):  # best of two (the machine is shared), as for Bytewax below
        rate, totals = run_ours(events)
        ours = max(ours, rate)
    rec.figure("windows.tumbling_1s.events_per_s", ours, "events/s", f"{n:,} events, {KEYS} keys")
    rec.figure("windows.tumbling_1s.windows", totals["windows"], "windows")
    # The same repetitions on both sides: best of two for Bytewax too.
    theirs = None
    for _ in range(2):
        attempt = run_bytewax(n)
        if attempt is None:
            return
        if theirs is None or attempt["events_per_s"] > theirs["events_per_s"]:
            theirs = attempt
    assert theirs is not None
    agree = all(theirs[k] == totals[k] for k in ("windows", "events", "value_sum"))
    note = "same totals" if agree else f"totals differ: ours {totals}, bytewax {theirs}"
    rec.figure("windows.tumbling_1s.bytewax_events_per_s", theirs["events_per_s"], "events/s", note)
    rec.ratio("windows.tumbling_1s.vs_bytewax", ours, theirs["events_per_s"])
