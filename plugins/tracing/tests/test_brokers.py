"""Trace context through each broker's headers: a traced producer pipeline writes with the
broker's sink, a traced consumer pipeline reads with its source; every item the consumer
sends on is in the trace the producer gave it. Real servers on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan

from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import outgoing_trace_headers
from haive.dataflow.runtime.config import StreamConfig

ITEMS = 12
#: The producer reads its items two at a time: six batches, six traces.
CHUNK = 2


class HeaderSink(StreamSink):
    """Keeps each item with the trace headers the pipeline gave it to send."""

    def __init__(self) -> None:
        self.written: list[tuple[Any, Any]] = []

    async def write_batch(self, items: list[Any]) -> None:
        headers = outgoing_trace_headers()
        for index, item in enumerate(items):
            self.written.append((item, None if headers is None else headers[index]))


async def produce(sink: StreamSink) -> None:
    producer = StreamingPipeline("producer", config=StreamConfig(chunk_size=CHUNK))
    producer.set_source(IterableSource(range(ITEMS)))
    producer.add_processor(lambda n: {"n": n})
    producer.set_sink(sink)
    await producer.execute()


def consumer_of(source: DataSource, sink: HeaderSink) -> StreamingPipeline:
    consumer = StreamingPipeline("consumer")
    consumer.set_source(source)
    consumer.add_processor(lambda item: item)
    consumer.set_sink(sink)
    return consumer


def check_one_trace_per_item(spans: tuple[ReadableSpan, ...], sink: HeaderSink) -> None:
    sends = {s.context.span_id: s.context.trace_id for s in spans if s.name.startswith("producer send")}
    producer_traces = set(sends.values())
    assert len(producer_traces) == ITEMS // CHUNK
    receives = [s for s in spans if s.name == "consumer receive"]
    assert receives
    for receive in receives:
        # The consumer's receive span continues the producer's send span it got the item from.
        assert receive.parent is not None and receive.parent.is_remote
        assert sends[receive.parent.span_id] == receive.context.trace_id
    assert len(sink.written) == ITEMS
    from haive_plugin_tracing import span_of

    for _, headers in sink.written:
        assert headers is not None
        context = span_of(headers)
        assert context is not None and context.trace_id in producer_traces


# -- NATS JetStream ------------------------------------------------------------------------


@pytest.mark.nats
async def test_nats_headers_carry_the_trace(traced):
    from haive_plugin_nats import JetStreamSink, JetStreamSource, delete_stream, ensure_stream

    _, exporter = traced()
    url = "nats://127.0.0.1:4222"
    name = f"T{uuid.uuid4().hex[:12]}"
    await ensure_stream(name, [f"{name}.in", f"{name}.in.dead"], url=url, storage="memory")
    try:
        await produce(JetStreamSink(f"{name}.in", url=url))
        sink = HeaderSink()
        source = JetStreamSource(f"{name}.in", stream=name, url=url, stop_when_drained=True)
        await consumer_of(source, sink).execute()
    finally:
        await delete_stream(name, url=url)
    check_one_trace_per_item(exporter.get_finished_spans(), sink)


# -- Kafka ---------------------------------------------------------------------------------


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[Any]:
    from haive_plugin_kafka.testing import TansuBroker

    with TansuBroker(tmp_path / "tansu") as running:
        yield running


@pytest.mark.kafka
async def test_kafka_record_headers_carry_the_trace(traced, kafka_broker):
    from haive_plugin_kafka import KafkaSink, KafkaSource

    _, exporter = traced()
    topic = f"t-{uuid.uuid4().hex[:12]}"
    kafka_broker.create_topic(topic, partitions=1)
    servers = kafka_broker.bootstrap_servers
    await produce(KafkaSink(topic, bootstrap_servers=servers))
    sink = HeaderSink()
    source = KafkaSource(
        topic,
        group=f"g-{uuid.uuid4().hex[:10]}",
        bootstrap_servers=servers,
        stop_when_drained=True,
        session_timeout="2s",
    )
    await consumer_of(source, sink).execute()
    check_one_trace_per_item(exporter.get_finished_spans(), sink)


# -- HTTP ----------------------------------------------------------------------------------


async def test_http_request_headers_carry_the_trace(traced):
    from haive_plugin_http import HttpSink, WebhookSource

    _, exporter = traced()
    source = WebhookSource(port=0, ack="written")
    sink = HeaderSink()
    async with source.serving(), trio.open_nursery() as nursery:
        nursery.start_soon(consumer_of(source, sink).execute)
        await produce(HttpSink(source.url))
        source.stop()
    check_one_trace_per_item(exporter.get_finished_spans(), sink)
