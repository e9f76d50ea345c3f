"""The seed's "High-Performance Streaming" snippet on trio: StreamConfig, parallel processing
across cores, result caching and a memory cap.

A CPU-heavy step (hashing) runs in worker processes (``executor="process"``); an I/O-bound
async step (a pretend lookup) runs many items in flight; the lookup's results are cached.
Run: ``python examples/production_performance.py`` (``HAIVE_EXAMPLE_QUICK=1`` for a short run).
"""

from __future__ import annotations

import hashlib
import os
import time

import trio

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.streaming import (
    MessagePackSerializer,
    StreamConfig,
    StreamingPipeline,
    TransformNode,
)

QUICK = os.environ.get("HAIVE_EXAMPLE_QUICK") == "1"


def fingerprint(document: dict) -> dict:
    """CPU-bound: must be a module-level function so worker processes can import it."""
    h = hashlib.sha256()
    for _ in range(40):
        h.update(document["text"].encode())
    return {**document, "fingerprint": h.hexdigest()[:16]}


async def enrich(document: dict) -> dict:
    """I/O-bound: stands for a call to a metadata service."""
    await trio.sleep(0.001)
    return {**document, "category": "news" if document["id"] % 3 else "blog"}


class OptimizedStreaming:
    """Optimized streaming configuration."""

    def __init__(self) -> None:
        self.config = StreamConfig(
            buffer_size=10_000,
            chunk_size=1000,
            worker_threads=2,  # worker processes for CPU-bound steps
            io_threads=16,  # items in flight for I/O-bound steps
            max_memory_usage="2GB",
            gc_interval=1000,
            # The seed's tcp_nodelay/keep_alive/compression are not pipeline settings: trio
            # sets TCP_NODELAY on every connection, WebSocket heartbeats keep connections
            # alive, WebSocket compression is ConnectionConfig(compression="deflate").
        )

    def create_optimized_pipeline(self) -> StreamingPipeline:
        pipeline = StreamingPipeline("optimized", config=self.config)
        # parallelism=None: worker_threads processes for CPU-bound steps, io_threads items in
        # flight for I/O-bound ones (parallelism=N would set both to N).
        pipeline.enable_parallel_processing(parallelism=None, ordered=False)
        self.cache = pipeline.enable_caching(cache_size="500MB", ttl=300, nodes=["enrich"])
        # The seed's pipeline.set_serializer(MessagePackSerializer()) sets the wire format of
        # sources and sinks that move bytes (Redis streams); this in-memory pipeline has none,
        # and a pipeline refuses a serializer nothing would use.
        self.wire_format = MessagePackSerializer()
        return pipeline


def main() -> None:
    n = 2_000 if QUICK else 50_000
    documents = [{"id": i % (n // 2), "text": f"document {i % (n // 2)} " * 20} for i in range(n)]
    optimized = OptimizedStreaming()
    pipeline = optimized.create_optimized_pipeline()
    pipeline.set_source(IterableSource(documents))
    pipeline.add_node(
        TransformNode(name="fingerprint", transform_fn=fingerprint, executor="process")
    )
    pipeline.add_node(TransformNode(name="enrich", transform_fn=enrich))
    sink = MemorySink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    report = trio.run(pipeline.execute)
    elapsed = time.perf_counter() - started
    stats = optimized.cache.stats_for("enrich")
    print(
        f"processed {report.processed} documents in {elapsed:.2f} s ({report.processed / elapsed:,.0f}/s)"
    )
    print(f"enrich cache: {stats.hits} hits, {stats.misses} misses, hit rate {stats.hit_rate:.0%}")
    assert report.processed == n and report.failed == 0
    assert len({doc["fingerprint"] for doc in sink.items}) == n // 2


if __name__ == "__main__":  # required: worker processes import this module
    main()
