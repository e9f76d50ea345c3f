"""Stream joins in event time: orders with payments, clicks with user profiles.

1. An ``EventPipeline`` with two branches (orders, payments) into a ``JoinNode``: an
   interval join, a payment within 10 minutes after its order; ``how="left"`` also
   reports the orders nobody paid once the watermark has passed their deadline.
2. A ``StreamingPipeline`` whose one source carries both kinds, out of order: the same
   join by the ``kind`` field; payments that arrive after the watermark go to the
   dead-letter sink with the reason.
3. A stream-table join: clicks enriched with the latest profile of their user, the table
   built from a changelog and kept in SQLite, so a second run (a restart) still has it.
4. The same interval join on two observables.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import trio

from haive.dataflow.streaming import (
    EventPipeline,
    FilterNode,
    IntervalJoin,
    IterableSource,
    JoinNode,
    MemorySink,
    Observable,
    StateStore,
    StreamConfig,
    StreamingPipeline,
    TableJoinNode,
)

QUICK = bool(os.environ.get("HAIVE_EXAMPLE_QUICK"))
ORDERS = 50 if QUICK else 2000
MINUTE = 60.0


def shop(seed: int = 7) -> list[dict[str, Any]]:
    """Orders and, for most of them, a payment 0-15 minutes later (event time, seconds)."""
    rng = random.Random(seed)
    events = []
    for n in range(ORDERS):
        t = n * 30.0
        user = f"user-{n % 17}"
        events.append({"kind": "order", "id": n, "user": user, "ts": t})
        if rng.random() < 0.8:
            delay = rng.uniform(0, 15) * MINUTE
            events.append({"kind": "payment", "order": n, "user": user, "ts": t + delay})
    return events


def payment_for(pair: Any) -> bool:
    return pair.left is not None and pair.right is not None


async def orders_and_payments() -> None:
    pipeline = EventPipeline("paid", on_error="result")
    pipeline.add_node(FilterNode(name="orders", filter_fn=lambda e: e["kind"] == "order"))
    pipeline.add_node(FilterNode(name="payments", filter_fn=lambda e: e["kind"] == "payment"))
    pipeline.add_node(
        JoinNode(
            name="join",
            window=IntervalJoin(0, "10m"),
            left_key="id",  # an order's id is its payment's "order"
            right_key="order",
            how="left",
            left="orders",
            right="payments",
            timestamp="ts",
            allowed_lateness="15m",
        )
    )
    for a, b in [
        ("input", "orders"),
        ("input", "payments"),
        ("orders", "join"),
        ("payments", "join"),
        ("join", "output"),
    ]:
        pipeline.connect(a, b)
    events = sorted(shop(), key=lambda e: e["ts"])
    pairs: list[Any] = []

    async def feed(run: Any) -> None:
        for start in range(0, len(events), 32):
            await run.feed_batch(events[start : start + 32])
        run.close_input()  # the end of the input: the unpaid orders still open come out

    async with pipeline.process() as run, trio.open_nursery() as nursery:
        nursery.start_soon(feed, run)
        async for pair in run.results():
            pairs.append(pair)
    paid = {p.left["id"] for p in pairs if payment_for(p)}
    unpaid = {p.left["id"] for p in pairs if p.right is None}
    print(f"1. {len(events)} events: {len(paid)} orders paid within 10 min, {len(unpaid)} not")
    assert len(paid) + len(unpaid) == ORDERS and paid and unpaid


async def late_payments_to_dead_letters() -> None:
    rng = random.Random(3)
    # Out of order: each event arrives up to 5 minutes after its time, which the 10 minutes
    # of allowed lateness absorb; the payments of orders 0 and 1 arrive at the very end.
    events = sorted(shop(seed=11), key=lambda e: e["ts"] + rng.uniform(0, 5) * MINUTE)
    events += [{"kind": "payment", "order": n, "user": "user-0", "ts": n * 30.0} for n in (0, 1)]
    pipeline = StreamingPipeline("paid", config=StreamConfig(chunk_size=16))
    pipeline.set_source(IterableSource(events))
    sink, dead = MemorySink(), MemorySink()
    pipeline.set_sink(sink)
    pipeline.set_dead_letter_sink(dead)
    join = JoinNode(
        name="join",
        window=IntervalJoin(0, "10m"),
        left_key="id",
        right_key="order",
        side="kind",
        left="order",
        right="payment",
        timestamp="ts",
        allowed_lateness="10m",
    )
    pipeline.add_node(join)
    await pipeline.execute()
    paid = sum(1 for p in sink.items if payment_for(p))
    print(f"2. out of order: {paid} payments joined, {join.late_events} late event(s)")
    for record in dead.items[:2]:
        print("   dead letter:", record["error"]["message"])
    assert len(dead.items) == join.late_events >= 2
    order_time = {e["id"]: e["ts"] for e in events if e["kind"] == "order"}
    on_time = [e for e in events[:-2] if e["kind"] == "payment"]
    assert paid == sum(1 for e in on_time if e["ts"] - order_time[e["order"]] <= 10 * MINUTE)
    assert all(r["error"]["type"] == "LateEventError" for r in dead.items)


async def clicks_with_profiles(db: Path) -> None:
    def pipeline(events: list[dict[str, Any]]) -> tuple[StreamingPipeline, MemorySink]:
        run = StreamingPipeline("enrich")
        run.set_source(IterableSource(events))
        sink = MemorySink()
        run.set_sink(sink)
        run.add_node(
            TableJoinNode(
                name="profiles",
                key="user",
                side="kind",
                left="click",
                right="profile",
                table_value="plan",
                how="left",
                store=StateStore(f"sqlite:///{db}"),
            )
        )
        return run, sink

    first, sink = pipeline(
        [
            {"kind": "profile", "user": "ada", "plan": "pro"},
            {"kind": "profile", "user": "bob", "plan": "free"},
            {"kind": "click", "user": "ada", "page": "/pricing"},
            {"kind": "profile", "user": "bob", "plan": "pro"},  # bob upgrades
        ]
    )
    await first.execute()
    print("3. first run:", [(r.key, r.right) for r in sink.items])
    # A restart: no changelog this time, the table comes back from SQLite.
    second, sink = pipeline(
        [{"kind": "click", "user": u, "page": "/"} for u in ("ada", "bob", "cyd")]
    )
    await second.execute()
    enriched = [(r.key, r.right) for r in sink.items]
    print("   after a restart:", enriched)
    assert enriched == [("ada", "pro"), ("bob", "pro"), ("cyd", None)]


async def reactive_join() -> None:
    events = shop(seed=5)
    orders = Observable.from_iterable([e for e in events if e["kind"] == "order"])
    payments = Observable.from_iterable([e for e in events if e["kind"] == "payment"])
    pairs = await orders.join(
        payments,
        IntervalJoin(0, "10m"),
        left_key="id",
        right_key="order",
        timestamp="ts",
        allowed_lateness="1h",
    ).to_list()
    print(f"4. reactive: {sum(1 for p in pairs if payment_for(p))} payments joined")


async def main() -> None:
    await orders_and_payments()
    await late_payments_to_dead_letters()
    with tempfile.TemporaryDirectory() as tmp:
        await clicks_with_profiles(Path(tmp) / "profiles.db")
    await reactive_join()


if __name__ == "__main__":
    trio.run(main)
