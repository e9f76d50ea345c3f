"""RabbitMQ source and sink (haive-plugin-rabbitmq) against raw aio-pika, in the same run.

Each side gets its own durable queue, filled by the sink runs themselves.

* ``rabbitmq.sink.events_per_s``: ``RabbitMQSink.write_batch`` of 1,000 items
  (JSON-encoded, persistent, mandatory, every publisher confirm awaited) against
  ``rabbitmq.baseline_raw_publish.events_per_s``, aio-pika's ``exchange.publish`` of the
  same 1,000 (persistent, mandatory, on a confirming channel) gathered;
  ``rabbitmq.sink.vs_raw`` (target >= 0.8).
* ``rabbitmq.source.events_per_s``: a StreamingPipeline reading the queue with
  ``RabbitMQSource`` (at least once: prefetch 1,000, batches of 250 through the core's
  AsyncioBridge, decode, a processor, one multiple-ack per acknowledgment point after the
  results are handled) in one process, against
  ``rabbitmq.baseline_raw_consume_ack.events_per_s``: aio-pika consuming the same way
  (prefetch 1,000, decode, one multiple-ack per 250) with no pipeline;
  ``rabbitmq.source.vs_raw`` (target >= 0.8).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import orjson
import trio

from bench.recorder import Recorder

DESCRIPTION = "RabbitMQ source/sink through the asyncio bridge vs raw aio-pika"

URL = "amqp://guest:guest@127.0.0.1:5672/"


def _answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            return conn.recv(7)[:3] == b"\x01\x00\x00"
    except OSError:
        return False


def _items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"k{i % 100}", "seq": i, "v": i * 0.5} for i in range(n)]


async def _declare(queues: list[str], delete: bool = False) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            if delete:
                await channel.queue_delete(queue)
            else:
                await channel.declare_queue(queue, durable=True)


async def _ours_sink(queue: str, items: list[dict[str, Any]]) -> float:
    from haive_plugin_rabbitmq import RabbitMQSink

    async with RabbitMQSink(routing_key=queue, url=URL) as sink:
        started = time.perf_counter()
        for start in range(0, len(items), 1000):
            await sink.write_batch(items[start : start + 1000])
        return len(items) / (time.perf_counter() - started)


async def _raw_sink(queue: str, items: list[dict[str, Any]]) -> float:
    import aio_pika

    connection = await aio_pika.connect_robust(URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = channel.default_exchange
        started = time.perf_counter()
        for start in range(0, len(items), 1000):
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(orjson.dumps(item),
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                     content_type="application/json"),
                    routing_key=queue, mandatory=True,
                )
                for item in items[start : start + 1000]
            ))
        return len(items) / (time.perf_counter() - started)


async def _ours_source(queue: str, n: int) -> float:
    from haive_plugin_rabbitmq import RabbitMQSource

    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    source = RabbitMQSource(queue, url=URL, prefetch=1000, batch_size=250,
                            stop_when_drained=True)
    pipeline = StreamingPipeline("bench-rabbitmq")
    pipeline.set_source(source)
    pipeline.add_processor(lambda m: m.body["v"])
    started = time.perf_counter()
    report = await pipeline.execute()
    elapsed = time.perf_counter() - started
    assert report.processed == n, (report.processed, n)
    return n / elapsed


async def _raw_source(queue: str, n: int) -> float:
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage

    connection = await aio_pika.connect_robust(URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        q = await channel.declare_queue(queue, passive=True)
        pending: list[AbstractIncomingMessage] = []
        arrived = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            pending.append(message)
            arrived.set()

        started = time.perf_counter()
        await q.consume(on_message)
        done = 0
        while done < n:
            if not pending:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 10)
            batch = pending[:250]
            del pending[:250]
            for message in batch:
                orjson.loads(message.body)["v"]
            await batch[-1].ack(multiple=True)
            done += len(batch)
        return done / (time.perf_counter() - started)


def run(rec: Recorder) -> None:
    if not _answers():
        print("  no RabbitMQ on 127.0.0.1:5672: rabbitmq skipped")
        return
    n = 5_000 if rec.quick else 20_000
    tag = uuid.uuid4().hex[:8]
    ours_queue, raw_queue = f"bench-{tag}-ours", f"bench-{tag}-raw"
    items = _items(n)
    asyncio.run(_declare([ours_queue, raw_queue, f"{ours_queue}.dead"]))
    try:
        # Best of three, ours and the baseline alternating (the machine is shared); each
        # round's sinks fill the queues its sources then drain.
        ours_sink, raw_sink, ours_source, raw_source = [], [], [], []
        for _ in range(3):
            ours_sink.append(trio.run(_ours_sink, ours_queue, items))
            raw_sink.append(asyncio.run(_raw_sink(raw_queue, items)))
            ours_source.append(trio.run(_ours_source, ours_queue, n))
            raw_source.append(asyncio.run(_raw_source(raw_queue, n)))
        ours = rec.figure("rabbitmq.sink.events_per_s", max(ours_sink), "events/s",
                          "1,000 per batch, persistent, mandatory, every confirm awaited")
        raw = rec.figure("rabbitmq.baseline_raw_publish.events_per_s", max(raw_sink),
                         "events/s", "aio-pika publish x1,000 + gather, confirms")
        rec.ratio("rabbitmq.sink.vs_raw", ours, raw)
        ours = rec.figure("rabbitmq.source.events_per_s", max(ours_source), "events/s",
                          "pipeline, at least once, one worker")
        raw = rec.figure("rabbitmq.baseline_raw_consume_ack.events_per_s", max(raw_source),
                         "events/s", "aio-pika consume, prefetch 1,000, decode, ack per 250")
        rec.ratio("rabbitmq.source.vs_raw", ours, raw)
    finally:
        asyncio.run(_declare([ours_queue, raw_queue, f"{ours_queue}.dead"], delete=True))
