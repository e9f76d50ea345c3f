"""StatefulProcessor, SessionState and WindowState."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
import trio

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.nodes import NodeContext
from haive.dataflow.state import (
    KeyedState,
    Session,
    SessionState,
    SQLiteStateBackend,
    StatefulProcessor,
    StateStore,
    WindowState,
)


@attrs.define
class Tally:
    count: int = 0
    total: int = 0


class TallyPerUser(StatefulProcessor[Tally]):
    state_type = Tally

    def initial_state(self, key):
        return Tally()

    def process(self, item, state):
        state.value.count += 1
        state.value.total += item["amount"]
        return {"user": item["user"], "count": state.value.count}


async def test_state_per_key_in_pipeline_and_persisted(tmp_path):
    store = StateStore(tmp_path / "s.db", namespace="app")
    items = [{"user": u, "amount": a} for u, a in [("ada", 5), ("bob", 1), ("ada", 2)] * 40]
    pipeline = StreamingPipeline("tally")
    pipeline.set_source(IterableSource(items))
    pipeline.add_node(TallyPerUser("tally", store=store, key="user"))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert [o["count"] for o in sink.items if o["user"] == "ada"] == list(range(1, 81))
    async with StateStore(tmp_path / "s.db", namespace="app") as reopened:
        assert await reopened.get("tally:ada", Tally) == Tally(80, 280)
        assert await reopened.get("tally:bob", Tally) == Tally(40, 40)


async def test_async_process_clear_and_none_output():
    class Dedup(StatefulProcessor):
        async def process(self, item, state: KeyedState):
            await trio.lowlevel.checkpoint()
            if item.get("reset"):
                state.clear()
                return None
            if state.value:
                return None  # seen before: emit nothing
            state.set(True, ttl=60)
            return item["id"]

    node = Dedup(key="id")
    ctx = NodeContext("dedup")
    out = await node.process_batch([{"id": 1}, {"id": 2}, {"id": 1}], ctx)
    assert out == [1, 2]
    assert await node.process_batch([{"id": 1}, {"id": 1, "reset": True}, {"id": 3}], ctx) == [3]
    assert await node.process_batch([{"id": 1}], ctx) == [1]


async def test_item_errors_and_missing_keys_are_isolated():
    class Boom(StatefulProcessor):
        def process(self, item, state):
            if item["v"] == 0:
                raise ValueError("zero")
            state.value = (state.value or 0) + item["v"]
            return state.value

    node = Boom(key="k")
    ctx = NodeContext("boom", error_policy="skip")
    out = await node.process_batch(
        [{"k": "a", "v": 1}, {"v": 3}, {"k": "a", "v": 0}, {"k": "a", "v": 2}], ctx
    )
    assert out == [1, 3]
    assert ctx.stats.errors == 2


async def test_corrupt_state_is_dead_lettered_and_key_restarts():
    store = StateStore(namespace="n")
    await store.backend.put("n:TallyPerUser:ada", b'{"count": "many"}')
    node = TallyPerUser(store=store, key="user")
    out = await node.process_batch([{"user": "ada", "amount": 1}], NodeContext("t"))
    assert out == [{"user": "ada", "count": 1}]
    [letter] = await store.dead_letters()
    assert letter.key == "TallyPerUser:ada" and "count" in letter.reason


def test_processor_must_implement_process():
    class Nothing(StatefulProcessor):
        pass

    with pytest.raises(ConfigError, match="process"):
        Nothing()


async def test_session_state_expiry(autojump_clock):
    sessions = SessionState(timeout="30m")
    session = await sessions.get_or_create("u1")
    assert isinstance(session, Session) and session.event_count == 0
    session.event_count += 1
    session.last_activity = dt.datetime.now()
    await sessions.save(session)
    await trio.sleep(29 * 60)
    again = await sessions.get_or_create("u1")
    assert again.event_count == 1 and again.last_activity == session.last_activity
    again.event_count += 1
    await sessions.save(again)  # restarts the timeout
    await trio.sleep(29 * 60)
    assert (await sessions.get("u1")).event_count == 2
    assert [s.session_id for s in await sessions.active()] == ["u1"]
    await trio.sleep(60 + 1)
    assert await sessions.get("u1") is None
    assert (await sessions.get_or_create("u1")).event_count == 0
    assert await sessions.active() == []


async def test_session_state_on_sqlite_with_custom_type(tmp_path):
    @attrs.define
    class Chat:
        session_id: str
        turns: list[str] = attrs.field(factory=list)

    backend = SQLiteStateBackend(tmp_path / "sessions.db", clock=trio.current_time)
    sessions = SessionState(timeout=10, store=StateStore(backend), session_type=Chat)
    chat = await sessions.get_or_create("c1")
    chat.turns.append("hello")
    await sessions.save(chat)
    assert await sessions.get("c1") == Chat("c1", ["hello"])
    assert await sessions.end("c1") is True
    assert await sessions.get("c1") is None
    with pytest.raises(ConfigError):
        await sessions.get("")


async def test_window_state_time_window_and_cap(autojump_clock):
    window = WindowState(window_size="5m", clock=trio.current_time)
    assert await window.add_to_window(1) == [1]
    await trio.sleep(120)
    assert await window.add_to_window(2) == [1, 2]
    await trio.sleep(200)
    assert await window.add_to_window(3) == [2, 3]
    assert await window.get_window() == [2, 3]
    assert await window.add_to_window("x", key="other") == ["x"]
    await trio.sleep(301)
    assert await window.get_window() == []  # the key expired with its window
    capped = WindowState("1h", max_items=2)
    for n in range(4):
        data = await capped.add_to_window(n, timestamp=n)
    assert data == [2, 3]
    assert await capped.add_to_window("old", timestamp=-1) == [2, 3]  # out of order, oldest
    assert await capped.clear() is True
