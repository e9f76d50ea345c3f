"""Joins in pipelines: two inputs into one node, late routing, idle sides, restarts."""

from __future__ import annotations

import pickle
import random

import pytest
import trio

from haive.dataflow import EventPipeline, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError, GraphError, NodeError
from haive.dataflow.runtime.backpressure import BoundedBuffer
from haive.dataflow.runtime.config import StreamConfig
from haive.dataflow.runtime.nodes import FilterNode, NodeContext, TransformNode
from haive.dataflow.state import (
    IntervalJoin,
    JoinNode,
    JoinResult,
    LateEventError,
    SessionWindow,
    SQLiteStateBackend,
    StateStore,
    TableJoinNode,
    TumblingWindow,
)


def order(user, ts, oid):
    return {"kind": "order", "user": user, "ts": ts, "id": oid}


def payment(user, ts, amount):
    return {"kind": "payment", "user": user, "ts": ts, "amount": amount}


def by_kind(kind):
    return FilterNode(name=f"{kind}s", filter_fn=lambda e: e["kind"] == kind)


async def test_event_pipeline_joins_two_branches_by_predecessor():
    pipeline = EventPipeline("paid")
    pipeline.add_node(by_kind("order")).add_node(by_kind("payment"))
    pipeline.add_node(
        JoinNode(
            name="join",
            window=IntervalJoin(0, "10s"),
            key="user",
            left="orders",
            right="payments",
            timestamp="ts",
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
    async with pipeline.process() as p:
        assert (await p.send(order("ada", 1.0, 1))).outputs == []
        assert (await p.send(payment("bob", 2.0, 5))).outputs == []
        (pair,) = (await p.send(payment("ada", 4.0, 9))).outputs
    assert pair == JoinResult("ada", order("ada", 1.0, 1), payment("ada", 4.0, 9))


async def test_join_by_predecessor_checks_its_inputs():
    pipeline = EventPipeline("bad")
    pipeline.add_node(by_kind("order")).add_node(by_kind("payment"))
    pipeline.add_node(
        JoinNode(name="join", window=IntervalJoin(0, 1), left="orders", right="refunds")
    )
    for a, b in [
        ("input", "orders"),
        ("input", "payments"),
        ("orders", "join"),
        ("payments", "join"),
        ("join", "output"),
    ]:
        pipeline.connect(a, b)
    with pytest.raises(GraphError, match=r"inputs are \['orders', 'payments'\].*right='refunds'"):
        async with pipeline.process():
            pass


async def test_streaming_pipeline_join_by_field_sends_late_events_to_dead_letters():
    events = [
        order("ada", 5.0, 1),
        payment("ada", 20.0, 9),
        order("bob", 70.0, 2),
        payment("bob", 75.0, 3),
        order("ada", 10.0, 3),  # both sides are past 70: the window [0, 60) closed
    ]
    # One event per batch: the watermark moves between any two events.
    pipeline = StreamingPipeline("paid", config=StreamConfig(chunk_size=1))
    pipeline.set_source(IterableSource(events))
    sink, dead = MemorySink(), MemorySink()
    pipeline.set_sink(sink)
    pipeline.set_dead_letter_sink(dead)
    join = JoinNode(
        name="join",
        window=TumblingWindow("60s"),
        key="user",
        side="kind",
        left="order",
        right="payment",
        timestamp="ts",
    )
    pipeline.add_node(join)
    report = await pipeline.execute()
    assert [(r.key, r.left["id"], r.right["amount"], r.start) for r in sink.items] == [
        ("ada", 1, 9, 0.0),
        ("bob", 2, 3, 60.0),
    ]
    (record,) = dead.items
    assert record["data"] == order("ada", 10.0, 3)
    assert record["error"]["type"] == "LateEventError"
    assert record["error"]["message"] == "late: event time 10.0 < watermark 70.0 - lateness 0.0"
    assert record["error"]["node"] == "join"
    assert join.late_events == 1 and report.failed == 1


async def test_unknown_side_fails_the_item_with_its_value():
    join = JoinNode(
        name="j",
        window=IntervalJoin(0, 1),
        key="user",
        side="kind",
        left="order",
        right="payment",
        timestamp="ts",
    )
    ctx = NodeContext("j", error_policy="skip")
    await join.process_batch([{"kind": "refund", "user": "a", "ts": 1.0}], ctx)
    assert ctx.stats.errors == 1
    ctx = NodeContext("j")
    with pytest.raises(
        Exception, match="side 'refund' is neither left='order' nor right='payment'"
    ):
        await join.process_batch([{"kind": "refund", "user": "a", "ts": 1.0}], ctx)


async def run_node(node, feed, *, until):
    """Run ``node`` as a pipeline would; ``feed(put)`` puts (side, item) batches; returns
    (trio time, pair) for every output."""
    inbox: BoundedBuffer = BoundedBuffer(100)
    out: list = []

    async def emit(batch):
        out.extend((trio.current_time(), item) for item in batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.run, NodeContext(node.name), inbox, emit)
        async with inbox.open_producer() as producer:
            await feed(producer.put_batch)
            await trio.sleep_until(until)
    return out


async def test_idle_side_stops_holding_the_watermark_back(autojump_clock):
    join = JoinNode(
        name="j",
        window=TumblingWindow(10),
        key="k",
        how="left",
        timestamp="ts",
        idle_timeout="30s",
    )

    async def feed(put):
        await put([("left", {"k": 1, "ts": 1.0})])  # the left side then goes silent
        for t in range(1, 60):
            await trio.sleep(1)
            await put([("right", {"k": 2, "ts": 100.0 + t})])

    out = await run_node(join, feed, until=70)
    ((when, pair),) = [(t, p) for t, p in out if p.key == 1]
    assert pair == JoinResult(1, {"k": 1, "ts": 1.0}, None, 0.0, 10.0)
    # Held back by the silent left side until it had been idle for 30s (trio's clock).
    assert when == pytest.approx(30.0)
    assert join.watermark == 159.0


async def test_idle_sides_release_windows_without_any_new_event(autojump_clock):
    join = JoinNode(
        name="j",
        window=TumblingWindow(10),
        key="k",
        how="outer",
        timestamp="ts",
        idle_timeout=5,
    )

    async def feed(put):
        await put([("left", {"k": 1, "ts": 1.0})])
        await trio.sleep(2)
        await put([("right", {"k": 2, "ts": 50.0})])
        # Nothing more: at t=5 the left side is idle, the watermark is the right side's 50.

    out = await run_node(join, feed, until=20)
    assert [(t, p.key, p.left, p.right) for t, p in out] == [
        (pytest.approx(5.0), 1, {"k": 1, "ts": 1.0}, None),
        # The right side's window [50, 60) is still open: the end of the input emits it.
        (pytest.approx(20.0), 2, None, {"k": 2, "ts": 50.0}),
    ]


async def test_without_idle_timeout_a_silent_side_holds_everything():
    join = JoinNode(name="j", window=TumblingWindow(10), key="k", how="left", timestamp="ts")
    ctx = NodeContext("j")
    assert await join.process_batch([("left", {"k": 1, "ts": 1.0})], ctx) == []
    assert await join.process_batch([("right", {"k": 2, "ts": 500.0})], ctx) == []
    assert join.watermark == 1.0  # min(1, 500)
    assert join.open_items() == 2


async def test_back_from_idle_a_side_is_late_with_the_reason(autojump_clock):
    join = JoinNode(
        name="j",
        window=IntervalJoin(-1, 1),
        key="k",
        timestamp="ts",
        idle_timeout=1,
        allowed_lateness=2,
    )
    errors: BoundedBuffer = BoundedBuffer(10)
    ctx = NodeContext("j", errors=errors.open_producer())
    await join.process_batch([("left", {"k": 1, "ts": 10.0})], ctx)
    await trio.sleep(2)  # left idle: the right side alone moves the watermark
    await join.process_batch([("right", {"k": 1, "ts": 40.0})], ctx)
    await join.process_batch([("right", {"k": 1, "ts": 41.0})], ctx)
    assert join.watermark == 39.0
    await join.process_batch([("left", {"k": 1, "ts": 35.0}), ("left", {"k": 1, "ts": 40.0})], ctx)
    (result,) = await errors.get_batch()
    assert result.data == {"k": 1, "ts": 35.0} and result.node == "j"
    assert isinstance(result.error, LateEventError)
    assert str(result.error) == "late: event time 35.0 < watermark 41.0 - lateness 2.0"
    assert join.late_events == 1 and join.pairs_emitted == 2  # 40 met 40 and 41


async def test_snapshot_and_restore_continue_the_join():
    def make():
        return JoinNode(name="j", window=SessionWindow(5), key="k", how="outer", timestamp="ts")

    first = [("left", {"k": 1, "ts": 1.0}), ("right", {"k": 1, "ts": 3.0})]
    second = [
        ("right", {"k": 1, "ts": 6.0}),
        ("left", {"k": 2, "ts": 30.0}),
        ("right", {"k": 2, "ts": 31.0}),
    ]
    whole = make()
    ctx = NodeContext("j")
    want = await whole.process_batch(first, ctx) + await whole.process_batch(second, ctx)
    want += await whole.flush(ctx)

    before = make()
    got = await before.process_batch(first, ctx)
    snapshot = before.snapshot()
    after = make()
    await after.restore(pickle.loads(pickle.dumps(snapshot)))
    got += await after.process_batch(second, ctx) + await after.flush(ctx)
    assert got == want
    assert len(want) == 3  # (1,1),(1,6) in [1, 11) and (30, 31) in [30, 36)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": TumblingWindow(count=3)}, "count windows have no time"),
        ({"window": IntervalJoin(0, 1), "left": "a", "right": "a"}, "left and right must differ"),
        ({"window": IntervalJoin(0, 1), "how": "cross"}, "how must be one of"),
        ({"window": IntervalJoin(0, 1), "on_late": "drop"}, "on_late must be a function"),
        ({"window": IntervalJoin(0, 1), "idle_timeout": 0}, "idle_timeout must be a duration"),
        ({"window": "1m"}, "window must be a TumblingWindow"),
    ],
)
def test_join_node_validates_its_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        JoinNode(name="j", **kwargs)


