"""SimilarityProcessor: near-duplicates by embedding similarity, with the real model."""

from __future__ import annotations

import numpy as np
import pytest
from haive_contrib_ai.embeddings import EmbeddingProcessor
from haive_contrib_ai.records import Chunk
from haive_contrib_ai.similarity import SimilarityProcessor

from haive.dataflow import ConfigError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.runtime.nodes import NodeContext

TEXTS = [
    "Trio makes structured concurrency the default for async Python.",
    "Qdrant stores vectors and searches them by similarity.",
    "Trio makes structured concurrency the default in async Python.",  # near-duplicate of 0
    "Bake the bread at 220 degrees for forty minutes.",
    "Qdrant stores vectors and searches them by their similarity.",  # near-duplicate of 1
]


def chunks():
    return [Chunk(f"d:{i}", "d", i, text, 0, len(text)) for i, text in enumerate(TEXTS)]


async def test_near_duplicates_are_dropped_in_a_pipeline(minilm):
    similarity = SimilarityProcessor(threshold=0.95)
    pipeline = StreamingPipeline("dedupe")
    pipeline.set_source(IterableSource(chunks()))
    pipeline.add_node(EmbeddingProcessor(provider=minilm))
    pipeline.add_node(similarity)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    assert [c.id for c in sink.items] == ["d:0", "d:1", "d:3"]
    assert similarity.duplicates == 2 and similarity.seen == 5
    assert similarity.last_duplicates == [("d:2", "d:0"), ("d:4", "d:1")]


async def test_mark_mode_keeps_everything_and_says_what_repeats_what(embedder):
    vectors = await embedder.embed_texts(TEXTS)
    items = [c.with_embedding(v) for c, v in zip(chunks(), vectors, strict=True)]
    node = SimilarityProcessor(threshold=0.95, action="mark")
    out = await node.process_batch(items, NodeContext("s"))
    assert [c.metadata["duplicate_of"] for c in out] == [None, None, "d:0", None, "d:1"]
    assert out[2].metadata["similarity"] > 0.95 > out[3].metadata["similarity"]


async def test_the_window_forgets_old_items():
    node = SimilarityProcessor(threshold=0.9, window=2)
    a, b, c = np.eye(3, dtype=np.float32)
    items = [
        {"id": "a", "embedding": a},
        {"id": "b", "embedding": b},
        {"id": "c", "embedding": c},
        {"id": "a2", "embedding": a},
    ]
    out = await node.process_batch(items, NodeContext("s"))
    assert [i["id"] for i in out] == ["a", "b", "c", "a2"]  # "a" left the 2-item window
    again = await node.process_batch([{"id": "c2", "embedding": c}], NodeContext("s"))
    assert again == [] and node.last_duplicates[-1] == ("c2", "c")


async def test_items_without_embeddings_fail_alone():
    pipeline = StreamingPipeline("dedupe")
    pipeline.set_source(
        IterableSource(
            [
                {"id": "x", "embedding": [1.0, 0.0]},
                {"id": "y", "text": "no vector"},
                {"id": "z", "embedding": [0.0, 3.0]},
            ]
        )
    )
    pipeline.add_node(SimilarityProcessor())
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with pipeline.run() as stream:
        results = [r async for r in stream]
    assert [i["id"] for i in sink.items] == ["x", "z"]
    [bad] = [r for r in results if not r.success]
    assert "item y has no 'embedding': put an EmbeddingProcessor before" in str(bad.error)


def test_bad_settings():
    with pytest.raises(ConfigError, match=r"threshold must be a cosine similarity in \[-1, 1\]"):
        SimilarityProcessor(threshold=85)
    with pytest.raises(ConfigError, match="action must be 'drop' or 'mark'"):
        SimilarityProcessor(action="merge")
