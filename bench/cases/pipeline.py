"""5-stage pipeline throughput and latency, buffer memory and backpressure reaction time.

Baselines doing the same work in the same run: a plain generator chain, a raw trio
memory-channel chain (one item per send), the same chain moving batches of 100, and an
asyncio.Queue chain (in a subprocess, so it runs on its own event loop).
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
from typing import Any

import trio

from bench.cases._shared import STAGES, five_stage_pipeline
from bench.recorder import Recorder, best_of
from haive.dataflow import BoundedBuffer, StreamingPipeline, StreamSink
from haive.dataflow.io.sources import DataSource

DESCRIPTION = "5-stage pipeline: events/s, p99 latency at 10k/s, buffer memory, pause time"


def ours(n: int) -> float:
    pipeline, sink = five_stage_pipeline(n, "bench")
    started = time.perf_counter()
    trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    assert sink.count == n
    return n / elapsed


def generator_chain(n: int) -> float:
    def stage(items: Any) -> Any:
        for x in items:
            yield x + 1

    started = time.perf_counter()
    chain: Any = iter(range(n))
    for _ in range(STAGES):
        chain = stage(chain)
    count = sum(1 for _ in chain)
    assert count == n
    return n / (time.perf_counter() - started)


def trio_channel_chain(n: int, batch: int) -> float:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            send, receive = trio.open_memory_channel[Any](0)

            async def source(out: trio.MemorySendChannel[Any]) -> None:
                async with out:
                    if batch == 1:
                        for x in range(n):
                            await out.send(x)
                    else:
                        for start in range(0, n, batch):
                            await out.send(list(range(start, min(start + batch, n))))

            async def stage(
                inp: trio.MemoryReceiveChannel[Any], out: trio.MemorySendChannel[Any]
            ) -> None:
                async with inp, out:
                    async for item in inp:
                        if batch == 1:
                            await out.send(item + 1)
                        else:
                            await out.send([x + 1 for x in item])

            nursery.start_soon(source, send)
            current = receive
            for _ in range(STAGES):
                nxt_send, nxt_receive = trio.open_memory_channel[Any](0)
                nursery.start_soon(stage, current, nxt_send)
                current = nxt_receive
            count = 0
            async with current:
                async for item in current:
                    count += 1 if batch == 1 else len(item)
            assert count == n

    started = time.perf_counter()
    trio.run(main)
    return n / (time.perf_counter() - started)


ASYNCIO_CHAIN = textwrap.dedent(
    """
    import asyncio, sys, time
    N, STAGES = int(sys.argv[1]), int(sys.argv[2])
    DONE = object()
    async def main():
        queues = [asyncio.Queue(maxsize=1000) for _ in range(STAGES + 1)]
        async def source():
            q = queues[0]
            for x in range(N):
                await q.put(x)
            await q.put(DONE)
        async def stage(i):
            inp, out = queues[i], queues[i + 1]
            while True:
                x = await inp.get()
                if x is DONE:
                    await out.put(DONE)
                    return
                await out.put(x + 1)
        async def sink():
            q, count = queues[-1], 0
            while (await q.get()) is not DONE:
                count += 1
            return count
        started = time.perf_counter()
        tasks = [asyncio.create_task(source())] + [asyncio.create_task(stage(i)) for i in range(STAGES)]
        count = await sink()
        await asyncio.gather(*tasks)
        assert count == N
        print(N / (time.perf_counter() - started))
    asyncio.run(main())
    """
)


def asyncio_chain(n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", ASYNCIO_CHAIN, str(n), str(STAGES)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


class PacedSource(DataSource):
    """Emits perf_counter stamps at a steady rate (each item is its own send time)."""

    def __init__(self, rate: float, count: int) -> None:
        self.rate = rate
        self.count = count

    async def batches(self, chunk_size: int):  # type: ignore[no-untyped-def]
        interval = 1 / self.rate
        start = trio.current_time()
        for k in range(self.count):
            await trio.sleep_until(start + k * interval)
            yield [time.perf_counter()]


class LatencySink(StreamSink):
    def __init__(self) -> None:
        self.latencies: list[float] = []

    async def write_batch(self, items: list[Any]) -> None:
        now = time.perf_counter()
        self.latencies.extend(now - stamp for stamp in items)


def latency_at_rate(rate: float, seconds: float) -> tuple[float, float, float]:
    pipeline = StreamingPipeline("latency")
    pipeline.set_source(PacedSource(rate, int(rate * seconds)))
    for _ in range(STAGES):
        pipeline.add_processor(lambda x: x)
    sink = LatencySink()
    pipeline.set_sink(sink)
    trio.run(pipeline.execute)
    lat = sorted(sink.latencies[len(sink.latencies) // 10 :])  # drop warm-up
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99)]
    return p50 * 1000, p99 * 1000, len(sink.latencies) / seconds


def buffer_memory(messages: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buf: BoundedBuffer[Any] = BoundedBuffer(messages, "drop_oldest")
    for start in range(0, messages, 100):
        buf.put_nowait_batch(
            [
                {"type": "tick", "symbol": "AAPL", "price": 101.25 + n, "seq": n}
                for n in range(start, start + 100)
            ]
        )
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(buf) == messages
    return (after - before) / 1e6


def pause_time() -> float:
    """Seconds from a consumer stalling until its producer is blocked (block strategy)."""

    async def main() -> float:
        buf: BoundedBuffer[int] = BoundedBuffer(1024)
        last_put = 0.0
        stall_at = 0.0

        async def produce() -> None:
            nonlocal last_put
            n = 0
            while True:
                await buf.put_batch([n])
                last_put = time.perf_counter()
                n += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            deadline = trio.current_time() + 0.2
            while trio.current_time() < deadline:
                await buf.get_batch()
            stall_at = time.perf_counter()
            await trio.sleep(0.1)  # consumer stalled
            nursery.cancel_scope.cancel()
        return max(0.0, last_put - stall_at)

    return trio.run(main)


def run(rec: Recorder) -> None:
    n = 200_000 if rec.quick else 1_000_000
    runs = 1 if rec.quick else 3
    ours(10_000)  # warm-up: imports and plugin discovery are start-up, not throughput
    ours_rate = rec.figure(
        "pipeline.5stage.events_per_s", best_of(runs, lambda: ours(n)), "events/s"
    )
    gen = rec.figure(
        "baseline.generator_chain.events_per_s",
        best_of(runs, lambda: generator_chain(n)),
        "events/s",
    )
    raw_n = n // 10
    raw = rec.figure(
        "baseline.trio_channel_per_item.events_per_s",
        best_of(runs, lambda: trio_channel_chain(raw_n, 1)),
        "events/s",
    )
    batched = rec.figure(
        "baseline.trio_channel_batch100.events_per_s",
        best_of(runs, lambda: trio_channel_chain(n, 100)),
        "events/s",
    )
    aio = rec.figure(
        "baseline.asyncio_queue_chain.events_per_s",
        best_of(runs, lambda: asyncio_chain(n // 2)),
        "events/s",
    )
    rec.ratio("pipeline.5stage.vs_generator_chain", ours_rate, gen)
    rec.ratio("pipeline.5stage.vs_trio_channel_per_item", ours_rate, raw)
    rec.ratio("pipeline.5stage.vs_trio_channel_batch100", ours_rate, batched)
    rec.ratio("pipeline.5stage.vs_asyncio_queue_chain", ours_rate, aio)

    p50, p99, achieved = latency_at_rate(10_000, 1.0 if rec.quick else 3.0)
    rec.figure("pipeline.5stage.rate_achieved_at_10k", achieved, "events/s")
    rec.figure("pipeline.5stage.p50_ms_at_10k", p50, "ms")
    rec.figure("pipeline.5stage.p99_ms_at_10k", p99, "ms", "target < 1 ms")
    rec.figure("buffer.100k_messages_mb", buffer_memory(100_000), "MB", "target < 100 MB")
    rec.figure("backpressure.pause_ms", pause_time() * 1000, "ms", "target < 10 ms")
