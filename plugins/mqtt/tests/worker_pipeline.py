"""A worker pipeline for the kill -9 test, run with ``haive run``: copies ``<root>/in`` to
``<root>/out`` in the persistent session ``<root>-worker``.

Configured by environment variables: ``HAIVE_MQTT_TEST_URL``, ``HAIVE_MQTT_TEST_ROOT``,
``HAIVE_MQTT_TEST_QOS`` (the subscription's maximum QoS, 1 by default);
with ``HAIVE_MQTT_TEST_HANG_AFTER=K`` and ``HAIVE_MQTT_TEST_HANG_FILE=PATH`` the worker
stops in the middle of a batch at its K-th item (earlier outputs written, this batch and
the ones read after it unacknowledged), creates PATH and waits to be killed: the test kills
it at a known point, not after a sleep.
"""

from __future__ import annotations

import os

import trio
from haive_plugin_mqtt import MqttMessage, MqttSink, MqttSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

url = os.environ.get("HAIVE_MQTT_TEST_URL", "mqtt://127.0.0.1:1883")
root = os.environ.get("HAIVE_MQTT_TEST_ROOT", "haive-example")
hang_after = int(os.environ.get("HAIVE_MQTT_TEST_HANG_AFTER", "0"))
hang_file = os.environ.get("HAIVE_MQTT_TEST_HANG_FILE")
qos = int(os.environ.get("HAIVE_MQTT_TEST_QOS", "1"))
RECEIVE_MAXIMUM = 500
seen = 0


def worker_source() -> MqttSource:
    return MqttSource(f"{root}/in", client_id=f"{root}-worker", url=url,
                      qos=qos, receive_maximum=RECEIVE_MAXIMUM, session_expiry="5m",
                      stop_when_idle="2s")


async def copy(message: MqttMessage) -> object:
    global seen
    seen += 1
    if hang_after and seen == hang_after and hang_file:
        await trio.Path(hang_file).touch()
        await trio.sleep_forever()
    return message.data


pipeline = StreamingPipeline("mqtt-worker")
pipeline.set_source(worker_source())
pipeline.add_processor(copy)
pipeline.set_sink(MqttSink(f"{root}/out", url=url, qos=1))
