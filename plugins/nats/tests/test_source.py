"""JetStreamSource against the real NATS JetStream server on 127.0.0.1:4222."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import trio
from haive_plugin_nats import (
    JetStreamSink,
    JetStreamSource,
    NatsMessage,
    UnknownStreamError,
)
from haive_plugin_nats.source import _Fetched, _Fetcher

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError, NodeError
from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.state.windows import Count, TumblingWindow, WindowedAggregateNode

pytestmark = pytest.mark.nats


async def publish(stream, items, headers=None) -> None:
    async with JetStreamSink(stream.input, url=stream.url, headers=headers) as sink:
        await sink.write_batch(items)


def run_pipeline(source, *processors, sink=None) -> tuple[StreamingPipeline, MemorySink]:
    pipeline = StreamingPipeline("nats-test")
    pipeline.set_source(source)
    for processor in processors:
        pipeline.add_processor(processor)
    memory = MemorySink()
    pipeline.set_sink(sink if sink is not None else memory)
    return pipeline, memory


async def test_copy_at_least_once_in_order_and_everything_acked(stream, read, consumer):
    await publish(stream, [{"n": n} for n in range(2_000)])
    source = JetStreamSource(stream.input, durable="copy", url=stream.url, batch_size=100,
                             stop_when_drained=True)
    pipeline, _ = run_pipeline(
        source, lambda m: {"n": m.data["n"] * 2},
        sink=JetStreamSink(stream.output, url=stream.url),
    )
    report = await pipeline.execute()
    assert report.processed == 2_000 and report.failed == 0
    out = await read(stream.url, stream.name, stream.output)
    assert [orjson.loads(m.data)["n"] for m in out] == [n * 2 for n in range(2_000)]
    info = await consumer(stream.url, stream.name, "copy")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert source.stats.acknowledged == 2_000 and source.stats.fetched == 2_000


async def test_message_exposes_subject_headers_time_sequence_and_deliveries(stream):
    before = time.time()
    await publish(stream, [{"n": 1}, {"n": 2}], headers=lambda item: {"trace": f"t{item['n']}"})
    source = JetStreamSource(stream.input, durable="fields", url=stream.url,
                             stop_when_drained=True)
    pipeline, sink = run_pipeline(source)
    await pipeline.execute()
    first, second = sink.items
    assert isinstance(first, NatsMessage)
    assert (first.subject, first.data, first.headers["trace"]) == (stream.input, {"n": 1}, "t1")
    assert second.sequence == first.sequence + 1
    assert first.deliveries == 1 and first.stream == stream.name
    assert before - 5 <= first.timestamp <= time.time() + 5  # JetStream's clock, in seconds


async def test_event_time_windows_read_the_message_timestamp(stream):
    await publish(stream, [{"user": "a"}, {"user": "b"}, {"user": "a"}])
    source = JetStreamSource(stream.input, durable="windows", url=stream.url,
                             stop_when_drained=True)
    pipeline = StreamingPipeline("windows")
    pipeline.set_source(source)
    pipeline.add_node(WindowedAggregateNode(
        name="per_user", window=TumblingWindow("1h"), key=lambda m: m.data["user"],
        aggregate=Count()))
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    counts = {result.key: result.count for result in sink.items}
    assert counts == {"a": 2, "b": 1}
    assert all(result.start <= time.time() < result.end + 3600 for result in sink.items)


async def test_failed_item_is_dead_lettered_with_the_reason_then_acked(stream, read, consumer):
    await publish(stream, [{"n": n} for n in range(10)], headers=lambda i: {"origin": "test"})

    def check(m: NatsMessage) -> int:
        if m.data["n"] == 3:
            raise ValueError("three is not allowed")
        return m.data["n"]

    source = JetStreamSource(stream.input, durable="dl", url=stream.url, stop_when_drained=True)
    pipeline, sink = run_pipeline(source, check)
    report = await pipeline.execute()
    assert report.failed == 1 and sink.items == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    [dead] = await read(stream.url, stream.name, stream.dead)
    assert orjson.loads(dead.data) == {"n": 3}
    assert dead.headers["Haive-Reason"] == "ValueError: three is not allowed"
    assert dead.headers["origin"] == "test"
    assert dead.headers["Haive-Subject"] == stream.input
    assert dead.headers["Haive-Deliveries"] == "1" and dead.headers["Haive-Consumer"] == "dl"
    assert int(dead.headers["Haive-Sequence"]) >= 1
    info = await consumer(stream.url, stream.name, "dl")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert source.stats.dead_lettered == 1


async def test_redeliver_then_dead_letter_after_max_deliveries(stream, read):
    await publish(stream, [{"n": n} for n in range(5)])

    def flaky(m: NatsMessage) -> int:
        if m.data["n"] == 1 and m.deliveries == 1:
            raise RuntimeError("transient")  # succeeds on the second delivery
        if m.data["n"] == 4:
            raise RuntimeError("poison")  # never succeeds
        return m.data["n"]

    source = JetStreamSource(stream.input, durable="redeliver", url=stream.url,
                             on_failure="redeliver", max_deliveries=3, stop_when_drained=True)
    pipeline, sink = run_pipeline(source, flaky)
    await pipeline.execute()
    assert sorted(sink.items) == [0, 1, 2, 3]
    [dead] = await read(stream.url, stream.name, stream.dead)
    assert orjson.loads(dead.data) == {"n": 4}
    assert dead.headers["Haive-Deliveries"] == "3"
    assert dead.headers["Haive-Reason"] == "RuntimeError: poison"
    assert source.stats.redelivered == 3  # n=1 once, n=4 twice


async def test_undecodable_payload_is_dead_lettered_and_reading_goes_on(stream, read):
    async with JetStreamSink(stream.input, url=stream.url, codec="bytes") as raw:
        await raw.write_batch([b'{"n": 1}', b"{not json", b'{"n": 2}'])
    source = JetStreamSource(stream.input, durable="decode", url=stream.url,
                             stop_when_drained=True)
    pipeline, sink = run_pipeline(source, lambda m: m.data["n"])
    await pipeline.execute()
    assert sink.items == [1, 2]
    [dead] = await read(stream.url, stream.name, stream.dead)
    assert dead.data == b"{not json" and "not valid json" in dead.headers["Haive-Reason"]


class BrokenSink(StreamSink):
    PLUGIN_NAME = "broken"

    async def write_batch(self, items):
        raise OSError("disk full")

    async def aclose(self) -> None:
        pass


async def test_nothing_is_acked_when_the_sink_fails_so_it_is_redelivered(stream, consumer):
    await publish(stream, [{"n": n} for n in range(50)])
    source = JetStreamSource(stream.input, durable="unwritten", url=stream.url, ack_wait="1s",
                             stop_when_drained=True)
    pipeline, _ = run_pipeline(source, sink=BrokenSink())
    with pytest.raises((NodeError, ExceptionGroup)):
        await pipeline.execute()
    assert source.stats.acknowledged == 0
    info = await consumer(stream.url, stream.name, "unwritten")
    assert info.num_ack_pending == 50  # delivered, never acknowledged
    # A second run gets all of them again (after ack_wait) and acknowledges them.
    again = JetStreamSource(stream.input, durable="unwritten", url=stream.url,
                            stop_when_drained=True)
    pipeline, sink = run_pipeline(again, lambda m: m.data["n"])
    await pipeline.execute()
    assert sorted(sink.items) == list(range(50))
    assert again.stats.fetched >= 50 and again.stats.acknowledged == 50


async def test_a_full_pipeline_stops_fetching(stream, consumer):
    await publish(stream, [{"n": n} for n in range(5_000)])
    release = trio.Event()

    async def stall(m: NatsMessage) -> int:
        await release.wait()
        return m.data["n"]

    source = JetStreamSource(stream.input, durable="bp", url=stream.url, batch_size=50,
                             prefetch=2, stop_when_drained=True)
    pipeline, sink = run_pipeline(source, stall)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.execute)
        delivered = -1
        with trio.fail_after(30):
            while True:  # until the fetching has stopped
                await trio.sleep(0.5)
                info = await consumer(stream.url, stream.name, "bp")
                if info.delivered.consumer_seq == delivered:
                    break
                delivered = info.delivered.consumer_seq
        # Bounded by the pipeline's buffers plus `prefetch` batches, far below the backlog.
        assert 0 < delivered < 2_000
        assert info.num_pending == 5_000 - delivered
        release.set()
    assert len(sink.items) == 5_000


async def test_fetch_loop_ends_when_a_fetch_swallowed_the_cancellation(stream):
    # nats-py's pull fetch swallows a cancellation (Python 3.11's asyncio.wait_for returns
    # a reply that is already queued): the source's fetch loop, left at the end of input
    # while a fetch ran, then fetched on and the source waited for it forever (the bench's
    # 20-minute hang). Provoked here by leaving the loop while a fetched batch is arriving
    # (replies queued); a loop resumed after its consumer left is the bug. Each attempt
    # provokes it about two times in three; the first one that does decides.
    await publish(stream, [{"n": n} for n in range(5_000)])
    swallowed = resumed = 0
    for attempt in range(30):
        source = JetStreamSource(stream.input, durable=f"swallow{attempt}", url=stream.url)
        async with source:
            bridge, client, subscription = source._bridge, source._client, source._subscription
            assert bridge is not None and client is not None and subscription is not None
            fetcher = _Fetcher(client, subscription, source.codec, stream.name, source.stats)
            cancels_seen = 0

            async def fetch_loop(
                fetcher: _Fetcher, count: int, wait: float
            ) -> AsyncIterator[_Fetched]:
                nonlocal cancels_seen, resumed
                async for batch in fetcher.batches(count, wait):
                    task = asyncio.current_task()
                    assert task is not None
                    cancels_seen = task.cancelling()  # > 0: a fetch swallowed one
                    yield batch
                    if cancels_seen:
                        resumed += 1  # fetching on after the consumer left: the hang
                        return  # (the test fails instead of hanging)

            # max_buffered above the backlog's 20 batches: the loop never waits for a permit
            async with bridge.stream(fetch_loop, fetcher, 256, 5.0, max_buffered=32) as fetched:
                await fetched.__anext__()
                for _ in range(100_000):  # leave while the next batch is arriving
                    if subscription.pending_msgs > 16:
                        break
                    await trio.lowlevel.checkpoint()
        swallowed += cancels_seen > 0
        if swallowed:
            break
    if not swallowed:
        pytest.skip("nats-py did not swallow a cancellation in 30 tries: nothing to check")
    assert resumed == 0


async def test_unknown_stream_and_unstored_dead_letter_subject_fail_at_open(stream):
    source = JetStreamSource(f"{stream.name}.nowhere.x", dead_letter=stream.dead, url=stream.url)
    with pytest.raises(UnknownStreamError, match=r"no JetStream stream .* stores subject"):
        await source.open()
    await source.aclose()
    source = JetStreamSource(stream.input, dead_letter=f"{stream.name}-elsewhere", url=stream.url)
    with pytest.raises(UnknownStreamError, match=f"{stream.name}-elsewhere"):
        await source.open()
    await source.aclose()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": "orders.>"}, "has wildcards, so there is no default dead-letter"),
        ({"subject": "orders.>", "dead_letter": "orders.dead"}, "would read its own dead letters"),
        ({"on_failure": "retry"}, "on_failure must be one of"),
        ({"max_deliveries": 3}, "needs on_failure='redeliver'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"durable": "a.b"}, "durable must be a non-empty name"),
        ({"subject": "a..b"}, "dot-separated non-empty tokens"),
        ({"url": "http://x"}, "url must be a nats://"),
        ({"deliver_policy": "last"}, "deliver_policy must be one of"),
        ({"connect_options": {"servers": ["x"]}}, "connect_options may not set"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    kwargs = {"subject": "orders.new", **kwargs}
    with pytest.raises(ConfigError, match=message):
        JetStreamSource(**kwargs)
