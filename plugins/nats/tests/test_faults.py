"""Fault tests: the NATS server restarting under a running pipeline, and a worker killed
with SIGKILL in the middle of a batch. At least once: nothing lost, duplicates counted."""

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
from haive_plugin_nats import JetStreamSink, JetStreamSource, NatsMessage, ensure_stream

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import consumer_state, read_subject, subject_count

HERE = Path(__file__).parent


def copies_of(stored) -> Counter[int]:
    return Counter(orjson.loads(m.data)["n"] for m in stored)


@pytest.mark.nats_server
@pytest.mark.slow
async def test_server_restart_under_a_running_pipeline_loses_nothing(nats_server,
                                                                     record_property):
    server = nats_server()
    n, stop_at = 20_000, 6_000
    await ensure_stream("FAULT", ["fault.in", "fault.in.dead", "fault.out"], url=server.url)
    async with JetStreamSink("fault.in", url=server.url) as producer:
        for start in range(0, n, 2_000):
            await producer.write_batch([{"n": i} for i in range(start, start + 2_000)])

    holding, restarted = trio.Event(), trio.Event()
    held_at_restart: list[int] = []

    async def gate(message: NatsMessage) -> object:
        if message.data["n"] >= stop_at and not restarted.is_set():
            holding.set()
            await restarted.wait()  # in flight while the server goes down and comes back
        return message.data

    source = JetStreamSource("fault.in", durable="restart", url=server.url, batch_size=250,
                             ack_wait="2s", stop_when_drained=True)
    sink = JetStreamSink("fault.out", url=server.url)
    pipeline = StreamingPipeline("restart")
    pipeline.set_source(source)
    pipeline.add_processor(gate)
    pipeline.set_sink(sink)

    async def restart_when_held() -> None:
        await holding.wait()
        await trio.sleep(0.2)  # the source fetches its prefetch meanwhile
        held_at_restart.append(source.stats.fetched - source.stats.acknowledged)
        await trio.to_thread.run_sync(server.kill)  # a crash, not a clean shutdown
        await trio.sleep(1.0)
        await trio.to_thread.run_sync(server.start)
        restarted.set()

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_when_held)
            report = await pipeline.execute()

    copies = copies_of(await read_subject(server.url, "FAULT", "fault.out"))
    info = await consumer_state(server.url, "FAULT", "restart")
    result = {
        "published": n,
        "outputs": sum(copies.values()),
        "distinct": len(copies),
        "lost": n - len(copies),
        "duplicated": sum(copies.values()) - len(copies),
        "unacknowledged_when_killed": held_at_restart[0],
        "pipeline_processed": report.processed,
        "fetch_errors": source.stats.fetch_errors,
        "ack_errors": source.stats.ack_errors,
        "sink_retries": sink.stats.retries,
        "sink_duplicates_dropped": sink.stats.duplicates,
    }
    print(result)
    record_property("nats_restart", result)
    assert set(copies) == set(range(n))  # nothing lost
    assert result["duplicated"] <= result["unacknowledged_when_killed"]
    assert info.num_pending == 0 and info.num_ack_pending == 0


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "haive.dataflow.cli", "run", str(HERE / "worker_pipeline.py")],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.nats
@pytest.mark.slow
async def test_worker_killed_mid_batch_loses_nothing(stream, tmp_path, record_property):
    n = 20_000
    async with JetStreamSink(stream.input, url=stream.url) as producer:
        for start in range(0, n, 2_000):
            await producer.write_batch([{"n": i} for i in range(start, start + 2_000)])
    env = {"HAIVE_NATS_TEST_URL": stream.url, "HAIVE_NATS_TEST_STREAM": stream.name}
    hanging = tmp_path / "hanging"
    victim = start_worker({**env, "HAIVE_NATS_TEST_HANG_AFTER": "5000",
                           "HAIVE_NATS_TEST_HANG_FILE": str(hanging)})
    try:
        deadline = time.monotonic() + 120
        while not hanging.exists():
            assert victim.poll() is None, victim.communicate()[1]
            assert time.monotonic() < deadline, "the victim never reached its 5000th item"
            await trio.sleep(0.02)
        held = (await consumer_state(stream.url, stream.name, "workers")).num_ack_pending
        written_before = await subject_count(stream.url, stream.name, stream.output)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    survivor = start_worker(env)
    try:
        _, stderr = await trio.to_thread.run_sync(lambda: survivor.communicate(timeout=300))
    finally:  # a survivor that did not finish must not outlive the test (and its stream)
        if survivor.poll() is None:
            survivor.kill()
            survivor.wait()
    assert survivor.returncode == 0, stderr

    copies = copies_of(await read_subject(stream.url, stream.name, stream.output))
    info = await consumer_state(stream.url, stream.name, "workers")
    result = {
        "published": n,
        "written_before_kill": written_before,
        "unacknowledged_held_by_victim": held,
        "outputs": sum(copies.values()),
        "distinct": len(copies),
        "lost": n - len(copies),
        "duplicated": sum(copies.values()) - len(copies),
    }
    print(result)
    record_property("nats_kill9", result)
    assert held > 0  # the victim died holding unacknowledged messages
    assert set(copies) == set(range(n))  # nothing lost
    # Only what the victim held unacknowledged can come twice.
    assert result["duplicated"] <= held
    assert info.num_pending == 0 and info.num_ack_pending == 0
