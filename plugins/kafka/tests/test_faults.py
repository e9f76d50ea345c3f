"""Faults against a real broker: a worker killed with SIGKILL mid-stream, the broker's
connections dropped and refused while a pipeline runs (tansu's proxy restarted), a real
broker restart under the sink, and a rebalance between two members of one group.

Every test counts exactly: each input record is in the output at least once, and the
duplicates are at most the uncommitted tail."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from confluent_kafka import Producer
from haive_plugin_kafka import KafkaSink, KafkaSource
from haive_plugin_kafka.testing import TansuBroker, TansuProxy

from haive.dataflow import StreamingPipeline
from haive.dataflow.io.sinks import StreamSink

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WORKER = str(Path(__file__).with_name("copy_worker.py"))


def produce_numbers(bootstrap: str, name: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in range(count):
        producer.produce(name, orjson.dumps({"n": n}), key=str(n % 11).encode())
    assert producer.flush(30) == 0


def numbers(messages: list[Any]) -> collections.Counter[int]:
    return collections.Counter(orjson.loads(m.value())["n"] for m in messages)


def copy_pipeline(source: KafkaSource, sink: StreamSink) -> StreamingPipeline:
    pipeline = StreamingPipeline(f"copy-{uuid.uuid4().hex[:6]}")
    pipeline.set_source(source)
    pipeline.set_sink(sink)
    return pipeline


async def test_worker_killed_mid_stream_loses_nothing(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    read_topic, committed = kafka_io
    total = 6000
    source_topic, out = topic(3), topic(3)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce_numbers(broker.bootstrap_servers, source_topic, total)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = await trio.lowlevel.open_process(
        [sys.executable, WORKER, broker.bootstrap_servers, source_topic, out, group],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert worker.stdout is not None
    written_before_kill = 0
    buffer = b""
    with trio.fail_after(120):
        while written_before_kill < 1500:
            chunk = await worker.stdout.receive_some()
            assert chunk, "the worker exited before it was killed"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"written "):
                    written_before_kill = int(line.split()[1])
    worker.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, offsets uncommitted
    await worker.wait()
    assert worker.returncode == -signal.SIGKILL
    committed_at_kill = sum(max(0, o) for o in committed(broker.bootstrap_servers, group, source_topic).values())
    assert committed_at_kill < total

    # A second worker of the same group resumes from the committed offsets.
    source = KafkaSource(
        source_topic, group=group, bootstrap_servers=broker.bootstrap_servers,
        stop_when_drained=True, session_timeout="2s",
    )
    await copy_pipeline(source, KafkaSink(out, bootstrap_servers=broker.bootstrap_servers)).execute()
    counts = numbers(read_topic(broker.bootstrap_servers, out, total))
    assert set(counts) == set(range(total))  # nothing lost
    duplicates = sum(counts.values()) - total
    # Only the uncommitted tail is written twice: what the killed worker wrote after its
    # last commit.
    assert duplicates <= total - committed_at_kill
    assert sum(committed(broker.bootstrap_servers, group, source_topic).values()) == total
    print(
        f"kill -9: {total} records, {written_before_kill}+ written before the kill, "
        f"{committed_at_kill} committed then, {duplicates} duplicates after the restart"
    )


async def test_broker_connections_restarted_mid_stream(
    tmp_path: Path, kafka_io: Any
) -> None:
    read_topic, committed = kafka_io
    total = 6000
    with TansuBroker(tmp_path / "b") as broker, TansuProxy(tmp_path / "p", broker) as proxy:
        broker.create_topic("in", 3)
        broker.create_topic("out", 3)
        produce_numbers(broker.bootstrap_servers, "in", total)
        source = KafkaSource(
            "in", group="g", bootstrap_servers=proxy.bootstrap_servers, batch_size=100,
            stop_when_drained=True, session_timeout="6s",
        )

        busy = trio.Event()

        class Slow(KafkaSink):
            async def write_batch(self, items: list[Any]) -> None:
                await trio.sleep(0.02)
                await super().write_batch(items)
                if self.written >= 1000:
                    busy.set()

        sink = Slow("out", bootstrap_servers=proxy.bootstrap_servers, key="n")
        restarted = trio.Event()

        async def restart_when_busy() -> None:
            await busy.wait()
            # Every connection drops and is refused for a second; the broker keeps its data.
            await trio.to_thread.run_sync(proxy.restart, 1.0)
            restarted.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_when_busy)
            with trio.fail_after(180):
                await copy_pipeline(source, sink).execute()
        assert restarted.is_set()
        counts = numbers(read_topic(broker.bootstrap_servers, "out", total))
        assert set(counts) == set(range(total))
        duplicates = sum(counts.values()) - total
        offsets = committed(broker.bootstrap_servers, "g", "in")
        assert sum(offsets.values()) == total, (offsets, source.stats)
        print(
            f"proxy restart: {total} records, {duplicates} duplicates, "
            f"{source.stats.transient_errors} transient errors, "
            f"{source.stats.commit_retries} commits retried"
        )


async def test_sink_waits_through_a_broker_restart(tmp_path: Path, kafka_io: Any) -> None:
    read_topic, _ = kafka_io
    with TansuBroker(tmp_path / "b") as broker, TansuProxy(tmp_path / "p", broker) as proxy:
        broker.create_topic("out", 2)
        async with KafkaSink("out", bootstrap_servers=proxy.bootstrap_servers, key="n") as sink:
            await sink.write_batch([{"n": n} for n in range(100)])
            await trio.to_thread.run_sync(proxy.stop)

            async def start_again() -> None:
                await trio.sleep(1.5)
                await trio.to_thread.run_sync(proxy.start)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(start_again)
                # Written while nothing answers: librdkafka retries with backoff until the
                # broker is back, and write_batch returns only once every record is acked.
                with trio.fail_after(60):
                    await sink.write_batch([{"n": n} for n in range(100, 300)])
                    done_at = trio.current_time()
        assert done_at is not None
        counts = numbers(read_topic(broker.bootstrap_servers, "out", 300))
        # Every record exactly once: the idempotent producer's retries add no duplicates.
        assert counts == collections.Counter(range(300))


class SlowCollect(StreamSink):
    """Collects items at a bounded rate: ``delay`` seconds per 100 items (per item, not per
    write: the pipeline merges batches into larger writes when the source reads ahead)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.items: list[Any] = []
        self.reached_1500 = trio.Event()

    async def write_batch(self, items: list[Any]) -> None:
        await trio.sleep(self.delay * len(items) / 100)
        self.items.extend(items)
        if len(self.items) >= 1500:
            self.reached_1500.set()


