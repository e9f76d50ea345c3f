"""haive-contrib-ai: chunking, embeddings, similarity, sentiment, classification, tokenization,
enrichment, intelligent routing and LLM token streams for haive-dataflow pipelines, offline.

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
    from .llm_limits import RateLimit
    from .llm_local import TransformersChatProvider
    from .llm_node import LLMChunk, LLMNode, LLMResponse
    from .llm_openai import OpenAIChatProvider
    from .llm_providers import GenerationOptions, LLMProvider, resolve_llm_provider
    from .llm_records import ChatMessage, LLMError, Usage
    from .records import Chunk, Document, annotate, text_of, value_of
    from .router import IntelligentEventRouter, RouteDecision
    from .sentiment import Sentiment, SentimentTransform
    from .similarity import SimilarityProcessor
    from .tokenization import ModelTokenizer, TokenizationTransform, Tokens, WordTokenizer
    from .transforms import TextTransform


#: Public name -> the submodule defining it.
_SUBMODULE_OF: dict[str, str] = {
    "ChatMessage": "llm_records",
    "GenerationOptions": "llm_providers",
    "LLMChunk": "llm_node",
    "LLMError": "llm_records",
    "LLMNode": "llm_node",
    "LLMProvider": "llm_providers",
    "LLMResponse": "llm_node",
    "OpenAIChatProvider": "llm_openai",
    "RateLimit": "llm_limits",
    "TransformersChatProvider": "llm_local",
    "Usage": "llm_records",
    "resolve_llm_provider": "llm_providers",
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
    "ChatMessage",
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
    "GenerationOptions",
    "HashingEmbeddingProvider",
    "IntelligentEventRouter",
    "LLMChunk",
    "LLMError",
    "LLMNode",
    "LLMProvider",
    "LLMResponse",
    "ModelTokenizer",
    "OpenAIChatProvider",
    "OpenAIEmbeddingProvider",
    "RateLimit",
    "RouteDecision",
    "SentenceTransformerProvider",
    "Sentiment",
    "SentimentTransform",
    "SimilarityProcessor",
    "TextTransform",
    "TokenizationTransform",
    "Tokens",
    "TransformersChatProvider",
    "Usage",
    "WordTokenizer",
    "annotate",
    "resolve_llm_provider",
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