def test_interval_bounds():
    assert IntervalJoin("-5s", "1m") == IntervalJoin(-5, 60)
    with pytest.raises(ConfigError, match="lower must be <= upper"):
        IntervalJoin(2, 1)
    with pytest.raises(ConfigError, match="lower must be seconds"):
        IntervalJoin("soon", 1)


# -- stream-table ------------------------------------------------------------------------
async def test_table_join_is_restored_from_the_store_after_a_restart(tmp_path):
    path = tmp_path / "table.db"

    def pipeline(events):
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
                table_value="country",
                how="left",
                store=StateStore(SQLiteStateBackend(path)),
            )
        )
        return run, sink

    first, sink = pipeline(
        [
            {"kind": "profile", "user": "ada", "country": "UK"},
            {"kind": "profile", "user": "bob", "country": "FR"},
            {"kind": "click", "user": "ada", "page": "/a"},
            {"kind": "profile", "user": "bob", "country": None},  # bob's profile is deleted
        ]
    )
    await first.execute()
    assert [(r.key, r.right) for r in sink.items] == [("ada", "UK")]

    second, sink = pipeline(
        [
            {"kind": "click", "user": "ada", "page": "/b"},
            {"kind": "click", "user": "bob", "page": "/c"},
        ]
    )
    await second.execute()
    assert [(r.key, r.left["page"], r.right) for r in sink.items] == [
        ("ada", "/b", "UK"),
        ("bob", "/c", None),
    ]


