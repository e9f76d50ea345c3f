"""RabbitMQSink against the real broker: confirmed, persistent, ordered per routing key,
unroutable and oversized messages reported per item, clear errors."""

from __future__ import annotations

import orjson
import pytest
from haive_plugin_rabbitmq import (
    MessageTooLargeError,
    RabbitMessage,
    RabbitMQAuthError,
    RabbitMQSink,
    RabbitMQSource,
    UnknownExchangeError,
    UnknownQueueError,
    UnroutableError,
    queue_message_count,
)

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import read_queue

pytestmark = pytest.mark.rabbitmq


async def test_write_returns_once_the_broker_confirmed_every_message(queues) -> None:
    async with RabbitMQSink(routing_key=queues.output) as sink:
        for start in range(0, 3_000, 1_000):
            await sink.write_batch([{"n": n} for n in range(start, start + 1_000)])
            # Confirmed means enqueued: the count is there the moment write_batch returns.
            assert await queue_message_count(queues.output) == start + 1_000
    assert sink.stats.published == 3_000 and sink.stats.retries == 0
    stored = await read_queue(queues.url, queues.output)
    assert [orjson.loads(m.body)["n"] for m in stored] == list(range(3_000))
    assert {m.delivery_mode for m in stored} == {2}  # persistent
    assert len({m.message_id for m in stored}) == 3_000  # unique ids: duplicates detectable


async def test_order_is_kept_per_routing_key(queues) -> None:
    source = RabbitMQSource(queues.output, exchange=queues.exchange, exchange_type="direct",
                            routing_keys=["a", "b"], declare=True)
    async with source:
        pass
    async with RabbitMQSink(queues.exchange, routing_key=lambda item: item["key"]) as sink:
        await sink.write_batch([{"key": "ab"[n % 2], "n": n} for n in range(1_000)])
    stored = await read_queue(queues.url, queues.output)
    for key in "ab":
        ns = [orjson.loads(m.body)["n"] for m in stored if m.routing_key == key]
        assert ns == sorted(ns) and len(ns) == 500


async def test_an_unroutable_message_is_an_error_not_a_silent_drop(queues) -> None:
    source = RabbitMQSource(queues.output, exchange=queues.exchange, routing_keys=["kept.*"],
                            declare=True)
    async with source:
        pass
    async with RabbitMQSink(queues.exchange, routing_key=lambda item: item["to"]) as sink:
        with pytest.raises(RejectedItems) as rejected:
            await sink.write_batch([{"to": "kept.1"}, {"to": "lost.2"}, {"to": "kept.3"}])
    assert list(rejected.value.errors) == [1]
    error = rejected.value.errors[1]
    assert isinstance(error, UnroutableError)
    assert "NO_ROUTE" in str(error) and "'lost.2'" in str(error)
    assert sink.stats.published == 2 and sink.stats.unroutable == 1
    assert await queue_message_count(queues.output) == 2


async def test_unroutable_results_are_dead_lettered_through_the_pipeline(queues) -> None:
    async with RabbitMQSink(routing_key=queues.input) as producer:
        await producer.write_batch([{"to": queues.output}, {"to": "nowhere-queue"}])
    source = RabbitMQSource(queues.input, stop_when_drained=True)
    pipeline = StreamingPipeline("route")
    pipeline.set_source(source)
    pipeline.set_sink(RabbitMQSink(routing_key=lambda m: m.body["to"]))
    report = await pipeline.execute()
    assert report.failed == 1
    dead = await read_queue(queues.url, queues.dead)
    assert len(dead) == 1 and "UnroutableError: NO_ROUTE" in dead[0].headers["x-haive-reason"]
    assert await queue_message_count(queues.output) == 1
    assert await queue_message_count(queues.input) == 0


async def test_an_oversized_message_is_rejected_and_the_others_written(queues) -> None:
    async with RabbitMQSink(routing_key=queues.output, max_message_size=1_000) as sink:
        with pytest.raises(RejectedItems) as rejected:
            await sink.write_batch([{"n": 0}, {"blob": "x" * 2_000}, {"n": 2}])
    error = rejected.value.errors[1]
    assert isinstance(error, MessageTooLargeError)
    assert "larger than max_message_size=1000" in str(error)
    assert await queue_message_count(queues.output) == 2


async def test_a_rabbit_message_is_republished_as_it_came(queues) -> None:
    async with RabbitMQSink(routing_key=queues.input,
                            headers=lambda item: {"trace": "t-1"}) as producer:
        await producer.write_batch([{"n": 1}])
    pipeline = StreamingPipeline("forward")
    pipeline.set_source(RabbitMQSource(queues.input, stop_when_drained=True))
    pipeline.set_sink(RabbitMQSink(routing_key=queues.output))
    await pipeline.execute()
    (stored,) = await read_queue(queues.url, queues.output)
    assert orjson.loads(stored.body) == {"n": 1} and stored.headers == {"trace": "t-1"}


async def test_unknown_exchange_and_queue_are_clear_errors(queues) -> None:
    with pytest.raises(UnknownExchangeError, match=f"no exchange '{queues.exchange}'"):
        async with RabbitMQSink(queues.exchange, routing_key="k"):
            pass
    with pytest.raises(UnknownQueueError, match="no queue 'missing-"):
        async with RabbitMQSink(routing_key=f"missing-{queues.name}"):
            pass


async def test_refused_credentials() -> None:
    with pytest.raises(RabbitMQAuthError, match="refused the credentials"):
        async with RabbitMQSink(routing_key="q", url="amqp://nobody:nothing@127.0.0.1:5672/"):
            pass


async def test_items_that_do_not_encode_are_rejected_per_item(queues) -> None:
    async with RabbitMQSink(routing_key=queues.output) as sink:
        with pytest.raises(RejectedItems) as rejected:
            await sink.write_batch([{"n": 0}, {"bad": object()}, RabbitMessage(
                body=None, payload=b"raw", routing_key="", exchange="", headers={},
                message_id=None, redelivered=False, timestamp=0.0)])
    assert list(rejected.value.errors) == [1]
    assert await queue_message_count(queues.output) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"routing_key": ""}, "routing_key must be a non-empty string"),
        ({"routing_key": "k" * 256}, "at most 255 bytes"),
        ({"routing_key": "k", "url": "redis://x"}, "url must be an amqp"),
        ({"routing_key": "k", "retry": 3}, "retry must be a RetryPolicy"),
        ({"routing_key": "k", "max_message_size": 0}, "max_message_size must be"),
        ({"routing_key": "k", "headers": {"a": 1}}, "headers must be a function"),
        ({"routing_key": "k", "confirm_timeout": "later"}, "confirm_timeout"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RabbitMQSink(**kwargs)

