"""RabbitMQSource against the real broker: acks after write, prefetch as the bound, dead
letters with the reason, malformed bodies, the event's fields, clear errors."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import trio
from haive_plugin_rabbitmq import (
    RabbitMessage,
    RabbitMQAuthError,
    RabbitMQConnectError,
    RabbitMQSink,
    RabbitMQSource,
    UnknownExchangeError,
    UnknownQueueError,
    queue_message_count,
)

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

from .conftest import declare_exchange, read_queue

pytestmark = pytest.mark.rabbitmq


async def publish(queue: str, items: list[Any], **options: Any) -> None:
    async with RabbitMQSink(routing_key=queue, **options) as sink:
        await sink.write_batch(items)


async def test_acks_only_what_the_sink_wrote(queues) -> None:
    await publish(queues.input, [{"n": n} for n in range(100)])

    class FailsOnSecondWrite(StreamSink):
        PLUGIN_NAME = "fails"

        def __init__(self) -> None:
            self.written: list[Any] = []

        async def write_batch(self, items: list[Any]) -> None:
            if len(self.written) >= 30:
                raise OSError("disk full")
            self.written.extend(items)

    source = RabbitMQSource(queues.input, batch_size=10, prefetch=20, ack_every=10)
    sink = FailsOnSecondWrite()
    pipeline = StreamingPipeline("acks")
    pipeline.set_source(source)
    pipeline.add_processor(lambda m: m.body["n"])
    pipeline.set_sink(sink)
    with pytest.raises(BaseException, match="disk full"):
        await pipeline.execute()
    # Only what the sink wrote was acked (at acknowledgment points); the rest, the
    # items of the failed write among them, went back to the queue.
    acked = source.stats.acknowledged
    assert 10 <= acked <= len(sink.written) and len(sink.written) >= 30
    assert source.stats.left_unacknowledged == source.stats.received - acked
    await trio.sleep(0.2)
    assert await queue_message_count(queues.input) == 100 - acked
    left = await read_queue(queues.url, queues.input)
    assert sorted(orjson.loads(m.body)["n"] for m in left) == list(range(acked, 100))


async def test_drains_the_queue_and_acks_everything(queues) -> None:
    n = 2_000
    await publish(queues.input, [{"n": i} for i in range(n)])
    source = RabbitMQSource(queues.input, batch_size=100, prefetch=300, stop_when_drained=True)
    sink = MemorySink()
    pipeline = StreamingPipeline("drain")
    pipeline.set_source(source)
    pipeline.add_processor(lambda m: m.body["n"])
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert report.processed == n
    assert sink.items == list(range(n))  # one consumer: queue order
    assert source.stats.acknowledged == n and source.stats.ack_errors == 0
    assert await queue_message_count(queues.input) == 0


async def test_prefetch_bounds_what_the_worker_holds(queues) -> None:
    n, prefetch = 500, 20
    await publish(queues.input, [{"n": i} for i in range(n)])
    holding, release = trio.Event(), trio.Event()

    async def hold(message: RabbitMessage) -> int:
        if message.body["n"] == 0:
            holding.set()
            await release.wait()
        return int(message.body["n"])

    source = RabbitMQSource(queues.input, batch_size=5, prefetch=prefetch, ack_every=10,
                            stop_when_drained=True)
    pipeline = StreamingPipeline("prefetch")
    pipeline.set_source(source)
    pipeline.add_processor(hold)
    sink = MemorySink()
    pipeline.set_sink(sink)
    ready_while_held: list[int] = []

    async def check() -> None:
        await holding.wait()
        await trio.sleep(0.5)  # let the broker deliver all it will
        ready_while_held.append(await queue_message_count(queues.input))
        release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check)
        await pipeline.execute()
    # The broker delivered exactly the prefetch count and kept the rest.
    assert ready_while_held == [n - prefetch]
    assert sorted(sink.items) == list(range(n))


async def test_failures_are_dead_lettered_with_the_reason(queues) -> None:
    await publish(queues.input, [{"n": i} for i in range(20)])

    def check(message: RabbitMessage) -> int:
        if message.body["n"] % 7 == 3:
            raise ValueError(f"bad n {message.body['n']}")
        return int(message.body["n"])

    source = RabbitMQSource(queues.input, stop_when_drained=True)
    sink = MemorySink()
    pipeline = StreamingPipeline("dead")
    pipeline.set_source(source)
    pipeline.add_processor(check)
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert sorted(sink.items) == [n for n in range(20) if n % 7 != 3]
    assert report.failed == 3 and source.stats.dead_lettered == 3
    dead = await read_queue(queues.url, queues.dead)
    assert [orjson.loads(m.body)["n"] for m in dead] == [3, 10, 17]
    letter = dead[0]
    assert letter.headers["x-haive-reason"] == "ValueError: bad n 3"
    assert letter.headers["x-haive-node"] == "check_0"
    assert letter.headers["x-haive-queue"] == queues.input
    assert letter.headers["x-haive-routing-key"] == queues.input
    assert letter.delivery_mode == 2  # persistent
    assert await queue_message_count(queues.input) == 0  # acked once dead-lettered


async def test_dead_letters_to_an_exchange_of_their_own(queues) -> None:
    await declare_exchange(queues.url, queues.exchange, queues.dead, "failed")
    await publish(queues.input, [{"n": 1}, {"n": -1}])

    def positive(message: RabbitMessage) -> int:
        if message.body["n"] < 0:
            raise ValueError("negative")
        return int(message.body["n"])

    source = RabbitMQSource(queues.input, dead_letter_exchange=queues.exchange,
                            dead_letter_routing_key="failed", stop_when_drained=True)
    pipeline = StreamingPipeline("dlx")
    pipeline.set_source(source)
    pipeline.add_processor(positive)
    pipeline.set_sink(MemorySink())
    await pipeline.execute()
    dead = await read_queue(queues.url, queues.dead)
    assert [orjson.loads(m.body) for m in dead] == [{"n": -1}]
    assert dead[0].headers["x-haive-reason"] == "ValueError: negative"


async def test_a_dead_letter_that_cannot_be_routed_is_never_acknowledged(queues) -> None:
    # The dead-letter exchange exists but routes "failed" nowhere: the dead letter is
    # returned (mandatory), so the source stops and the message stays in the queue.
    await declare_exchange(queues.url, queues.exchange)
    await publish(queues.input, [{"n": 1}, {"n": -1}, {"n": 2}])

    def positive(message: RabbitMessage) -> int:
        if message.body["n"] < 0:
            raise ValueError("negative")
        return int(message.body["n"])

    source = RabbitMQSource(queues.input, dead_letter_exchange=queues.exchange,
                            dead_letter_routing_key="failed", stop_when_drained=True)
    pipeline = StreamingPipeline("dlx-nowhere")
    pipeline.set_source(source)
    pipeline.add_processor(positive)
    pipeline.set_sink(MemorySink())
    with pytest.raises(BaseException, match=r"dead letters to exchange .* were not confirmed"):
        await pipeline.execute()
    assert source.stats.dead_lettered == 0
    await trio.sleep(0.2)
    left = await read_queue(queues.url, queues.input)
    assert {"n": -1} in [orjson.loads(m.body) for m in left]  # not lost


async def test_malformed_bodies_are_dead_lettered_and_the_rest_goes_on(queues) -> None:
    await publish(queues.input, [b'{"n": 0}', b"not json{", b'{"n": 2}'], codec="bytes")
    source = RabbitMQSource(queues.input, stop_when_drained=True)
    sink = MemorySink()
    pipeline = StreamingPipeline("malformed")
    pipeline.set_source(source)
    pipeline.add_processor(lambda m: m.body["n"])
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert sink.items == [0, 2]
    assert source.stats.malformed == 1 and source.stats.dead_lettered == 1
    dead = await read_queue(queues.url, queues.dead)
    assert [m.body for m in dead] == [b"not json{"]
    assert dead[0].headers["x-haive-reason"].startswith("SerializationError: body is not valid json")
    assert dead[0].headers["x-haive-node"] == "decode"
    assert await queue_message_count(queues.input) == 0


async def test_the_event_exposes_the_message(queues) -> None:
    source = RabbitMQSource(queues.input, exchange=queues.exchange, exchange_type="topic",
                            routing_keys=["orders.*"], declare=True, stop_when_drained=True)
    async with source:  # declares the exchange and binds the queue
        pass
    before = time.time()
    async with RabbitMQSink(queues.exchange, routing_key=lambda item: f"orders.{item['region']}",
                            headers=lambda item: {"trace": f"t-{item['region']}"}) as sink:
        await sink.write_batch([{"region": "eu"}, {"region": "us"}])
    pipeline = StreamingPipeline("fields")
    pipeline.set_source(source)
    out = MemorySink()
    pipeline.set_sink(out)
    await pipeline.execute()
    first, second = out.items
    assert isinstance(first, RabbitMessage)
    assert first.body == {"region": "eu"} and first.routing_key == "orders.eu"
    assert first.exchange == queues.exchange and second.routing_key == "orders.us"
    assert first.headers["trace"] == "t-eu"
    assert first.message_id and first.message_id != second.message_id
    assert first.redelivered is False
    assert before - 1 <= first.timestamp <= time.time() + 1  # AMQP timestamps are seconds
    assert first.content_type == "application/json"


async def test_redelivered_messages_say_so(queues) -> None:
    await publish(queues.input, [{"n": 1}])
    source = RabbitMQSource(queues.input)
    async with source:
        async for batch in source.batches(10):
            if batch:
                break  # read, never acknowledged: back in the queue when the source closes
    again = RabbitMQSource(queues.input, stop_when_drained=True)
    pipeline = StreamingPipeline("redelivered")
    pipeline.set_source(again)
    out = MemorySink()
    pipeline.set_sink(out)
    await pipeline.execute()
    assert [m.redelivered for m in out.items] == [True]
    assert source.stats.left_unacknowledged == 1


async def test_unknown_queue_exchange_and_dead_letter_target(queues) -> None:
    with pytest.raises(UnknownQueueError, match="no queue 'nope-"):
        async with RabbitMQSource(f"nope-{queues.name}"):
            pass
    with pytest.raises(UnknownExchangeError, match=f"no exchange '{queues.exchange}'"):
        async with RabbitMQSource(queues.input, exchange=queues.exchange, routing_keys=["#"]):
            pass
    with pytest.raises(UnknownQueueError, match="no queue 'elsewhere'"):
        async with RabbitMQSource(queues.input, dead_letter_routing_key="elsewhere"):
            pass


async def test_refused_credentials_and_nothing_listening() -> None:
    with pytest.raises(RabbitMQAuthError, match="refused the credentials"):
        async with RabbitMQSource("q", url="amqp://guest:wrong@127.0.0.1:5672/"):
            pass
    with pytest.raises(RabbitMQConnectError, match="no RabbitMQ broker answered"):
        async with RabbitMQSource("q", url="amqp://guest:guest@127.0.0.1:1/"):
            pass
    with pytest.raises(RabbitMQConnectError, match="virtual host 'nowhere'"):
        async with RabbitMQSource("q", url="amqp://guest:guest@127.0.0.1:5672/nowhere"):
            pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"url": "http://x"}, "url must be an amqp:// or amqps:// URL"),
        ({"prefetch": 0}, "prefetch must be an integer >= 1 and <= 65535"),
        ({"prefetch": 10, "ack_every": 11}, "ack_every=11 must be <= prefetch=10"),
        ({"exchange": "x"}, "exchange='x' needs routing_keys"),
        ({"routing_keys": ["a"]}, "needs exchange="),
        ({"exchange": "x", "routing_keys": "a.#"}, "routing_keys must be a list"),
        ({"exchange_type": "weird"}, "exchange_type must be one of"),
        ({"queue_arguments": {"x-queue-type": "quorum"}}, "needs declare=True"),
        ({"dead_letter_routing_key": "q"}, "is the queue itself"),
        ({"fetch_timeout": "soon"}, "fetch_timeout"),
        ({"connect_options": {"login": "x"}}, "connect_options may not set"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs, message) -> None:
    arguments = {"queue": "q", **kwargs}
    with pytest.raises(ConfigError, match=message):
        RabbitMQSource(**arguments)
