"""Observable.join and Observable.join_table: the join nodes on two observables."""

from __future__ import annotations

import pytest
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.reactive import Observable, ReactiveStream
from haive.dataflow.state import (
    IntervalJoin,
    JoinResult,
    SQLiteStateBackend,
    StateStore,
    TumblingWindow,
)


def timed(*items_at: tuple[float, dict]) -> Observable:
    """Each item emitted at its trio time (seconds from subscription)."""

    async def produce(emit):
        start = trio.current_time()
        for at, item in items_at:
            await trio.sleep_until(start + at)
            await emit(item)

    return Observable.create(produce)


async def test_window_join_of_two_observables(autojump_clock):
    orders = timed((0, {"u": "a", "ts": 1.0, "id": 1}), (3, {"u": "b", "ts": 12.0, "id": 2}))
    payments = timed((1, {"u": "a", "ts": 4.0, "amt": 5}), (2, {"u": "a", "ts": 15.0, "amt": 6}))
    pairs = await orders.join(
        payments, TumblingWindow(10), key="u", timestamp="ts", how="outer"
    ).to_list()
    assert sorted(
        (p.key, p.start, p.left and p.left["id"], p.right and p.right["amt"]) for p in pairs
    ) == [
        ("a", 0.0, 1, 5),
        ("a", 10.0, None, 6),
        ("b", 10.0, 2, None),
    ]


async def test_each_subscription_joins_afresh():
    left = Observable.of({"k": 1, "timestamp": 1.0})
    right = Observable.of({"k": 1, "timestamp": 1.5})
    joined = left.join(right, IntervalJoin(0, 1), key="k")
    first = await joined.to_list()
    assert first == await joined.to_list()
    assert first == [JoinResult(1, {"k": 1, "timestamp": 1.0}, {"k": 1, "timestamp": 1.5})]


async def test_late_items_go_to_on_late(autojump_clock):
    late: list = []
    left = timed((0, {"k": 1, "ts": 50.0}), (2, {"k": 1, "ts": 2.0}))
    right = timed((1, {"k": 1, "ts": 60.0}))
    await left.join(
        right, IntervalJoin(-5, 5), key="k", timestamp="ts", on_late=late.extend
    ).to_list()
    assert late == [{"k": 1, "ts": 2.0}]


async def test_hot_streams_join_with_idle_timeout(autojump_clock):
    clicks, views = ReactiveStream(), ReactiveStream()
    got: list = []
    joined = views.join(
        clicks, TumblingWindow(10), key="ad", timestamp="ts", how="left", idle_timeout=3
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(joined.for_each, got.append)
        await trio.sleep(0.1)
        await views.emit({"ad": 1, "ts": 1.0})
        for ts in range(40, 45):  # clicks go on, views fall silent
            await clicks.emit({"ad": 2, "ts": float(ts)})
            await trio.sleep(1)
        # Views idle after 3s: the window [0, 10) closed, no click met it.
        assert got == [JoinResult(1, {"ad": 1, "ts": 1.0}, None, 0.0, 10.0)]
        nursery.cancel_scope.cancel()


async def test_bad_settings_fail_when_the_join_is_built():
    with pytest.raises(ConfigError, match="how must be one of"):
        Observable.of(1).join(Observable.of(2), IntervalJoin(0, 1), how="full")
    with pytest.raises(ConfigError, match="expects Observables"):
        Observable.of(1).join([2], IntervalJoin(0, 1))


async def test_join_table_with_a_durable_store(tmp_path, autojump_clock):
    store = StateStore(SQLiteStateBackend(tmp_path / "t.db"))
    profiles = timed((0, {"user": "ada", "country": "UK"}))
    clicks = timed((1, {"user": "ada", "page": "/"}), (1, {"user": "bob", "page": "/b"}))
    pairs = await clicks.join_table(
        profiles, key="user", table_value="country", how="left", store=store
    ).to_list()
    assert [(p.key, p.right) for p in pairs] == [("ada", "UK"), ("bob", None)]
    # A later run, with no changelog at all, finds the table in the store.
    again = (
        await Observable.of({"user": "ada"})
        .join_table(Observable.empty(), key="user", table_value="country", store=store)
        .to_list()
    )
    assert [(p.key, p.right) for p in again] == [("ada", "UK")]
