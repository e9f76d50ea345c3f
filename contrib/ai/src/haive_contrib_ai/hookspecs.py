"""The capability kinds this distribution owns, added to haive-dataflow in ``haive_addhooks``.

* ``embedding_provider``: what turns texts into vectors for the AI processors
  (:class:`~haive_contrib_ai.embeddings.EmbeddingProvider` subclasses).
* ``llm_provider``: what turns chat messages into streamed text for the LLM node
  (:class:`~haive_contrib_ai.llm_providers.LLMProvider` subclasses).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from haive.dataflow.plugins.hookspecs import hookspec

if TYPE_CHECKING:
    from .embeddings import EmbeddingProvider
    from .llm_providers import LLMProvider


@hookspec
def haive_register_embedding_providers() -> Iterable[type[EmbeddingProvider]]:
    """Return embedding provider classes: what turns texts into vectors for the AI processors.

    Called once when the registry is built; ``registry.get("embedding_provider", name)``
    returns one. A provider class is constructed with keyword options (``model=``, ``url=``,
    ...) and has ``async embed(texts) -> list of vectors``, one per text, in order. This
    distribution registers ``sentence-transformers`` (its packaged all-MiniLM-L6-v2 model,
    offline), ``openai`` (an OpenAI-compatible HTTP server given by URL) and ``hashing``.
    """
    raise NotImplementedError


@hookspec
def haive_register_llm_providers() -> Iterable[type[LLMProvider]]:
    """Return LLM provider classes: what turns chat messages into streamed text.

    Called once when the registry is built; ``registry.get("llm_provider", name)`` returns
    one. A provider class is constructed with keyword options (``model=``, ``url=``, ...)
    and has ``stream(messages, options)``, an async context manager yielding the text
    deltas (leaving it stops the generation). This distribution registers ``openai`` (any
    OpenAI-compatible chat completions server, streamed over server-sent events) and
    ``transformers`` (a local model, streamed token by token).
    """
    raise NotImplementedError
