"""Stream joins: a keyed interval join and a tumbling-window join, vs plain Python and Bytewax.

1,000,000 events (quick: 100,000) in event-time order, 10,000 per second of event time:
orders (one per key, the order id) and, for each, a payment 0-2 s later. Ours: a
``StreamingPipeline`` with an ``IterableSource``, a ``JoinNode`` reading the side from the
``kind`` field, and a ``MemorySink``:

* interval join ``IntervalJoin(0, "1s")`` (a payment within a second of its order): next to
  a plain-Python interval join doing the same work with no pipeline (dicts per side, a
  heap of expiries, the same per-batch watermark), ``joins.interval.vs_raw``;
* tumbling-window join ``TumblingWindow("1s")`` (order and payment in the same second):
  next to Bytewax's ``join_window`` (``insert_mode="product"``, an ``EventClock`` and a
  ``TumblingWindower``, run by ``bytewax.testing.run_main`` in a subprocess; on 100,000
  events for both, as Bytewax slows down with the number of keys),
  ``joins.tumbling_1s.vs_bytewax``. Both runs' pair counts are compared. Bytewax's
  watermark also advances with system time (``wait_for_system_duration``); at 5 s its
  slower run made about 1 % of the payments late, so it waits 10 minutes (the input
  ends first and every window closes at its end, as ours do).

And a stream-table join: 1,000,000 lookups of a 10,000-key table (in memory) built from a
changelog, ``joins.table.events_per_s``.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import subprocess
import sys
import textwrap
import time
from typing import Any

import trio

from bench.recorder import Recorder
from haive.dataflow import StreamConfig, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.state import IntervalJoin, JoinNode, TableJoinNode, TumblingWindow

DESCRIPTION = "1M events: keyed interval join vs plain Python, window join vs Bytewax, table join"

PER_SECOND = 10_000
CHUNK = 4096


def make_events(n: int) -> list[dict[str, Any]]:
    rnd = random.Random(1)
    events = []
    for i in range(n // 2):
        t = i / (PER_SECOND / 2)
        events.append({"kind": "order", "id": i, "ts": t})
        events.append({"kind": "payment", "id": i, "ts": t + rnd.uniform(0, 2)})
    events.sort(key=lambda e: e["ts"])
    return events


def run_ours(events: list[dict[str, Any]], window: Any) -> tuple[float, int]:
    pipeline = StreamingPipeline("bench-joins", config=StreamConfig(chunk_size=CHUNK))
    pipeline.set_source(IterableSource(events))
    pipeline.add_node(
        JoinNode(
            name="join",
            window=window,
            key="id",
            side="kind",
            left="order",
            right="payment",
            timestamp="ts",
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    return len(events) / elapsed, len(sink.items)


def run_raw_interval(events: list[dict[str, Any]], lower: float, upper: float) -> tuple[float, int]:
    """The same interval join by hand: what the node does, without a pipeline around it."""
    started = time.perf_counter()
    sides: tuple[dict[Any, list[Any]], dict[Any, list[Any]]] = ({}, {})
    maxes = [-math.inf, -math.inf]
    expiry: list[tuple[float, int, int, Any]] = []
    pairs: list[tuple[Any, Any]] = []
    seq = 0
    for start in range(0, len(events), CHUNK):
        batch = events[start : start + CHUNK]
        wm = min(maxes)
        for e in batch:
            side = 0 if e["kind"] == "order" else 1
            ts, k = e["ts"], e["id"]
            if ts < wm:
                continue
            others = sides[1 - side].get(k)
            if others:
                for o in others:
                    lt, rt = (ts, o["ts"]) if side == 0 else (o["ts"], ts)
                    if lt + lower <= rt <= lt + upper:
                        pairs.append((e, o) if side == 0 else (o, e))
            sides[side].setdefault(k, []).append(e)
            seq += 1
            heapq.heappush(expiry, (ts + upper if side == 0 else ts - lower, seq, side, k))
            if ts > maxes[side]:
                maxes[side] = ts
        wm = min(maxes)
        while expiry and expiry[0][0] < wm:
            _, _, side, k = heapq.heappop(expiry)
            items = sides[side][k]
            items.pop(0)
            if not items:
                del sides[side][k]
    elapsed = time.perf_counter() - started
    return len(events) / elapsed, len(pairs)


def run_table(n: int) -> tuple[float, int]:
    keys = 10_000
    rnd = random.Random(2)
    changelog = [{"kind": "profile", "id": k, "plan": rnd.choice("abc")} for k in range(keys)]
    clicks = [{"kind": "click", "id": rnd.randrange(keys)} for _ in range(n)]
    pipeline = StreamingPipeline("bench-table", config=StreamConfig(chunk_size=CHUNK))
    pipeline.set_source(IterableSource(changelog + clicks))
    pipeline.add_node(
        TableJoinNode(
            name="table", key="id", side="kind", left="click", right="profile", table_value="plan"
        )
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    return (keys + n) / elapsed, len(sink.items)


_BYTEWAX = textwrap.dedent(
    """
    import json, random, sys, time
    from datetime import datetime, timedelta, timezone
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    n, per_second = int(sys.argv[1]), int(sys.argv[2])
    rnd = random.Random(1)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    orders, payments = [], []
    for i in range(n // 2):
        t = i / (per_second / 2)
        orders.append((str(i), t0 + timedelta(seconds=t)))
        payments.append((t + rnd.uniform(0, 2), str(i)))
    payments.sort()
    payments = [(k, t0 + timedelta(seconds=t)) for t, k in payments]

    flow = Dataflow("join")
    left = op.input("orders", flow, TestingSource(orders, batch_size=4096))
    right = op.input("payments", flow, TestingSource(payments, batch_size=4096))
    clock = win.EventClock(lambda ts: ts, wait_for_system_duration=timedelta(minutes=10))
    windower = win.TumblingWindower(length=timedelta(seconds=1), align_to=t0)
    joined = win.join_window("join", clock, windower, left, right, insert_mode="product")
    out = []
    op.output("out", joined.down, TestingSink(out))
    started = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - started
    pairs = sum(1 for _key, (_wid, row) in out if all(v is not None for v in row))
    print(json.dumps({"events_per_s": n / elapsed, "pairs": pairs}))
    """
)


def run_bytewax(n: int) -> dict[str, float] | None:
    try:
        import bytewax  # noqa: F401
    except ImportError:
        print("  bytewax is not installed (pip install -r bench/requirements.txt): skipped")
        return None
    proc = subprocess.run(
        [sys.executable, "-c", _BYTEWAX, str(n), str(PER_SECOND)],
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
    note = f"{n:,} events, {n // 2:,} keys"

    ours = raw = 0.0
    pairs = raw_pairs = 0
    for _ in range(2):  # best of two on both sides (the machine is shared)
        rate, pairs = run_ours(events, IntervalJoin(0, "1s"))
        ours = max(ours, rate)
        rate, raw_pairs = run_raw_interval(events, 0.0, 1.0)
        raw = max(raw, rate)
    agree = "same pairs" if pairs == raw_pairs else f"pairs differ: {pairs} vs {raw_pairs}"
    rec.figure("joins.interval.events_per_s", ours, "events/s", note)
    rec.figure("joins.interval.pairs", pairs, "pairs")
    rec.figure("joins.interval.raw_events_per_s", raw, "events/s", agree)
    rec.ratio("joins.interval.vs_raw", ours, raw)

    tumbling = 0.0
    for _ in range(2):
        rate, pairs = run_ours(events, TumblingWindow("1s"))
        tumbling = max(tumbling, rate)
    rec.figure("joins.tumbling_1s.events_per_s", tumbling, "events/s", note)
    rec.figure("joins.tumbling_1s.pairs", pairs, "pairs")

    table = 0.0
    for _ in range(2):
        rate, found = run_table(n)
        table = max(table, rate)
    rec.figure("joins.table.events_per_s", table, "events/s", f"{found:,} lookups, 10,000 keys")

    # Bytewax keeps window state per key and slows down with many keys (one order and one
    # payment per key here): the comparison runs both on 100,000 events.
    small = 100_000
    if n != small:
        tumbling = 0.0
        for _ in range(2):
            rate, pairs = run_ours(make_events(small), TumblingWindow("1s"))
            tumbling = max(tumbling, rate)
        rec.figure("joins.tumbling_1s.events_per_s_100k", tumbling, "events/s")
    theirs = None
    for _ in range(2):
        attempt = run_bytewax(small)
        if attempt is None:
            return
        if theirs is None or attempt["events_per_s"] > theirs["events_per_s"]:
            theirs = attempt
    assert theirs is not None
    same = (
        "same pairs"
        if theirs["pairs"] == pairs
        else f"pairs: ours {pairs}, bytewax {theirs['pairs']:.0f}"
    )
    rec.figure("joins.tumbling_1s.bytewax_events_per_s", theirs["events_per_s"], "events/s", same)
    rec.ratio("joins.tumbling_1s.vs_bytewax", tumbling, theirs["events_per_s"])
