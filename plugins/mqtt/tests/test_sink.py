"""MqttSink against the real Mosquitto (and brokers of the tests' own): QoS, ordering per
topic, retained messages, topic templates, refused connections and credentials, oversized
payloads."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import trio
from haive_plugin_mqtt import (
    MqttAuthError,
    MqttConnectError,
    MqttMessage,
    MqttSink,
    MqttSource,
    PayloadTooLargeError,
)

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems

from .conftest import URL, Collector, free_port

pytestmark = pytest.mark.mqtt


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_order_per_topic_is_kept_for_each_qos(root: str, qos: int) -> None:
    topics = [f"{root}/a", f"{root}/b", f"{root}/c"]
    items = [{"topic": topics[i % 3], "n": i} for i in range(3000)]
    with Collector(URL, [f"{root}/#"], qos=2) as collector:
        async with MqttSink(lambda item: item["topic"], qos=qos) as sink:
            for start in range(0, len(items), 500):
                await sink.write_batch(items[start:start + 500])
        got = await trio.to_thread.run_sync(collector.wait_for, len(items))
    assert sink.stats.published == len(items)
    assert len(got) == len(items)
    for topic in topics:
        sent = [item["n"] for item in items if item["topic"] == topic]
        assert [orjson.loads(m.payload)["n"] for m in got if m.topic == topic] == sent
    assert {m.qos for m in got} == {qos}


async def test_retained_message_reaches_a_later_subscriber(root: str) -> None:
    async with MqttSink(f"{root}/status", qos=1, retain=lambda item: item["final"]) as sink:
        await sink.write_batch([{"v": 1, "final": False}, {"v": 2, "final": True}])
        await sink.write_batch([{"v": 3, "final": False}])  # not retained: 2 stays
        with Collector(URL, [f"{root}/status"]) as late:
            [kept] = await trio.to_thread.run_sync(late.wait_for, 1)
        await sink.clear_retained([f"{root}/status"])
    assert kept.retain and orjson.loads(kept.payload)["v"] == 2


async def test_topic_template_function_and_message_passthrough(root: str) -> None:
    with Collector(URL, [f"{root}/#"]) as collector:
        async with MqttSink(root + "/rooms/{room}", qos=1) as by_template:
            await by_template.write_batch([{"room": "hall"}])
        async with MqttSink(lambda item: f"{root}/fn/{item['n']}") as by_function:
            await by_function.write_batch([{"n": 7}])
        message = MqttMessage(topic=f"{root}/copied", data=None, payload=b"raw bytes", qos=1,
                              retain=False, properties={"k": "v"}, timestamp=0.0)
        async with MqttSink() as passthrough:
            await passthrough.write_batch([message])
        got = await trio.to_thread.run_sync(collector.wait_for, 3)
    assert [(m.topic, m.payload) for m in got] == [
        (f"{root}/rooms/hall", b'{"room":"hall"}'),
        (f"{root}/fn/7", b'{"n":7}'),
        (f"{root}/copied", b"raw bytes"),
    ]
    assert got[2].properties == {"k": "v"}


async def test_items_whose_topic_cannot_be_made_are_rejected_the_rest_written(root: str) -> None:
    with Collector(URL, [f"{root}/#"]) as collector:
        async with MqttSink(root + "/{room}") as sink:
            with pytest.raises(RejectedItems) as rejected:
                await sink.write_batch([{"room": "a"}, {"floor": 2}, {"room": "b/+"},
                                        {"room": "c"}])
        got = await trio.to_thread.run_sync(collector.wait_for, 2)
    assert sorted(rejected.value.errors) == [1, 2]
    assert "cannot be filled from the item" in str(rejected.value.errors[1])
    assert "without the wildcards" in str(rejected.value.errors[2])
    assert [m.topic for m in got] == [f"{root}/a", f"{root}/c"]


async def test_refused_connection_is_a_clear_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(MqttConnectError, match=f"cannot connect to the MQTT broker at "
                                               f"mqtt://127.0.0.1:{port}.*Connection refused"):
        async with MqttSink("x", url=f"mqtt://127.0.0.1:{port}"):
            pass
    with pytest.raises(MqttConnectError, match="cannot connect"):
        async with MqttSource("x", client_id="c", url=f"mqtt://127.0.0.1:{port}"):
            pass


async def test_refused_credentials_are_a_clear_error(mosquitto, tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text("")
    await trio.run_process(["mosquitto_passwd", "-b", str(passwords), "ada", "right"])
    passwords.chmod(0o600)
    broker = mosquitto(f"password_file {passwords}")
    url = broker.url.replace("mqtt://", "mqtt://ada:wrong@")
    # Mosquitto answers "not authorized" (0x87) to a wrong password; the password never
    # appears in the message.
    with pytest.raises(MqttAuthError, match=r"mqtt://ada:\*\*\*@127.0.0.1:\d+ refused the "
                                            r"credentials: not authorized") as wrong:
        async with MqttSink("x", url=url):
            pass
    assert "wrong" not in str(wrong.value)
    with pytest.raises(MqttAuthError, match=r"not authorized|bad user name"):
        async with MqttSource("x", client_id="c", url=broker.url):  # anonymous: refused
            pass
    good = broker.url.replace("mqtt://", "mqtt://ada:right@")
    async with MqttSink("x/y", url=good) as sink:
        await sink.write_batch([{"ok": True}])
    assert sink.stats.published == 1


async def test_oversized_payload_is_rejected_with_the_limit(mosquitto) -> None:
    broker = mosquitto("max_packet_size 1000")
    with Collector(broker.url, ["big/#"]) as collector:
        async with MqttSink("big/x", url=broker.url) as sink:
            with pytest.raises(RejectedItems) as rejected:
                await sink.write_batch([{"n": 0}, {"blob": "x" * 5000}, {"n": 2}])
        got = await trio.to_thread.run_sync(collector.wait_for, 2)
    [error] = rejected.value.errors.values()
    assert isinstance(error, PayloadTooLargeError)
    assert "does not fit the maximum packet size of 1000 bytes" in str(error)
    assert [orjson.loads(m.payload) for m in got] == [{"n": 0}, {"n": 2}]

    async with MqttSink("t", max_payload_size="1KB") as local:
        with pytest.raises(RejectedItems, match="larger than max_payload_size=1000"):
            await local.write_batch([{"blob": "x" * 2000}])


def test_bad_settings_are_refused_at_construction() -> None:
    cases = [
        (dict(topic="a/+"), "topic must be a topic name without the wildcards"),
        (dict(topic="{}"), "topic must be a template naming fields"),
        (dict(qos=-1), "qos must be 0, 1 or 2"),
        (dict(retain="yes"), "retain must be a bool or a function"),
        (dict(properties={"a": "b"}), "properties must be a function"),
        (dict(max_in_flight=0), "max_in_flight must be an integer between 1 and 65535"),
        (dict(max_payload_size=0), "max_payload_size must be a size"),
        (dict(publish_timeout="soon"), "publish_timeout must be a duration"),
        (dict(url="mqtt://"), "url must be mqtt://"),
        (dict(retry=3), "retry must be a RetryPolicy"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError, match=message):
            MqttSink(**{"topic": "a/b", **settings})
