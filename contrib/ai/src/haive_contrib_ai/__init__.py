"""haive-contrib-ai: chunking, embeddings, similarity, sentiment, classification, tokenization,
enrichment and intelligent routing for haive-dataflow pipelines, all offline.

The usual import path is :mod:`haive.dataflow.streaming` (``from haive.dataflow.streaming
import ChunkProcessor``); this package exports the same classes.

Names are imported on first use (PEP 562) from the static table below, so importing the
package, as plugin discovery does for ``haive_contrib_ai.plugin``, loads neither numpy nor
any model library.

Example::

    >>> import haive_contrib_ai
    >>> haive_contrib_ai.Document.__module__
    'haive_contrib_ai.records'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chunking import ChunkProcessor
    from .classification import (
        Classification,
        ClassificationTransform,
        EvaluationReport,
        train_classifier,
    )
    from .documents import DocumentDataSource
    from .embeddings import (
        EmbeddingError,
        EmbeddingProcessor,
        EmbeddingProvider,
        EmbeddingTransform,
        HashingEmbeddingProvider,
        OpenAIEmbeddingProvider,
        SentenceTransformerProvider,
        resolve_provider,
    )
    from .enrichment import EnrichmentTransform
    from .records import Chunk, Document, annotate, text_of, value_of
    from .router import IntelligentEventRouter, RouteDecision
    from .sentiment import Sentiment, SentimentTransform
    from .similarity import SimilarityProcessor
    from .tokenization import ModelTokenizer, TokenizationTransform, Tokens, WordTokenizer
    from .transforms import TextTransform


#: Public name -> the submodule defining it.
_SUBMODULE_OF: dict[str, str] = {
    "Chunk": "records",
    "ChunkProcessor": "chunking",
    "Classification": "classification",
    "ClassificationTransform": "classification",
    "Document": "records",
    "DocumentDataSource": "documents",
    "EmbeddingError": "embeddings",
    "EmbeddingProcessor": "embeddings",
    "EmbeddingProvider": "embeddings",
    "EmbeddingTransform": "embeddings",
    "EnrichmentTransform": "enrichment",
    "EvaluationReport": "classification",
    "HashingEmbeddingProvider": "embeddings",
    "IntelligentEventRouter": "router",
    "ModelTokenizer": "tokenization",
    "OpenAIEmbeddingProvider": "embeddings",
    "RouteDecision": "router",
    "SentenceTransformerProvider": "embeddings",
    "Sentiment": "sentiment",
    "SentimentTransform": "sentiment",
    "SimilarityProcessor": "similarity",
    "TextTransform": "transforms",
    "TokenizationTransform": "tokenization",
    "Tokens": "tokenization",
    "WordTokenizer": "tokenization",
    "annotate": "records",
    "resolve_provider": "embeddings",
    "text_of": "records",
    "train_classifier": "classification",
    "value_of": "records",
}

__all__ = [
    "Chunk",
    "ChunkProcessor",
    "Classification",
    "ClassificationTransform",
    "Document",
    "DocumentDataSource",
    "EmbeddingError",
    "EmbeddingProcessor",
    "EmbeddingProvider",
    "EmbeddingTransform",
    "EnrichmentTransform",
    "EvaluationReport",
    "HashingEmbeddingProvider",
    "IntelligentEventRouter",
    "ModelTokenizer",
    "OpenAIEmbeddingProvider",
    "RouteDecision",
    "SentenceTransformerProvider",
    "Sentiment",
    "SentimentTransform",
    "SimilarityProcessor",
    "TextTransform",
    "TokenizationTransform",
    "Tokens",
    "WordTokenizer",
    "annotate",
    "resolve_provider",
    "text_of",
    "train_classifier",
    "value_of",
]


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
