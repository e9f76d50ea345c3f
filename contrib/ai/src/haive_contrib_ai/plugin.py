"""Hook implementations: what haive-contrib-ai registers with haive-dataflow.

Only class objects are handed over; heavy libraries (torch, sentence-transformers,
scikit-learn, vaderSentiment) are imported when a processor first needs them.
"""

from __future__ import annotations

from typing import Any

from haive.dataflow import hookimpl

_MODULE = "haive_contrib_ai"


@hookimpl
def haive_register_processors() -> list[type[Any]]:
    from .chunking import ChunkProcessor
    from .classification import ClassificationTransform
    from .embeddings import EmbeddingProcessor
    from .enrichment import EnrichmentTransform
    from .router import IntelligentEventRouter
    from .sentiment import SentimentTransform
    from .similarity import SimilarityProcessor
    from .tokenization import TokenizationTransform

    return [
        ChunkProcessor,
        EmbeddingProcessor,
        SimilarityProcessor,
        SentimentTransform,
        ClassificationTransform,
        TokenizationTransform,
        EnrichmentTransform,
        IntelligentEventRouter,
    ]


@hookimpl
def haive_register_sources() -> list[type[Any]]:
    from .documents import DocumentDataSource

    return [DocumentDataSource]


@hookimpl
def haive_register_embedding_providers() -> list[type[Any]]:
    from .embeddings import (
        HashingEmbeddingProvider,
        OpenAIEmbeddingProvider,
        SentenceTransformerProvider,
    )

    return [SentenceTransformerProvider, OpenAIEmbeddingProvider, HashingEmbeddingProvider]


@hookimpl
def haive_streaming_exports() -> dict[str, str]:
    return {
        "ChunkProcessor": f"{_MODULE}.chunking:ChunkProcessor",
        "DocumentDataSource": f"{_MODULE}.documents:DocumentDataSource",
        "Document": f"{_MODULE}.records:Document",
        "Chunk": f"{_MODULE}.records:Chunk",
        "EmbeddingProcessor": f"{_MODULE}.embeddings:EmbeddingProcessor",
        "EmbeddingTransform": f"{_MODULE}.embeddings:EmbeddingTransform",
        "EmbeddingProvider": f"{_MODULE}.embeddings:EmbeddingProvider",
        "SimilarityProcessor": f"{_MODULE}.similarity:SimilarityProcessor",
        "SentimentTransform": f"{_MODULE}.sentiment:SentimentTransform",
        "ClassificationTransform": f"{_MODULE}.classification:ClassificationTransform",
        "TokenizationTransform": f"{_MODULE}.tokenization:TokenizationTransform",
        "EnrichmentTransform": f"{_MODULE}.enrichment:EnrichmentTransform",
        "IntelligentEventRouter": f"{_MODULE}.router:IntelligentEventRouter",
    }
