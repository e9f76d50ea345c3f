"""haive-contrib-ai is discovered through its entry point and exports the seed's names."""

from __future__ import annotations

import importlib.metadata

import haive_contrib_ai

from haive.dataflow import streaming
from haive.dataflow.plugins import get_registry

SEED_NAMES = [
    "ChunkProcessor",
    "EmbeddingProcessor",
    "EmbeddingTransform",
    "SimilarityProcessor",
    "SentimentTransform",
    "ClassificationTransform",
    "TokenizationTransform",
    "EnrichmentTransform",
    "DocumentDataSource",
    "IntelligentEventRouter",
]


def test_entry_point_is_installed():
    eps = importlib.metadata.entry_points(group="haive.dataflow")
    assert any(ep.name == "ai" and ep.value == "haive_contrib_ai.plugin" for ep in eps)


def test_registry_knows_every_capability():
    registry = get_registry()
    for name in (
        "chunk",
        "embedding",
        "similarity",
        "sentiment",
        "classification",
        "tokenization",
        "enrichment",
        "event_router",
    ):
        assert name == registry.processor(name).PLUGIN_NAME
    assert registry.source("documents") is haive_contrib_ai.DocumentDataSource
    assert set(registry.names("embedding_provider")) >= {
        "sentence-transformers",
        "openai",
        "hashing",
    }
    assert registry.get("embedding_provider", "openai") is haive_contrib_ai.OpenAIEmbeddingProvider
    providers = {p.plugin for p in registry.provided() if p.name in ("chunk", "documents")}
    assert providers == {"ai"}


def test_seed_names_resolve_from_haive_dataflow_streaming():
    for name in SEED_NAMES:
        assert getattr(streaming, name) is getattr(haive_contrib_ai, name), name
    assert "ChunkProcessor" in dir(streaming)
