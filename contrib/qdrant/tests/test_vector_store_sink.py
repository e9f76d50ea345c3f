"""VectorStoreSink against Qdrant's embedded mode (in memory and on disk)."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
import trio
from haive_contrib_qdrant import Hit, VectorStoreError, VectorStoreSink, point_id

from haive.dataflow import ConfigError, NodeError, StreamingPipeline
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.errors import InvalidMessageError
from haive.dataflow.plugins import get_registry


@attrs.frozen
class Piece:
    """A chunk-like record (the sink needs only id, embedding and payload fields)."""

    id: str
    doc_id: str
    text: str
    embedding: np.ndarray = attrs.field(eq=False)
    metadata: dict = attrs.field(factory=dict)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


PIECES = [
    Piece("a.md:0", "a.md", "cats purr", unit(1, 0, 0), {"page": 1, "score": np.float32(0.5)}),
    Piece("a.md:1", "a.md", "cats sleep", unit(1, 0.2, 0)),
    Piece("b.md:0", "b.md", "taxes are due", unit(0, 1, 0)),
    Piece("c.md:0", "c.md", "rain tomorrow", unit(0, 0, 1)),
    Piece("c.md:1", "c.md", "storm warning", unit(0, 0.1, 1)),
]


class CountingEmbedder:
    """A tiny text -> vector map standing in for an EmbeddingTransform in search()."""

    async def transform(self, text: str) -> np.ndarray:
        await trio.lowlevel.checkpoint()
        return unit(1, 0.1, 0) if "cat" in text else unit(0, 0, 1)


async def test_batched_idempotent_upserts_and_search():
    sink = VectorStoreSink(collection="docs", batch_size=2)
    async with sink:
        await sink.write_batch(PIECES)
        assert sink.upserts == 3 and sink.written == 5
        await sink.write_batch(PIECES[:2])  # the same ids again: replaced, not duplicated
    assert await sink.count() == 5
    hits = await sink.search(unit(1, 0.05, 0), limit=2)
    assert [h.id for h in hits] == ["a.md:0", "a.md:1"]
    assert all(isinstance(h, Hit) for h in hits) and hits[0].score > hits[1].score
    assert hits[0].payload == {
        "id": "a.md:0",
        "doc_id": "a.md",
        "text": "cats purr",
        "metadata": {"page": 1, "score": 0.5},
        "chunk_id": "a.md:0",
    }
    by_text = await sink.search("what do cats do?", limit=1, embedder=CountingEmbedder())
    assert by_text[0].text in ("cats purr", "cats sleep")
    assert [h.id for h in await sink.search(unit(0, 0, 1), limit=5, score_threshold=0.9)] == [
        "c.md:0",
        "c.md:1",
    ]


async def test_on_disk_store_survives_a_new_sink(tmp_path: Path):
    folder = tmp_path / "vectors"
    first = VectorStoreSink(folder, collection="persist")
    async with first:
        await first.write_batch(PIECES[:3])
    second = VectorStoreSink(str(folder), collection="persist")
    async with second:
        assert await second.count() == 3
        await second.write_batch(PIECES)  # 2 new, 3 replaced
        assert await second.count() == 5
        assert second.vector_size == 3
    assert (folder / "collection" / "persist").exists()


async def test_bad_items_are_named_and_good_ones_still_written():
    sink = VectorStoreSink()
    items = [
        {"id": "ok-1", "text": "fine", "embedding": [1.0, 0.0, 0.0]},
        {"id": "no-vector", "text": "forgot to embed"},
        {"id": "wrong-size", "embedding": [1.0, 0.0]},
        {"text": "no id", "embedding": [0.0, 1.0, 0.0]},
        {"id": "ok-2", "embedding": np.array([0.0, 1.0, 0.0])},
    ]
    with pytest.raises(
        InvalidMessageError,
        match=r"3 of 5 item\(s\) not written: item 'no-vector' has no 'embedding'.*'wrong-size' has a 2-dimensional",
    ):
        await sink.write_batch(items)
    assert await sink.count() == 2
    assert {h.id for h in await sink.search([1.0, 1.0, 0.0], limit=5)} == {"ok-1", "ok-2"}


async def test_existing_collection_of_another_size_is_a_config_error(tmp_path: Path):
    sink = VectorStoreSink(tmp_path / "v", collection="c")
    async with sink:
        await sink.write_batch([{"id": "x", "embedding": [1.0, 0.0]}])
    other = VectorStoreSink(tmp_path / "v", collection="c", vector_size=3)
    with pytest.raises(ConfigError, match="holds 2-dimensional vectors, these items have 3"):
        await other.open()


async def test_in_a_pipeline_with_the_registry():
    sink_cls = get_registry().sink("vector_store")
    assert sink_cls is VectorStoreSink
    from haive.dataflow.streaming import VectorStoreSink as exported

    assert exported is VectorStoreSink
    sink = sink_cls(collection="pipeline", batch_size=2)
    pipeline = StreamingPipeline("vectors")
    pipeline.set_source(IterableSource(PIECES))
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert report.processed == 5 and await sink.count() == 5


async def test_unreachable_server_names_the_url():
    sink = VectorStoreSink("http://127.0.0.1:1", collection="c")
    pipeline = StreamingPipeline("remote")
    pipeline.set_source(IterableSource(PIECES[:1]))
    pipeline.set_sink(sink)
    with pytest.raises((NodeError, VectorStoreError)) as info:
        await pipeline.execute()
    error = info.value.error if isinstance(info.value, NodeError) else info.value
    assert isinstance(error, VectorStoreError)
    assert "qdrant at http://127.0.0.1:1 ('c'): checking the collection failed" in str(error)


def test_configuration_errors_and_ids():
    with pytest.raises(ConfigError, match="distance must be one of"):
        VectorStoreSink(distance="hamming")
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1"):
        VectorStoreSink(batch_size=0)
    assert VectorStoreSink("https://q.example:6333").kind == "url"
    assert VectorStoreSink("/tmp/x").kind == "path" and VectorStoreSink().kind == "memory"
    assert point_id("a.md:0") == point_id("a.md:0") and len(point_id("x")) == 36


async def test_text_query_needs_an_embedder():
    with pytest.raises(ConfigError, match="a text query needs embedder="):
        await VectorStoreSink().search("cats")
