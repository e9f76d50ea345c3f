"""MQTT source and sink (haive-plugin-mqtt) against raw paho-mqtt loops, in the same run.

The case starts a Mosquitto of its own on a free port (Mosquitto's defaults, except that an
offline session may queue any number of messages, so a session can be filled before it is
read); it is stopped at the end. Messages are JSON, QoS 1.

* ``mqtt.source.events_per_s``: a StreamingPipeline reading a filled persistent session with
  ``MqttSource`` (receive maximum 1000, reads through the core's ThreadBridge, decode, a
  processor, PUBACKs sent only after the results are handled) in one process, timed to
  the last item processed. ``mqtt.baseline_raw_receive_ack.events_per_s``: paho's own loop
  doing the same receive + decode + PUBACK of every message (``manual_ack=True``, the same
  receive maximum), no pipeline; ``mqtt.source.vs_raw`` is ours over it (target >= 0.8).
  The source reads the socket 64 KiB at a time (``BufferedClient``; paho alone reads each
  packet with three or more ``recv`` calls): ``mqtt.baseline_raw_receive_ack_buffered`` is
  the raw loop with that same client, and ``mqtt.source.vs_raw_buffered`` the ratio for the
  same work.
* ``mqtt.sink.events_per_s``: ``MqttSink.write_batch`` of 1,000 items (JSON-encoded, QoS 1,
  every PUBACK awaited) against ``mqtt.baseline_raw_publish.events_per_s``, paho's
  ``publish`` of the same 1,000 then its loop until every PUBACK came; ``mqtt.sink.vs_raw``.
  Both are bound by the broker's receive maximum (Mosquitto's default: 20 in flight).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import trio

from bench.recorder import Recorder

DESCRIPTION = "MQTT source/sink through the thread bridge vs raw paho-mqtt loops"

RECEIVE_MAXIMUM = 1000


def _items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"k{i % 100}", "seq": i, "v": i * 0.5} for i in range(n)]


class _Broker:
    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = root / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "max_queued_messages 0\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def _raw_client(port: int, client_id: str = "", *, manual_ack: bool = False,
                persistent: bool = False, buffered: bool = False) -> Any:
    import paho.mqtt.client as paho
    from haive_plugin_mqtt.client import BufferedClient
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    kind = BufferedClient if buffered else paho.Client
    client = kind(CallbackAPIVersion.VERSION2, client_id=client_id,
                  protocol=paho.MQTTv5, manual_ack=manual_ack)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        properties.SessionExpiryInterval = 600
    connected: list[bool] = []
    client.on_connect = lambda *args: connected.append(True)
    client.connect("127.0.0.1", port, 60, clean_start=not persistent, properties=properties)
    while not connected:
        client.loop(0.1)
    return client


def _subscribe(port: int, client_id: str, topic: str) -> None:
    """Create a persistent session subscribed to ``topic`` (QoS 1), then leave."""
    client = _raw_client(port, client_id, persistent=True)
    done: list[bool] = []
    client.on_subscribe = lambda *args: done.append(True)
    client.subscribe(topic, 1)
    while not done:
        client.loop(0.1)
    client.disconnect()
    client.loop(0.1)


def _raw_publish(port: int, topic: str, items: list[dict[str, Any]]) -> float:
    client = _raw_client(port)
    started = time.perf_counter()
    for start in range(0, len(items), 1000):
        infos = [client.publish(topic, orjson.dumps(item), 1)
                 for item in items[start:start + 1000]]
        while not all(info.is_published() for info in infos):
            client.loop(1.0)
    rate = len(items) / (time.perf_counter() - started)
    client.disconnect()
    client.loop(0.1)
    return rate


def _raw_source(port: int, client_id: str, n: int,
                buffered: bool = False) -> tuple[float, float]:
    """Events/s and CPU microseconds per event."""
    client = _raw_client(port, client_id, manual_ack=True, persistent=True, buffered=buffered)
    done = 0
    started = cpu = 0.0

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        nonlocal done, started, cpu
        if not started:
            started, cpu = time.perf_counter(), time.process_time()
        orjson.loads(message.payload)["v"]
        c.ack(message.mid, message.qos)
        done += 1

    client.on_message = on_message
    while done < n:
        if buffered and client.buffered:
            client.loop_read()
        else:
            client.loop(1.0)
    rate = n / (time.perf_counter() - started)
    cpu_per_event = (time.process_time() - cpu) / n * 1e6
    client.disconnect()
    client.loop(0.1)
    return rate, cpu_per_event


async def _ours_sink(url: str, topic: str, items: list[dict[str, Any]]) -> float:
    from haive_plugin_mqtt import MqttSink

    async with MqttSink(topic, url=url, qos=1) as sink:
        started = time.perf_counter()
        for start in range(0, len(items), 1000):
            await sink.write_batch(items[start:start + 1000])
        return len(items) / (time.perf_counter() - started)


async def _ours_source(url: str, topic: str, client_id: str, n: int) -> tuple[float, float]:
    """Events/s and CPU microseconds per event (both threads)."""
    from haive_plugin_mqtt import MqttMessage, MqttSource

    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    class TimedSource(MqttSource):
        """Notes when the last acknowledgment was sent."""

        last_acknowledged_at = last_cpu = 0.0

        async def acknowledge(self, count: int) -> None:
            await super().acknowledge(count)
            self.last_acknowledged_at = time.perf_counter()
            self.last_cpu = time.process_time()

    source = TimedSource(topic, client_id=client_id, url=url, receive_maximum=RECEIVE_MAXIMUM,
                         session_expiry="10m", stop_when_idle="200ms")
    seen: list[float] = []

    def value(message: MqttMessage) -> float:
        if not seen:
            seen.extend((time.perf_counter(), time.process_time()))
        v: float = message.data["v"]
        return v

    pipeline = StreamingPipeline("bench-mqtt")
    pipeline.set_source(source)
    pipeline.add_processor(value)
    report = await pipeline.execute()
    # Timed from the first item to the last acknowledgment (stop_when_idle's wait after
    # it is not the source's work).
    finished = source.last_acknowledged_at
    assert report.processed == n and source.stats.acknowledged == n, (report.processed, n)
    return n / (finished - seen[0]), (source.last_cpu - seen[1]) / n * 1e6


def run(rec: Recorder) -> None:
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        print("  no mosquitto binary: mqtt skipped")
        return
    n = 5_000 if rec.quick else 20_000
    items = _items(n)
    with tempfile.TemporaryDirectory(prefix="haive-bench-mqtt-") as tmp:
        broker = _Broker(Path(tmp))
        try:
            runs = 3
            ours_sink, raw_sink = [], []
            for _ in range(runs):
                ours_sink.append(trio.run(_ours_sink, broker.url, "bench/sink", items))
                raw_sink.append(_raw_publish(broker.port, "bench/sink", items))
            ours = rec.figure("mqtt.sink.events_per_s", max(ours_sink), "events/s",
                              "1,000 per batch, QoS 1, every PUBACK awaited")
            raw = rec.figure("mqtt.baseline_raw_publish.events_per_s", max(raw_sink),
                             "events/s", "paho publish x1,000 + loop until every PUBACK")
            rec.ratio("mqtt.sink.vs_raw", ours, raw)

            ours_source: list[tuple[float, float]] = []
            raw_source: list[tuple[float, float]] = []
            buffered_source: list[tuple[float, float]] = []
            for run in range(runs):
                topic = f"bench/source/{uuid.uuid4().hex[:8]}"
                for reader in ("ours", "raw", "buffered"):
                    _subscribe(broker.port, f"{reader}-{run}", topic)
                _raw_publish(broker.port, topic, items)  # every session gets all of them
                readers = [
                    lambda: ours_source.append(
                        trio.run(_ours_source, broker.url, topic, f"ours-{run}", n)),
                    lambda: raw_source.append(_raw_source(broker.port, f"raw-{run}", n)),
                    lambda: buffered_source.append(
                        _raw_source(broker.port, f"buffered-{run}", n, buffered=True)),
                ]
                for index in range(len(readers)):  # who reads first changes every run
                    readers[(index + run) % len(readers)]()
            ours_best, raw_best, buffered_best = (
                max(runs_) for runs_ in (ours_source, raw_source, buffered_source))
            ours = rec.figure("mqtt.source.events_per_s", ours_best[0], "events/s",
                              "pipeline, at least once, one worker")
            raw = rec.figure("mqtt.baseline_raw_receive_ack.events_per_s", raw_best[0],
                             "events/s", "paho loop, decode + PUBACK each, no pipeline")
            rec.ratio("mqtt.source.vs_raw", ours, raw)
            buffered = rec.figure(
                "mqtt.baseline_raw_receive_ack_buffered.events_per_s", buffered_best[0],
                "events/s", "the same paho loop reading 64 KiB at a time, as the source does")
            rec.ratio("mqtt.source.vs_raw_buffered", ours, buffered,
                      "same work: buffered socket reads on both sides")
            # CPU per event (all threads) of the same best runs: on a loaded machine the
            # wall-clock ratio also measures how the two threads get scheduled.
            rec.figure("mqtt.source.cpu_us_per_event", ours_best[1], "us", "both threads")
            rec.figure("mqtt.baseline_raw_receive_ack.cpu_us_per_event", raw_best[1], "us")
            rec.figure("mqtt.baseline_raw_receive_ack_buffered.cpu_us_per_event",
                       buffered_best[1], "us")
        finally:
            broker.stop()
