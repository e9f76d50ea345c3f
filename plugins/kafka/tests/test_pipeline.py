"""KafkaSource and KafkaSink in pipelines against a real broker (tansu, started by the fixtures)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import trio
from confluent_kafka import Producer
from haive_plugin_kafka import KafkaRecord, KafkaSink, KafkaSource
from haive_plugin_kafka.source import FETCHES_PER_CROSSING, READ_AHEAD
from haive_plugin_kafka.testing import TansuBroker

from haive.dataflow import StreamingPipeline, get_registry
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.runtime.nodes import TransformNode
from haive.dataflow.state.aggregators import Count
from haive.dataflow.streaming import TumblingWindow, WindowedAggregateNode

pytestmark = pytest.mark.kafka

GROUP_SETTINGS: dict[str, Any] = {"session_timeout": "2s"}


def group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def produce(broker: TansuBroker, name: str, values: list[Any], keys: bool = True) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for n, value in enumerate(values):
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        producer.produce(
            name,
            payload,
            key=f"k{n % 7}".encode() if keys else None,
            headers=[("n", str(n).encode())],
            timestamp=1_700_000_000_000 + n * 100,
        )
    assert producer.flush(30) == 0


def test_registered_and_declared() -> None:
    registry = get_registry()
    assert registry.source("kafka") is KafkaSource
    assert registry.sink("kafka") is KafkaSink
    assert registry.manifest_problems("haive-plugin-kafka") == []


async def test_copy_through_a_pipeline_commits_everything(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    read_topic, committed = kafka_io
    source_topic, out = topic(3), topic(3)
    produce(broker, source_topic, [{"n": n} for n in range(3000)])
    name = group()
    source = KafkaSource(
        source_topic,
        group=name,
        bootstrap_servers=broker.bootstrap_servers,
        batch_size=200,
        stop_when_drained=True,
        **GROUP_SETTINGS,
    )
    pipeline = StreamingPipeline("copy")
    pipeline.set_source(source)
    pipeline.add_processor(lambda item: {"n": item["n"] * 10})
    pipeline.set_sink(KafkaSink(out, bootstrap_servers=broker.bootstrap_servers, key="n"))
    report = await pipeline.execute()
    assert report.processed == 3000
    assert report.failed == 0
    values = sorted(orjson.loads(m.value())["n"] for m in read_topic(broker.bootstrap_servers, out, 3000))
    assert values == [n * 10 for n in range(3000)]
    offsets = committed(broker.bootstrap_servers, name, source_topic)
    assert sum(offsets.values()) == 3000  # every partition committed to its end
    assert source.stats.commits >= 1


async def test_records_carry_metadata_and_serve_as_event_time(
    broker: TansuBroker, topic: Callable[..., str]
) -> None:
    name = topic(1)
    produce(broker, name, [{"user": "ada"}] * 25)
    source = KafkaSource(
        name,
        group=group(),
        bootstrap_servers=broker.bootstrap_servers,
        with_metadata=True,
        stop_when_drained=True,
        **GROUP_SETTINGS,
    )
    sink = MemorySink()
    records = MemorySink()
    pipeline = StreamingPipeline("windows")
    pipeline.set_source(source)

    def keep(record: KafkaRecord) -> KafkaRecord:
        records.items.append(record)
        return record

    pipeline.add_processor(keep)
    # 100 ms apart from 1_700_000_000.0: tumbling 1 s windows of 10 records each.
    pipeline.add_node(
        WindowedAggregateNode(name="per_second", window=TumblingWindow("1s"), aggregate=Count())
    )
    pipeline.set_sink(sink)
    await pipeline.execute()
    first = records.items[0]
    assert (first.topic, first.partition, first.offset) == (name, 0, 0)
    assert first.key == b"k0" and first.header("n") == b"0"
    assert first.value == {"user": "ada"}
    assert first.timestamp == pytest.approx(1_700_000_000.0)
    assert first.timestamp_type == "create_time"
    counts = sorted((w.start, w.value) for w in sink.items)
    assert counts == [
        (pytest.approx(1_700_000_000.0), 10),
        (pytest.approx(1_700_000_001.0), 10),
        (pytest.approx(1_700_000_002.0), 5),
    ]


async def test_failures_go_to_the_dead_letter_topic_with_the_reason(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    read_topic, committed = kafka_io
    name = topic(2)
    produce(broker, name, [{"n": n} for n in range(40)] + [b"{not json"])
    name_group = group()
    source = KafkaSource(
        name,
        group=name_group,
        bootstrap_servers=broker.bootstrap_servers,
        stop_when_drained=True,
        **GROUP_SETTINGS,
    )

    def check(item: dict[str, int]) -> dict[str, int]:
        if item["n"] % 10 == 3:
            raise ValueError(f"bad {item['n']}")
        return item

    sink = MemorySink()
    pipeline = StreamingPipeline("dlq")
    pipeline.set_source(source)
    pipeline.add_node(TransformNode(name="check", transform_fn=check))
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert len(sink.items) == 36
    dead = read_topic(broker.bootstrap_servers, f"{name}.dead", 5)
    assert len(dead) == 5
    by_reason = {dict(m.headers())["haive.reason"].decode(): m for m in dead}
    undecodable = [r for r in by_reason if r.startswith("cannot decode")]
    assert len(undecodable) == 1
    assert by_reason[undecodable[0]].value() == b"{not json"
    failed = sorted(orjson.loads(m.value())["n"] for r, m in by_reason.items() if "check" in r)
    assert failed == [3, 13, 23, 33]
    headers = dict(by_reason["processor 'check' failed: ValueError: bad 3"].headers())
    assert headers["haive.node"] == b"check" and headers["haive.group"] == name_group.encode()
    assert headers["haive.topic"] == name.encode() and headers["n"] == b"3"
    assert sum(committed(broker.bootstrap_servers, name_group, name).values()) == 41


async def test_sink_keeps_order_per_key(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    read_topic, _ = kafka_io
    name = topic(4)
    sink = KafkaSink(name, bootstrap_servers=broker.bootstrap_servers, key="user")
    items = [{"user": f"u{n % 5}", "seq": n} for n in range(2000)]
    async with sink:
        for start in range(0, 2000, 300):
            await sink.write_batch(items[start : start + 300])
    assert sink.written == 2000
    per_key: dict[bytes, list[int]] = {}
    partitions: dict[bytes, set[int]] = {}
    for message in read_topic(broker.bootstrap_servers, name, 2000):
        per_key.setdefault(message.key(), []).append(orjson.loads(message.value())["seq"])
        partitions.setdefault(message.key(), set()).add(message.partition())
    assert sum(len(v) for v in per_key.values()) == 2000
    for seqs in per_key.values():
        assert seqs == sorted(seqs)
    assert all(len(p) == 1 for p in partitions.values())


async def test_sink_rejects_items_that_do_not_encode(
    broker: TansuBroker, topic: Callable[..., str], kafka_io: Any
) -> None:
    from haive.dataflow.io.sinks import RejectedItems

    read_topic, _ = kafka_io
    name = topic(1)
    sink = KafkaSink(
        name, bootstrap_servers=broker.bootstrap_servers, config={"message.max.bytes": 5000}
    )
    async with sink:
        with pytest.raises(RejectedItems) as caught:
            await sink.write_batch([{"n": 1}, {"n": object()}, {"n": 3}, {"n": "x" * 8000}])
    assert sorted(caught.value.errors) == [1, 3]
    assert "too large" in str(caught.value.errors[3]).lower()
    assert sink.written == 2
    assert sorted(m.value() for m in read_topic(broker.bootstrap_servers, name, 2)) == [
        b'{"n":1}',
        b'{"n":3}',
    ]


async def test_unknown_topic_is_a_clear_error(broker: TansuBroker) -> None:
    from haive_plugin_kafka import UnknownTopicError

    with pytest.raises(UnknownTopicError, match=r"no topic 'absent-topic-x' on 127\.0\.0\.1:"):
        async with KafkaSink("absent-topic-x", bootstrap_servers=broker.bootstrap_servers):
            pass
    source = KafkaSource("absent-topic-y", bootstrap_servers=broker.bootstrap_servers)
    with pytest.raises(UnknownTopicError, match="absent-topic-y"):
        await source.open()
    assert "absent-topic-x" not in broker_topics(broker)  # nothing was auto-created


def broker_topics(broker: TansuBroker) -> set[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    return set(admin.list_topics(timeout=30).topics)


async def test_refused_credentials_are_a_clear_error(tmp_path: Any) -> None:
    from haive_plugin_kafka import KafkaConnectionError

    with TansuBroker(tmp_path, authentication=True) as secured:
        sink = KafkaSink(
            "orders",
            bootstrap_servers=secured.bootstrap_servers,
            metadata_timeout="3s",
            config={
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "ada",
                "sasl.password": "wrong",
            },
        )
        with pytest.raises(KafkaConnectionError, match=secured.bootstrap_servers) as caught:
            await sink.open()
        assert "authentication" in str(caught.value)


def test_bad_settings_name_the_parameter() -> None:
    from haive.dataflow.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size must be an int >= 1, got 0"):
        KafkaSource("t", batch_size=0)
    with pytest.raises(ConfigError, match="start must be one of"):
        KafkaSource("t", start="middle")
    with pytest.raises(ConfigError, match=r"config\['enable.auto.commit'\] is set by"):
        KafkaSource("t", config={"enable.auto.commit": True})
    with pytest.raises(ConfigError, match=r"config\['acks'\] is set by"):
        KafkaSink("t", config={"acks": "1"})
    with pytest.raises(ConfigError, match="topics must be"):
        KafkaSource([])
    with pytest.raises(ConfigError, match="retry_backoff_max"):
        KafkaSink("t", retry_backoff="2s", retry_backoff_max="1s")


class SlowSink(StreamSink):
    """Counts what is in flight between the source's reads and the writes."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source
        self.written = 0
        self.most_ahead = 0

    async def write_batch(self, items: list[Any]) -> None:
        await trio.sleep(0.01)
        self.written += len(items)
        self.most_ahead = max(self.most_ahead, self.source.stats.read - self.written)


async def test_a_slow_pipeline_stops_the_reading(
    broker: TansuBroker, topic: Callable[..., str]
) -> None:
    name = topic(2)
    produce(broker, name, [{"n": n} for n in range(4000)])
    source = KafkaSource(
        name,
        group=group(),
        bootstrap_servers=broker.bootstrap_servers,
        batch_size=100,
        ack_every=400,
        prefetch_kbytes=64,
        stop_when_drained=True,
        **GROUP_SETTINGS,
    )
    sink = SlowSink(source)
    pipeline = StreamingPipeline("slow")
    pipeline.set_source(source)
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.written == 4000
    # What the source read and the sink did not write yet stays bounded: the source reads
    # only when the pipeline asks: the crossing being yielded and READ_AHEAD crossings
    # ahead, of FETCHES_PER_CROSSING batches each, at most (librdkafka's own prefetch is
    # bounded by prefetch_kbytes).
    assert sink.most_ahead <= 400 + 100 + (READ_AHEAD + 1) * FETCHES_PER_CROSSING * 100