async def test_rebalance_commits_what_is_done_and_duplicates_only_the_tail(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    _, committed = kafka_io
    total = 8000
    name = topic(4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce_numbers(broker.bootstrap_servers, name, total)

    def member() -> KafkaSource:
        # Not stop_when_drained: a member leaving while another joins is where tansu's
        # group coordinator can stall a join (see the README); both run until the test has
        # seen every record, then are cancelled (closing commits what was acknowledged).
        return KafkaSource(
            name, group=group, bootstrap_servers=broker.bootstrap_servers, batch_size=100,
            ack_every=1000, session_timeout="2s",
        )

    first, second = member(), member()
    # Slow enough that the first member is mid-stream when the second joins.
    first_sink, second_sink = SlowCollect(0.1), SlowCollect(0.1)

    def seen() -> int:
        return len({item["n"] for item in first_sink.items + second_sink.items})

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy_pipeline(first, first_sink).execute)
            await first_sink.reached_1500.wait()
            nursery.start_soon(copy_pipeline(second, second_sink).execute)
            # Polled: the condition spans two sinks and two sources' acknowledgments.
            while seen() < total or first._unacked.item_count or second._unacked.item_count:  # noqa: ASYNC110
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    counts = collections.Counter(item["n"] for item in first_sink.items + second_sink.items)
    assert set(counts) == set(range(total))
    duplicates = sum(counts.values()) - total
    assert first.stats.revocations >= 1 and second.stats.assignments >= 1
    # A revoked partition's acknowledged offsets were committed in the callback; only the
    # records read and not yet acknowledged then (at most ack_every + one batch per
    # revocation) are read again by the new owner.
    assert duplicates <= first.stats.revocations * (1000 + 100)
    assert len(second_sink.items) > 0  # the second member took partitions mid-stream
    assert sum(committed(broker.bootstrap_servers, group, name).values()) == total
    print(
        f"rebalance: {total} records, {duplicates} duplicates, "
        f"{first.stats.revoke_commits} revoke commits, "
        f"{first.stats.stale_acknowledgments} stale acknowledgments, "
        f"{len(first_sink.items)} + {len(second_sink.items)} records per member"
    )
