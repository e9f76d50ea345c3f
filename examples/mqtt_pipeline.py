"""Device readings from MQTT topics to alerts on MQTT, at least once, with a dead letter.

Sensors publish temperatures to ``<root>/sensors/<room>/temp`` (QoS 1). A StreamingPipeline
reads ``<root>/sensors/+/temp`` in the persistent session ``<root>-alerts`` (so readings
sent while no worker runs wait in the broker), turns readings above 25 °C into alerts and
publishes them to ``<root>/alerts/<room>`` (a topic template), each publish confirmed by a
PUBACK. A reading is acknowledged to the broker only after its alert was confirmed, so a
crash sends it again instead of losing it. One reading is not JSON on purpose: it lands on
the dead-letter topic with the reason in its user properties, and the pipeline goes on. A
window node counts readings per room per minute on each message's receive time.

Needs an MQTT broker on 127.0.0.1:1883 (``mosquitto``) and haive-plugin-mqtt.
"""

from __future__ import annotations

import os
import uuid

import trio
from haive_plugin_mqtt import MqttMessage

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.runtime.nodes import FilterNode
from haive.dataflow.state.windows import Count, TumblingWindow, WindowedAggregateNode
from haive.dataflow.streaming import MqttSink, MqttSource, StreamingPipeline

# Mosquitto keeps at most 1000 messages (max_queued_messages) for a session while it is
# offline: the example sends fewer, the readings arrive before the worker starts.
READINGS = 200 if os.environ.get("HAIVE_EXAMPLE_QUICK") else 900
ROOMS = ("hall", "kitchen", "den")


def alert(message: MqttMessage) -> dict[str, object]:
    room = message.topic.split("/")[-2]
    return {"room": room, "celsius": message.data["c"], "seen_at": message.timestamp}


async def main() -> None:
    root = f"haive-example/{uuid.uuid4().hex[:8]}"
    dead = f"{root}/dead-letters"
    source = MqttSource(f"{root}/sensors/+/temp", client_id=f"{root}-alerts",
                        dead_letter=dead, session_expiry="5m", stop_when_idle="1s")
    await source.subscribe_only()  # the session exists: the broker keeps what comes now

    async with MqttSink(lambda r: f"{root}/sensors/{r['room']}/temp", qos=1) as sensors:
        await sensors.write_batch([
            {"room": ROOMS[i % 3], "c": 18 + i % 11} for i in range(READINGS)])
    async with MqttSink(f"{root}/sensors/hall/temp", codec="bytes") as broken:
        await broken.write_batch([b"{temperature: 21"])  # not JSON

    pipeline = StreamingPipeline("alerts")
    pipeline.set_source(source)
    pipeline.add_node(FilterNode(name="hot", filter_fn=lambda m: m.data["c"] > 25))
    pipeline.add_processor(alert)
    sink = MqttSink(root + "/alerts/{room}", qos=1)
    pipeline.set_sink(sink)

    with trio.fail_after(120):
        report = await pipeline.execute()
    hot = sum(1 for i in range(READINGS) if 18 + i % 11 > 25)
    print(f"read {source.stats.received} readings, published {sink.stats.published} alerts "
          f"(each confirmed by a PUBACK), dead-lettered {source.stats.dead_lettered} "
          f"to {dead}")
    assert sink.stats.published == hot == report.processed
    assert source.stats.dead_lettered == 1
    assert source.stats.acknowledged == READINGS + 1

    # Alerts per room per minute, on receive time, read by a second session.
    recount = MqttSource(f"{root}/alerts/+", client_id=f"{root}-count", session_expiry="1m",
                         stop_when_idle="1s")
    await recount.subscribe_only()  # MQTT keeps no history: subscribe before publishing
    async with MqttSink(root + "/alerts/{room}") as again:
        await again.write_batch([{"room": ROOMS[i % 3], "copy": i} for i in range(30)])
    counts = MemorySink()
    counting = StreamingPipeline("per-room")
    counting.set_source(recount)
    counting.add_node(WindowedAggregateNode(
        name="per_room", window=TumblingWindow("1m"), key=lambda m: m.topic,
        aggregate=Count()))
    counting.set_sink(counts)
    await counting.execute()
    print(f"alerts per room and minute: {sorted(w.count for w in counts.items)}")
    assert sum(w.count for w in counts.items) == 30


if __name__ == "__main__":
    trio.run(main)
