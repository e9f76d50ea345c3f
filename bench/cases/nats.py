"""NATS JetStream source and sink (haive-plugin-nats) against raw nats-py, in the same run.

One stream is filled with N JSON messages; each reader uses its own durable pull consumer.

* ``nats.source.events_per_s``: a StreamingPipeline reading it with ``JetStreamSource``
  (at least once: fetch 256 at a time through the core's AsyncioBridge, decode, a
  processor, acks after the results are handled) in one process.
* ``nats.baseline_raw_fetch_ack.events_per_s``: nats-py's own loop on asyncio doing the same
  fetch 256 + decode + ack of every message, no pipeline; ``nats.source.vs_raw`` is ours
  over it (target >= 0.8).
* ``nats.sink.events_per_s``: ``JetStreamSink.write_batch`` of 1,000 items (JSON-encoded,
  every publish ack awaited) against ``nats.baseline_raw_publish.events_per_s``, nats-py's
  ``publish_async`` of the same 1,000 then waiting for their acks; ``nats.sink.vs_raw``.
  The sink gives every message a ``Nats-Msg-Id`` (so a retried batch is not stored twice);
  ``nats.baseline_raw_publish_msgid.events_per_s`` is the raw loop with that header too and
  ``nats.sink.vs_raw_msgid`` the ratio for the same work.
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

DESCRIPTION = "NATS JetStream source/sink through the asyncio bridge vs raw nats-py"

URL = "nats://127.0.0.1:4222"


def _answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=2) as conn:
            return b'"jetstream":true' in conn.recv(4096)
    except OSError:
        return False


def _items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"k{i % 100}", "seq": i, "v": i * 0.5} for i in range(n)]


async def _ours_sink(subject: str, items: list[dict[str, Any]]) -> float:
    from haive_plugin_nats import JetStreamSink

    async with JetStreamSink(subject, url=URL) as sink:
        started = time.perf_counter()
        for start in range(0, len(items), 1000):
            await sink.write_batch(items[start : start + 1000])
        return len(items) / (time.perf_counter() - started)


async def _raw_sink(subject: str, items: list[dict[str, Any]], dedup: bool = False) -> float:
    import nats

    nc = await nats.connect(URL)
    js = nc.jetstream()
    prefix = uuid.uuid4().hex[:16]
    started = time.perf_counter()
    for start in range(0, len(items), 1000):
        futures = [
            await js.publish_async(
                subject,
                orjson.dumps(item),
                headers={"Nats-Msg-Id": f"{prefix}-{start + i}"} if dedup else None,
            )
            for i, item in enumerate(items[start : start + 1000])
        ]
        await asyncio.gather(*futures)
    rate = len(items) / (time.perf_counter() - started)
    await nc.close()
    return rate


async def _ours_source(stream: str, subject: str, n: int, durable: str) -> float:
    from haive_plugin_nats import JetStreamSource

    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    source = JetStreamSource(subject, stream=stream, durable=durable, url=URL, batch_size=256,
                             stop_when_drained=True)
    pipeline = StreamingPipeline("bench-nats")
    pipeline.set_source(source)
    pipeline.add_processor(lambda m: m.data["v"])
    started = time.perf_counter()
    report = await pipeline.execute()
    elapsed = time.perf_counter() - started
    assert report.processed == n, (report.processed, n)
    return n / elapsed


async def _raw_source(stream: str, subject: str, n: int, durable: str) -> float:
    import nats
    import nats.errors

    nc = await nats.connect(URL)
    sub = await nc.jetstream().pull_subscribe(subject, durable=durable, stream=stream)
    done = 0
    started = time.perf_counter()
    while done < n:
        try:
            msgs = await sub.fetch(256, timeout=1)
        except TimeoutError:  # nats-py raises its own or asyncio's
            break
        for msg in msgs:
            orjson.loads(msg.data)["v"]
            await msg.ack()
        done += len(msgs)
    await nc.flush()
    rate = done / (time.perf_counter() - started)
    await nc.close()
    return rate


def run(rec: Recorder) -> None:
    if not _answers():
        print("  no NATS JetStream on 127.0.0.1:4222: nats skipped")
        return
    from haive_plugin_nats import delete_stream, ensure_stream

    n = 5_000 if rec.quick else 20_000
    stream = f"BENCH-{uuid.uuid4().hex[:8]}"
    subject = f"{stream}.in"
    items = _items(n)
    trio.run(lambda: ensure_stream(stream, [f"{stream}.>"], url=URL, storage="memory"))
    try:
        # Best of three, ours and the baseline alternating (the machine is shared). The
        # sinks also fill the stream the sources read: 6n messages, each reader reads all.
        runs = 3
        ours_sink, raw_sink, dedup_sink = [], [], []
        for _ in range(runs):
            ours_sink.append(trio.run(_ours_sink, subject, items))
            raw_sink.append(asyncio.run(_raw_sink(subject, items)))
            dedup_sink.append(asyncio.run(_raw_sink(f"{stream}.dedup", items, dedup=True)))
        ours = rec.figure("nats.sink.events_per_s", max(ours_sink), "events/s",
                          "1,000 per batch, every publish ack awaited")
        raw = rec.figure("nats.baseline_raw_publish.events_per_s", max(raw_sink), "events/s",
                         "nats-py publish_async x1,000 + gather")
        rec.ratio("nats.sink.vs_raw", ours, raw)
        dedup = rec.figure("nats.baseline_raw_publish_msgid.events_per_s", max(dedup_sink),
                           "events/s", "the same with a Nats-Msg-Id header, as the sink sends")
        rec.ratio("nats.sink.vs_raw_msgid", ours, dedup, "same work: deduplicated publishes")
        total = 2 * runs * n
        ours_source, raw_source = [], []
        for run in range(runs):
            ours_source.append(trio.run(_ours_source, stream, subject, total, f"ours{run}"))
            raw_source.append(asyncio.run(_raw_source(stream, subject, total, f"raw{run}")))
        ours = rec.figure("nats.source.events_per_s", max(ours_source), "events/s",
                          "pipeline, at least once, one worker")
        raw = rec.figure("nats.baseline_raw_fetch_ack.events_per_s", max(raw_source),
                         "events/s", "nats-py fetch 256 + decode + ack, no pipeline")
        rec.ratio("nats.source.vs_raw", ours, raw)
    finally:
        trio.run(lambda: delete_stream(stream, url=URL))
