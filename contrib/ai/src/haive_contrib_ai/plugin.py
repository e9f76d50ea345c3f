"""Hook implementations: what haive-contrib-ai registers with haive-dataflow.

Only class objects are handed over; heavy libraries (numpy, torch, sentence-transformers,
scikit-learn, vaderSentiment) are imported when the registry is built or a processor first
needs them, never when the plugin is discovered. Public names and capabilities are declared
in ``pyproject.toml`` (``haive.dataflow.exports``, ``.provides``, ``.kinds``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from haive.dataflow import hookimpl

from . import hookspecs

if TYPE_CHECKING:
    from haive.dataflow.io.sources import DataSource
    from haive.dataflow.plugins import CapabilityKind
    from haive.dataflow.runtime.nodes import Node

    from .embeddings import EmbeddingProvider
    from .llm_providers import LLMProvider


@hookimpl
def haive_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def haive_register_capability_kinds() -> Iterable[CapabilityKind[Any]]:
    from .embeddings import EMBEDDING_PROVIDER
    from .llm_providers import LLM_PROVIDER

    return [EMBEDDING_PROVIDER, LLM_PROVIDER]


@hookimpl
def haive_register_processors() -> list[type[Node]]:
    from .chunking import ChunkProcessor
    from .classification import ClassificationTransform
    from .embeddings import EmbeddingProcessor
    from .enrichment import EnrichmentTransform
    from .llm_node import LLMNode
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
        LLMNode,
    ]


@hookimpl
def haive_register_sources() -> list[type[DataSource]]:
    from .documents import DocumentDataSource

    return [DocumentDataSource]


@hookimpl
def haive_register_embedding_providers() -> list[type[EmbeddingProvider]]:
    from .embeddings import (
        HashingEmbeddingProvider,
        OpenAIEmbeddingProvider,
        SentenceTransformerProvider,
    )

    return [SentenceTransformerProvider, OpenAIEmbeddingProvider, HashingEmbeddingProvider]


@hookimpl
def haive_register_llm_providers() -> list[type[LLMProvider]]:
    from .llm_local import TransformersChatProvider
    from .llm_openai import OpenAIChatProvider

    return [OpenAIChatProvider, TransformersChatProvider]
