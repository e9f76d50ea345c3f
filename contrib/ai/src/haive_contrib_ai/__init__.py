"""haive-contrib-ai: chunking, embeddings, similarity, sentiment, classification, tokenization,
enrichment and intelligent routing for haive-dataflow pipelines, all offline.

The usual import path is :mod:`haive.dataflow.streaming` (``from haive.dataflow.streaming
import ChunkProcessor``); this package exports the same classes.
"""

from __future__ import annotations

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