async def test_table_join_by_predecessor_in_an_event_pipeline():
    pipeline = EventPipeline("enrich")
    pipeline.add_node(FilterNode(name="clicks", filter_fn=lambda e: "page" in e))
    pipeline.add_node(FilterNode(name="profiles", filter_fn=lambda e: "country" in e))
    join = TableJoinNode(name="join", key="user", left="clicks", right="profiles")
    pipeline.add_node(join)
    for a, b in [
        ("input", "clicks"),
        ("input", "profiles"),
        ("clicks", "join"),
        ("profiles", "join"),
        ("join", "output"),
    ]:
        pipeline.connect(a, b)
    async with pipeline.process() as p:
        assert (await p.send({"user": 7, "page": "/"})).outputs == []  # inner: no profile yet
        await p.send({"user": 7, "country": "DE"})
        (pair,) = (await p.send({"user": 7, "page": "/x"})).outputs
    assert pair == JoinResult(7, {"user": 7, "page": "/x"}, {"user": 7, "country": "DE"})
    assert join.table == {"7": {"user": 7, "country": "DE"}} and join.misses == 1


async def test_table_join_fails_a_value_the_store_cannot_hold_and_keeps_the_old_one():
    join = TableJoinNode(name="t", key="k", side="s", left="x", right="y", table_value="v")
    ctx = NodeContext("t", error_policy="skip")
    await join.process_batch([{"s": "y", "k": "a", "v": 1}], ctx)
    await join.process_batch([{"s": "y", "k": "a", "v": object()}], ctx)
    assert ctx.stats.errors == 1
    assert join.table == {"a": 1}
    assert await join.store.get("table:t:a") == 1


async def test_join_state_survives_a_crash_and_restart_with_checkpoints():
    rng = random.Random(4)
    items = []
    for i in range(200):
        items.append({"i": 2 * i, "kind": "order", "id": i % 40, "ts": i / 10})
        items.append({"i": 2 * i + 1, "kind": "payment", "id": i % 40, "ts": i / 10 + rng.random()})
    items.sort(key=lambda e: e["ts"])  # a payment comes up to ten orders after its order
    armed = [False]

    def crash_once(item):
        if armed[0] and item["i"] == 211:
            armed[0] = False
            raise RuntimeError("power cut")
        return item

    def pipeline(store, sink):
        p = StreamingPipeline("join", on_error="raise", config=StreamConfig(chunk_size=10))
        p.set_source(IterableSource(items))
        p.add_node(TransformNode(name="crash", transform_fn=crash_once))
        p.add_node(
            JoinNode(
                name="join",
                window=IntervalJoin(0, 2),
                key="id",
                side="kind",
                left="order",
                right="payment",
                timestamp="ts",
                how="left",
            )
        )
        p.set_sink(sink)
        if store is not None:
            p.enable_checkpointing(store, every=7)
        return p

    def rows(sink):
        return sorted(
            (r.key, r.left["i"], None if r.right is None else r.right["i"]) for r in sink.items
        )

    whole = MemorySink()
    await pipeline(None, whole).execute()
    store, sink = StateStore(), MemorySink()
    armed[0] = True
    with pytest.raises(NodeError):
        await pipeline(store, sink).execute()
    await pipeline(store, sink).execute()
    assert rows(sink) == rows(whole) and len(rows(whole)) == 200  # each order: its payment
