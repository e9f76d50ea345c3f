"""Embeddings with the real packaged model (all-MiniLM-L6-v2), loaded once per session."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from haive_contrib_ai.embeddings import (
    EmbeddingProcessor,
    EmbeddingTransform,
    HashingEmbeddingProvider,
    SentenceTransformerProvider,
    cosine,
    resolve_provider,
)
from haive_contrib_ai.records import Chunk

from haive.dataflow import ConfigError, StreamingPipeline, UnknownPluginError
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource

# (sentence, paraphrase, unrelated sentence)
TRIPLES = [
    (
        "The cat is sleeping on the sofa.",
        "A cat naps on the couch.",
        "Interest rates rose by half a point.",
    ),
    (
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "The train to Berlin leaves at noon.",
    ),
    (
        "The meeting was moved to Thursday.",
        "We rescheduled the meeting for Thursday.",
        "Bake the bread for forty minutes.",
    ),
    (
        "He bought a new car yesterday.",
        "Yesterday he purchased a new automobile.",
        "The river flooded the valley.",
    ),
    (
        "The movie was extremely boring.",
        "That film was really dull.",
        "Quantum computers use qubits.",
    ),
]


async def test_paraphrases_are_closer_than_unrelated_sentences(embedder):
    texts = [t for triple in TRIPLES for t in triple]
    matrix = await embedder.embed_texts(texts)
    assert matrix.shape == (15, 384) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    for i in range(0, 15, 3):
        anchor, paraphrase, unrelated = matrix[i], matrix[i + 1], matrix[i + 2]
        assert anchor @ paraphrase > 0.6, texts[i]
        assert anchor @ unrelated < 0.25, texts[i]
        assert anchor @ paraphrase > anchor @ unrelated + 0.4


async def test_lexical_hashing_misses_paraphrases_the_model_finds(embedder):
    # What sets a real model apart: no shared words, still close.
    a, b = "He bought a new car yesterday.", "Yesterday he purchased a new automobile."
    hashing = HashingEmbeddingProvider()
    lexical = await hashing.embed([a, b, "He bought a new cat yesterday."])
    semantic = await embedder.embed_texts([a, b, "He bought a new cat yesterday."])
    assert lexical[0] @ lexical[2] > lexical[0] @ lexical[1]  # words, not meaning
    assert semantic[0] @ semantic[1] > semantic[0] @ semantic[2]  # meaning


async def test_single_and_batched_embeddings_agree(embedder):
    texts = [t for triple in TRIPLES for t in triple][:6]
    batched = await embedder.embed_texts(texts)
    singles = [await embedder.transform(t) for t in texts]
    for row, single in zip(batched, singles, strict=True):
        assert cosine(row, single) > 0.9999


async def test_concurrent_single_calls_are_coalesced_into_batches(embedder):
    texts = [f"message number {i} about topic {i % 7}" for i in range(40)]
    results: dict[int, np.ndarray] = {}

    async def one(i: int) -> None:
        results[i] = await embedder.transform(texts[i])

    before = embedder.calls
    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
    assert embedder.calls - before <= 3  # not 40
    reference = await embedder.embed_texts(texts)
    for i, row in enumerate(reference):
        assert cosine(row, results[i]) > 0.9999


async def test_inference_does_not_block_the_event_loop(embedder):
    ticks = 0
    texts = [f"a longer sentence number {i} to keep the model busy for a while" for i in range(64)]

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await embedder.embed_texts(texts)
        nursery.cancel_scope.cancel()
    assert ticks > 10  # the loop kept running while the model worked in a thread


async def test_embedding_processor_attaches_vectors_in_a_pipeline(minilm):
    chunks = [Chunk(f"d:{i}", "d", i, text, 0, len(text)) for i, text in enumerate(TRIPLES[0])]
    node = EmbeddingProcessor(provider=minilm, batch_size=2)
    pipeline = StreamingPipeline("embed")
    pipeline.set_source(IterableSource([*chunks, {"text": "a mapping"}, 17]))
    pipeline.add_node(node)
    sink = MemorySink()
    pipeline.set_sink(sink)
    async with pipeline.run() as stream:
        results = [r async for r in stream]
    embedded = sink.items
    assert [c.id for c in embedded[:3]] == ["d:0", "d:1", "d:2"]
    assert all(c.embedding.shape == (384,) for c in embedded[:3])
    assert embedded[3]["embedding"].shape == (384,)
    [bad] = [r for r in results if not r.success]
    assert bad.data == 17 and bad.node == "embedding"


async def test_provider_choice_and_errors(minilm):
    assert isinstance(resolve_provider(), SentenceTransformerProvider)
    assert resolve_provider("minilm").model == "all-MiniLM-L6-v2"
    with pytest.raises(
        ConfigError, match=r"'text-embedding-3-large' is not available offline.*url="
    ):
        EmbeddingProcessor(model="text-embedding-3-large")
    with pytest.raises(
        UnknownPluginError,
        match=r"no embedding_provider named 'cohere'.*hashing, openai, sentence-transformers",
    ):
        EmbeddingTransform(provider="cohere")
    with pytest.raises(ConfigError, match="does not accept these options"):
        EmbeddingTransform(provider="hashing", temperature=3)
    wrong = EmbeddingTransform(provider=minilm, dimensions=1536)
    with pytest.raises(ConfigError, match="produces 384-dimensional vectors, dimensions=1536"):
        await wrong.open()


async def test_coalescer_survives_a_cancelled_leader_and_shares_errors(autojump_clock):
    from haive_contrib_ai.embeddings import Coalescer

    batches: list[list[str]] = []

    async def run_batch(texts: list[str]) -> np.ndarray:
        batches.append(sorted(texts))
        await trio.sleep(1)
        if "bad" in texts:
            raise ValueError("model failed")
        return np.asarray([[float(len(t))] for t in texts], dtype=np.float32)

    coalescer = Coalescer(run_batch, max_batch=4)
    results: dict[str, float] = {}

    async def submit(text: str, scope: trio.CancelScope | None = None) -> None:
        with scope or trio.CancelScope():
            results[text] = float((await coalescer.submit(text))[0])

    # A cancelled leader hands the lead on; when its batch held other callers' texts, they
    # get their place back at the front of the queue.
    scopes = {"leader": trio.CancelScope(), "a": trio.CancelScope()}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, "leader", scopes["leader"])
        await trio.sleep(0.1)  # batch ["leader"] is running
        nursery.start_soon(submit, "a", scopes["a"])
        await trio.sleep(0.01)  # queued first, so "a" is handed the lead
        nursery.start_soon(submit, "bb")
        await trio.sleep(0.09)
        scopes["leader"].cancel()  # "a" leads now: batch ["a", "bb"]
        await trio.sleep(0.1)
        nursery.start_soon(submit, "ccc")
        await trio.sleep(0.1)
        scopes["a"].cancel()  # "bb" goes back to the front and leads: ["bb", "ccc"]
    assert batches == [["leader"], ["a", "bb"], ["bb", "ccc"]], (batches, results)
    assert results == {"bb": 2.0, "ccc": 3.0}

    # An error of a batch reaches every caller in it; the next call works again.
    failures = []

    async def submit_bad(text: str) -> None:
        try:
            await coalescer.submit(text)
        except ValueError as exc:
            failures.append((text, str(exc)))

    batches.clear()
    async with trio.open_nursery() as nursery:
        for text in ("ok", "bad"):
            nursery.start_soon(submit_bad, text)
    assert batches == [["bad", "ok"]]
    assert sorted(failures) == [("bad", "model failed"), ("ok", "model failed")]
    assert float((await coalescer.submit("fine"))[0]) == 4.0
