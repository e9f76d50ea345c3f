"""The seed's NLP transformation chain with the real model, and the AI transforms as steps."""

from __future__ import annotations

import numpy as np
import pytest
from haive_contrib_ai.records import Chunk
from haive_contrib_ai.tokenization import Tokens

from haive.dataflow import ConfigError, StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.streaming import (
    ClassificationTransform,
    EmbeddingTransform,
    EnrichmentTransform,
    SentimentTransform,
    TokenizationTransform,
    TransformationChain,
)

INTENTS = {
    "complaint": "an angry complaint about a bad product or service",
    "question": "a question asking how to do something",
    "praise": "a happy message thanking or praising the team",
}


def nlp_chain(embedder: EmbeddingTransform) -> TransformationChain:
    chain = TransformationChain("nlp")
    chain.add_transformation(
        "tokenization", TokenizationTransform(model="all-MiniLM-L6-v2", include_special_tokens=True)
    )
    chain.add_transformation("embedding", embedder)
    chain.add_transformation(
        "classification",
        ClassificationTransform(labels=INTENTS, confidence_threshold=0.5, embedder=embedder),
        input="embedding",  # classify the vector the previous step computed
    )
    chain.add_transformation("sentiment", SentimentTransform())
    chain.add_transformation(
        "enrichment", EnrichmentTransform(add_metadata=True, include_confidence=True)
    )
    return chain


async def test_the_seed_chain_gives_every_output(embedder):
    chain = nlp_chain(embedder)
    await chain.open()  # loads models, embeds the label descriptions
    calls = embedder.calls
    result = await chain.transform("How do I export my data to a spreadsheet?")
    assert (
        isinstance(result.tokens, Tokens)
        and result.tokens[0] == "[CLS]"
        and "export" in result.tokens
    )
    assert result.embedding.shape == (384,)
    assert result.classification["label"] == "question"
    assert 0.5 <= result.classification["confidence"] <= 1.0
    assert result.metadata["label"] == "question"
    assert result.metadata["steps"] == ["tokenization", "embedding", "classification", "sentiment"]
    assert set(result.metadata["confidence"]) == {"classification", "sentiment"}
    assert result.metadata["words"] == 9
    assert embedder.calls - calls == 1  # classification reused the embedding


async def test_chain_as_a_node_batches_the_model(embedder):
    chain = nlp_chain(embedder)
    texts = [
        "This is broken and I want my money back!",
        "Thank you, the new release is wonderful!",
        "Where do I change my password?",
    ]
    pipeline = StreamingPipeline("nlp")
    pipeline.set_source(IterableSource(texts))
    pipeline.add_node(chain)
    sink = MemorySink()
    pipeline.set_sink(sink)
    await chain.steps[2].transform.open()  # embeds the label descriptions
    calls = embedder.calls
    await pipeline.execute()
    assert [r.classification.label for r in sink.items] == ["complaint", "praise", "question"]
    assert [r.sentiment.label for r in sink.items] == ["negative", "positive", "neutral"]
    assert embedder.calls - calls == 1  # three texts, one model call


async def test_transforms_as_nodes_annotate_records(embedder):
    chunk = Chunk("d:0", "d", 0, "Great docs, thanks!", 0, 19, {"source": "a.md"})
    pipeline = StreamingPipeline("annotate")
    pipeline.set_source(IterableSource([chunk]))
    pipeline.add_node(embedder)
    pipeline.add_node(SentimentTransform())
    pipeline.add_node(TokenizationTransform())
    pipeline.add_node(
        EnrichmentTransform(clock=lambda: 12.0, enrichers={"shouty": lambda c: c.text.isupper()})
    )
    sink = MemorySink()
    pipeline.set_sink(sink)
    await pipeline.execute()
    [out] = sink.items
    assert out.embedding.shape == (384,) and np.isclose(np.linalg.norm(out.embedding), 1.0)
    meta = out.metadata
    assert meta["source"] == "a.md"  # the existing metadata is kept
    assert list(meta["tokens"]) == ["Great", "docs", ",", "thanks", "!"]
    assert meta["sentiment"].label == "positive"
    assert meta["characters"] == 19 and meta["processed_at"] == 12.0 and meta["shouty"] is False
    assert meta["confidence"]["sentiment"] == abs(meta["sentiment"].compound)


async def test_async_enrichers_and_errors():
    async def lookup(text):
        return {"customer": "c-42"} if "order" in text else None

    enrich = EnrichmentTransform(add_metadata=False, enrichers={"crm": lookup})
    assert await enrich.transform("my order") == {"crm": {"customer": "c-42"}}
    with pytest.raises(ConfigError, match="enricher 'x' is not callable"):
        EnrichmentTransform(enrichers={"x": 3})
    with pytest.raises(ConfigError, match="tokenizer 'gpt2' is not available offline"):
        TokenizationTransform(model="gpt2")
