"""Embedding throughput with the packaged all-MiniLM-L6-v2: batched versus one by one.

The same chunks (about 250 characters each, like a ChunkProcessor's output) are embedded
three ways in one run:

* batched: a StreamingPipeline with an ``EmbeddingProcessor`` (one model call per ready
  batch, up to 64 texts);
* one by one: ``await embed.transform(text)`` for each chunk in turn (a model call each);
* coalesced: 32 concurrent ``transform`` calls (a ``TransformNode`` with concurrency 32),
  which the transform merges into batched model calls.

Model loading and a warm-up call are not timed; torch uses its default threads (one per core). Runs alternate and the best of each is kept,
so all see the same machine noise.
"""

from __future__ import annotations

import time

import trio
from haive_contrib_ai import EmbeddingProcessor, EmbeddingTransform
from haive_contrib_ai.records import Chunk

from bench.cases._shared import CountSink
from bench.recorder import Recorder
from haive.dataflow import StreamingPipeline, TransformNode
from haive.dataflow.builtins.sources import IterableSource

DESCRIPTION = "embedded chunks/s with the packaged MiniLM: batched vs one by one (and coalesced)"

SUBJECTS = [
    "The pipeline",
    "A reviewer",
    "Our customer",
    "The scheduler",
    "This document",
    "The model",
]
VERBS = ["explains", "questions", "describes", "summarises", "rejects", "improves"]
OBJECTS = [
    "how structured concurrency keeps every task owned by a nursery",
    "why the invoice was charged twice at the end of the quarter",
    "the delivery route of parcels that were stuck in customs",
    "a sourdough recipe with an overnight rise in the fridge",
    "the vector index that answers nearest-neighbour queries",
    "the backpressure that slows a producer when buffers fill up",
]


def make_chunks(n: int) -> list[Chunk]:
    chunks = []
    for i in range(n):
        parts = [
            f"{SUBJECTS[(i + k) % 6]} {VERBS[(i * 7 + k) % 6]} {OBJECTS[(i * 5 + 3 * k) % 6]} (note {i}.{k})."
            for k in range(3)
        ]
        text = " ".join(parts)
        chunks.append(Chunk(f"bench:{i}", "bench", i, text, 0, len(text)))
    return chunks


async def batched(node: EmbeddingProcessor, chunks: list[Chunk]) -> float:
    pipeline = StreamingPipeline("embed-batched")
    pipeline.set_source(IterableSource(chunks))
    pipeline.add_node(node)
    sink = CountSink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    await pipeline.execute()
    elapsed = time.perf_counter() - started
    assert sink.count == len(chunks)
    return len(chunks) / elapsed


async def one_by_one(embed: EmbeddingTransform, chunks: list[Chunk]) -> float:
    started = time.perf_counter()
    for chunk in chunks:
        await embed.transform(chunk.text)
    return len(chunks) / (time.perf_counter() - started)


async def coalesced(embed: EmbeddingTransform, chunks: list[Chunk]) -> float:
    pipeline = StreamingPipeline("embed-coalesced")
    pipeline.set_source(IterableSource([c.text for c in chunks]))
    pipeline.add_node(TransformNode(name="embed", transform_fn=embed.transform, concurrency=32))
    sink = CountSink()
    pipeline.set_sink(sink)
    started = time.perf_counter()
    await pipeline.execute()
    elapsed = time.perf_counter() - started
    assert sink.count == len(chunks)
    return len(chunks) / elapsed


async def measure(n: int, rounds: int) -> dict[str, float]:
    node = EmbeddingProcessor(batch_size=64)
    await node.open()
    chunks = make_chunks(n)
    await node.embed_texts([c.text for c in chunks[:64]])  # warm-up, not timed
    best = {"batched": 0.0, "one_by_one": 0.0, "coalesced": 0.0}
    for _ in range(rounds):
        best["batched"] = max(best["batched"], await batched(node, chunks))
        best["one_by_one"] = max(best["one_by_one"], await one_by_one(node, chunks))
        best["coalesced"] = max(best["coalesced"], await coalesced(node, chunks))
    return best


def run(rec: Recorder) -> None:
    n = 64 if rec.quick else 256
    rounds = 1 if rec.quick else 2
    best = trio.run(measure, n, rounds)
    batched_rate = rec.figure(
        "embeddings.batched.chunks_per_s", best["batched"], "chunks/s", f"{n} chunks"
    )
    single_rate = rec.figure("embeddings.one_by_one.chunks_per_s", best["one_by_one"], "chunks/s")
    rec.figure(
        "embeddings.coalesced_concurrent.chunks_per_s",
        best["coalesced"],
        "chunks/s",
        "32 concurrent transform() calls",
    )
    rec.ratio("embeddings.batching_speedup", batched_rate, single_rate)
