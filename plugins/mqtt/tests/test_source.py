"""MqttSource against the real Mosquitto: wildcards, each QoS, what the event carries,
dead letters, persistent sessions, acknowledging only after the write, bounded in-flight."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import trio
from haive_plugin_mqtt import MqttMessage, MqttSink, MqttSource

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import URL, Collector, publish_raw

pytestmark = pytest.mark.mqtt


async def run_source(source: MqttSource, processor=None) -> list[MqttMessage]:
    pipeline = StreamingPipeline("test")
    pipeline.set_source(source)
    if processor is not None:
        pipeline.add_processor(processor)
    out = MemorySink()
    pipeline.set_sink(out)
    with trio.fail_after(60):
        await pipeline.execute()
    return list(out.items)


def n_of(message: MqttMessage) -> int:
    return int(message.data["n"])


async def test_wildcard_filters_get_matching_topics_only(root: str) -> None:
    source = MqttSource([f"{root}/+/temp", f"{root}/alarms/#"], client_id=f"{root}-wild",
                        stop_when_idle="500ms", session_expiry="30s")
    await source.subscribe_only()
    topics = [f"{root}/kitchen/temp", f"{root}/kitchen/humidity", f"{root}/a/b/temp",
              f"{root}/alarms", f"{root}/alarms/fire/floor2", f"{root}/other"]
    await trio.to_thread.run_sync(publish_raw, URL, [
        (topic, orjson.dumps({"n": n}), 1, False) for n, topic in enumerate(topics)])
    got = await run_source(source)
    assert [m.topic for m in got] == [f"{root}/kitchen/temp", f"{root}/alarms",
                                      f"{root}/alarms/fire/floor2"]
    assert source.stats.acknowledged == 3


class AnnouncingSource(MqttSource):
    """Sets ``opened`` once connected and subscribed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = trio.Event()

    async def open(self) -> None:
        await super().open()
        self.opened.set()


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_each_qos_delivers_every_message_in_order(root: str, qos: int) -> None:
    source = AnnouncingSource(f"{root}/in", client_id=f"{root}-qos{qos}", qos=qos,
                              stop_when_idle="1s", session_expiry="30s", receive_maximum=50)
    n = 300
    got: list[MqttMessage] = []

    async def publish_once_subscribed() -> None:
        # Published while the source runs: Mosquitto queues no QoS 0 for offline sessions.
        await source.opened.wait()
        await trio.to_thread.run_sync(publish_raw, URL, [
            (f"{root}/in", orjson.dumps({"n": i}), qos, False) for i in range(n)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_once_subscribed)
        got = await run_source(source)
    assert [n_of(m) for m in got] == list(range(n))
    assert {m.qos for m in got} == {qos}
    assert source.stats.acknowledged == (n if qos else 0)


async def test_event_carries_topic_qos_retain_properties_and_receive_time(root: str) -> None:
    async with MqttSink(f"{root}/state", qos=1, retain=True,
                        properties=lambda item: {"device": item["device"]}) as sink:
        await sink.write_batch([{"device": "d1", "on": True}])
    before = time.time()
    source = MqttSource(f"{root}/#", client_id=f"{root}-props", stop_when_idle="500ms",
                        session_expiry=0)
    got = await run_source(source)
    async with MqttSink(f"{root}/state") as cleaner:
        await cleaner.clear_retained([f"{root}/state"])
    [message] = got
    assert message.topic == f"{root}/state" and message.data == {"device": "d1", "on": True}
    assert message.retain is True and message.qos == 1
    assert message.properties == {"device": "d1"}
    assert message.payload == b'{"device":"d1","on":true}'
    assert before - 1 <= message.timestamp <= time.time()


async def test_malformed_payload_is_dead_lettered_with_the_reason(root: str) -> None:
    dead = f"{root}-dead/letters"
    source = MqttSource(f"{root}/in", client_id=f"{root}-bad", dead_letter=dead,
                        stop_when_idle="500ms", session_expiry="30s")
    await source.subscribe_only()
    with Collector(URL, [dead]) as letters:
        await trio.to_thread.run_sync(publish_raw, URL, [
            (f"{root}/in", b'{"n": 0}', 1, False),
            (f"{root}/in", b"{not json", 1, False),
            (f"{root}/in", b'{"n": 2}', 1, False)])
        got = await run_source(source)
        [letter] = await trio.to_thread.run_sync(letters.wait_for, 1)
    assert [n_of(m) for m in got] == [0, 2]
    assert letter.payload == b"{not json"
    assert letter.properties["haive-reason"].startswith("SerializationError: payload is not")
    assert letter.properties["haive-topic"] == f"{root}/in"
    assert letter.properties["haive-node"] == "decode"
    assert source.stats.dead_lettered == 1 and source.stats.acknowledged == 3


async def test_failed_item_is_dead_lettered_and_the_rest_written(root: str) -> None:
    dead = f"{root}-dead/letters"
    source = MqttSource(f"{root}/in", client_id=f"{root}-fail", dead_letter=dead,
                        stop_when_idle="500ms", session_expiry="30s")
    await source.subscribe_only()

    def check(message: MqttMessage) -> int:
        if n_of(message) == 3:
            raise ValueError("three is not allowed")
        return n_of(message)

    with Collector(URL, [dead]) as letters:
        await trio.to_thread.run_sync(publish_raw, URL, [
            (f"{root}/in", orjson.dumps({"n": i}), 1, False) for i in range(6)])
        got = await run_source(source, check)
        [letter] = await trio.to_thread.run_sync(letters.wait_for, 1)
    assert got == [0, 1, 2, 4, 5]
    assert orjson.loads(letter.payload) == {"n": 3}
    assert letter.properties["haive-reason"] == "ValueError: three is not allowed"
    assert source.stats.acknowledged == 6


async def test_persistent_session_gets_what_arrived_while_the_worker_was_down(root: str) -> None:
    def source() -> MqttSource:
        return MqttSource(f"{root}/in", client_id=f"{root}-persist", stop_when_idle="500ms",
                          session_expiry="60s")

    await trio.to_thread.run_sync(publish_raw, URL, [(f"{root}/in", b'{"n": -1}', 1, False)])
    first = await run_source(source())  # creates the session: nothing was there before
    assert first == []
    await trio.to_thread.run_sync(publish_raw, URL, [
        (f"{root}/in", orjson.dumps({"n": i}), 1, False) for i in range(200)])
    second = await run_source(source())
    assert [n_of(m) for m in second] == list(range(200))
    assert await run_source(source()) == []  # all acknowledged: nothing comes twice


class FailingSink(StreamSink):
    """Writes ``good`` batches, then fails: the pipeline stops."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.items: list[int] = []

    async def write_batch(self, items: list[int]) -> None:
        if self.good == 0:
            raise ConnectionError("the database went away")
        self.good -= 1
        self.items.extend(items)


async def test_nothing_is_acknowledged_before_the_sink_wrote_it(root: str) -> None:
    def source() -> MqttSource:
        return MqttSource(f"{root}/in", client_id=f"{root}-ack", stop_when_idle="500ms",
                          session_expiry="60s", batch_size=50, receive_maximum=100)

    await source().subscribe_only()
    await trio.to_thread.run_sync(publish_raw, URL, [
        (f"{root}/in", orjson.dumps({"n": i}), 1, False) for i in range(500)])
    failing = FailingSink(good=2)
    pipeline = StreamingPipeline("fails")
    first = source()
    pipeline.set_source(first)
    pipeline.add_processor(n_of)
    pipeline.set_sink(failing)
    with pytest.raises(BaseException, match="database went away"), trio.fail_after(60):
        await pipeline.execute()
    written = list(failing.items)
    assert written == list(range(len(written))) and 0 < len(written) < 500
    assert first.stats.acknowledged <= len(written)
    again = await run_source(source(), n_of)
    # Everything not acknowledged comes again (at least once); nothing is lost.
    assert set(written) | set(again) == set(range(500))
    assert again[: 500 - first.stats.acknowledged] == list(range(first.stats.acknowledged, 500))


async def test_in_flight_is_bounded_by_receive_maximum(root: str) -> None:
    source = MqttSource(f"{root}/in", client_id=f"{root}-bound", receive_maximum=10,
                        stop_when_idle="500ms", session_expiry="30s")
    await source.subscribe_only()
    await trio.to_thread.run_sync(publish_raw, URL, [
        (f"{root}/in", orjson.dumps({"n": i}), 1, False) for i in range(100)])
    release = trio.Event()
    held: list[int] = []

    async def hold(message: MqttMessage) -> int:
        if not release.is_set():
            await release.wait()
        return n_of(message)

    async def watch() -> None:
        await trio.sleep(1.0)  # the source would read everything by now if unbounded
        held.append(source.stats.received)
        release.set()

    pipeline = StreamingPipeline("bounded")
    pipeline.set_source(source)
    pipeline.add_processor(hold)
    out = MemorySink()
    pipeline.set_sink(out)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await pipeline.execute()
    assert held == [10]
    assert out.items == list(range(100))


def test_bad_settings_are_refused_at_construction() -> None:
    cases = [
        (dict(topics="a/#/b"), "topics must be a topic filter"),
        (dict(topics=[]), "topics must be a topic filter or a non-empty list"),
        (dict(client_id=""), "client_id must be a non-empty string"),
        (dict(url="http://x"), "url must be mqtt://"),
        (dict(qos=3), "qos must be 0, 1 or 2"),
        (dict(receive_maximum=0), "receive_maximum must be an integer between 1 and 65535"),
        (dict(poll_timeout="0s"), "poll_timeout must be a duration"),
        (dict(topics="x/#", dead_letter="x/dead"), "does not match"),
        (dict(dead_letter="dead/+"), "dead_letter must be a topic name"),
        (dict(session_expiry=-1), "session_expiry must be a duration"),
        (dict(codec="nope"), "codec='nope'"),
    ]
    for settings, message in cases:
        kwargs = {"topics": "a/b", "client_id": "c", **settings}
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            MqttSource(**kwargs)
