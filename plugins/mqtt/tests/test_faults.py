"""Fault tests on Mosquitto brokers of the tests' own: the broker restarting under a
running pipeline, and a worker killed with SIGKILL in the middle of a batch. At least
once: nothing lost, duplicates counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import trio
from haive_plugin_mqtt import MqttMessage, MqttSink, MqttSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import Collector, Received, publish_raw

HERE = Path(__file__).parent
pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def copies_of(received: list[Received]) -> Counter[int]:
    return Counter(orjson.loads(m.payload)["n"] for m in received)


def inputs(root: str, n: int, qos: int = 1) -> list[tuple[str, bytes, int, bool]]:
    return [(f"{root}/in", orjson.dumps({"n": i}), qos, False) for i in range(n)]


async def test_broker_restart_under_a_running_pipeline_loses_nothing(mosquitto,
                                                                     record_property):
    broker = mosquitto()
    root, n, stop_at, window = "restart", 20_000, 6_000, 500
    source = MqttSource(f"{root}/in", client_id="restart-worker", url=broker.url,
                        receive_maximum=window, session_expiry="5m", stop_when_idle="2s")
    await source.subscribe_only()
    await trio.to_thread.run_sync(publish_raw, broker.url, inputs(root, n))

    holding, restarted = trio.Event(), trio.Event()
    held_at_restart: list[int] = []

    async def gate(message: MqttMessage) -> object:
        if message.data["n"] >= stop_at and not restarted.is_set():
            holding.set()
            await restarted.wait()  # in flight while the broker goes down and comes back
        return message.data

    sink = MqttSink(f"{root}/out", url=broker.url, qos=1)
    pipeline = StreamingPipeline("restart")
    pipeline.set_source(source)
    pipeline.add_processor(gate)
    pipeline.set_sink(sink)

    async def restart_when_held() -> None:
        await holding.wait()
        await trio.sleep(0.2)  # the source reads up to its window meanwhile
        held_at_restart.append(source.stats.received - source.stats.acknowledged)
        await trio.to_thread.run_sync(broker.stop)  # the store is saved on the way down
        await trio.sleep(1.0)
        await trio.to_thread.run_sync(broker.start)
        restarted.set()

    with Collector(broker.url, [f"{root}/out"], qos=1, client_id="restart-out",
                   persistent=True) as collector:
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_when_held)
                report = await pipeline.execute()
        # The collector's own session kept what came while the broker was away.
        got = await trio.to_thread.run_sync(collector.wait_for, n, 60.0, 1.0)
    copies = copies_of(got)
    result = {
        "published": n,
        "outputs": sum(copies.values()),
        "distinct": len(copies),
        "lost": n - len(copies),
        "duplicated": sum(copies.values()) - len(copies),
        "unacknowledged_at_restart": held_at_restart[0],
        "pipeline_processed": report.processed,
        "source_reconnects": source.stats.reconnects,
        "sessions_lost": source.stats.sessions_lost,
        "stale_acks": source.stats.stale_acks,
        "sink_reconnects": sink.stats.reconnects,
    }
    print(result)
    record_property("mqtt_restart", result)
    assert set(copies) == set(range(n))  # nothing lost
    assert result["sessions_lost"] == 0 and result["source_reconnects"] >= 1
    # Only what was unacknowledged when the broker went down can come twice (plus what
    # the sink had sent and not yet seen confirmed: at most one batch, in the window too).
    assert result["duplicated"] <= window + result["unacknowledged_at_restart"]


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "haive.dataflow.cli", "run", str(HERE / "worker_pipeline.py")],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("qos", [1, 2])
async def test_worker_killed_mid_batch_loses_nothing(mosquitto, tmp_path, record_property,
                                                     qos):
    from .worker_pipeline import RECEIVE_MAXIMUM

    broker = mosquitto()
    root, n = "kill", 20_000
    env = {"HAIVE_MQTT_TEST_URL": broker.url, "HAIVE_MQTT_TEST_ROOT": root,
           "HAIVE_MQTT_TEST_QOS": str(qos)}
    await MqttSource(f"{root}/in", client_id=f"{root}-worker", url=broker.url, qos=qos,
                     session_expiry="5m").subscribe_only()
    await trio.to_thread.run_sync(publish_raw, broker.url, inputs(root, n, qos))
    hanging = tmp_path / "hanging"
    with Collector(broker.url, [f"{root}/out"], qos=1) as collector:
        victim = start_worker({**env, "HAIVE_MQTT_TEST_HANG_AFTER": "5000",
                               "HAIVE_MQTT_TEST_HANG_FILE": str(hanging)})
        try:
            deadline = time.monotonic() + 120
            while not hanging.exists():
                assert victim.poll() is None, victim.communicate()[1]
                assert time.monotonic() < deadline, "the victim never reached its 5000th item"
                await trio.sleep(0.02)
            await trio.sleep(0.3)  # let the outputs confirmed before the hang arrive
            written_before = collector.count()
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
        survivor = start_worker(env)
        _, stderr = await trio.to_thread.run_sync(lambda: survivor.communicate(timeout=300))
        assert survivor.returncode == 0, stderr
        got = await trio.to_thread.run_sync(collector.wait_for, n, 60.0, 1.0)
    copies = copies_of(got)
    result = {
        "qos": qos,
        "published": n,
        "written_before_kill": written_before,
        "outputs": sum(copies.values()),
        "distinct": len(copies),
        "lost": n - len(copies),
        "duplicated": sum(copies.values()) - len(copies),
    }
    print(result)
    record_property(f"mqtt_kill9_qos{qos}", result)
    assert 0 < written_before < n
    assert set(copies) == set(range(n))  # nothing lost
    # Only what the victim held unacknowledged (its receive window) can come twice.
    assert result["duplicated"] <= RECEIVE_MAXIMUM
