"""haive-contrib-ai is discovered through its entry point and exports the seed's names."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import haive_contrib_ai
import pytest

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


def _fresh_python(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


HEAVY = ("numpy", "torch", "sentence_transformers", "sklearn", "vaderSentiment")


def test_plugin_discovery_imports_no_numpy():
    """Discovering plugins imports each plugin module, hence its package: that must stay
    cheap (the package resolves its names lazily)."""
    loaded = _fresh_python(
        "import sys\n"
        "from haive.dataflow.plugins import build_plugin_manager\n"
        "pm = build_plugin_manager()\n"
        "assert 'haive_contrib_ai.plugin' in sys.modules\n"
        f"print(*[m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert loaded == []


def test_the_package_resolves_its_names_on_first_use():
    loaded = _fresh_python(
        "import sys, haive_contrib_ai\n"
        "print('numpy' in sys.modules, 'haive_contrib_ai.chunking' in sys.modules)\n"
        "haive_contrib_ai.ChunkProcessor\n"
        "print('haive_contrib_ai.chunking' in sys.modules)\n"
    )
    assert loaded == ["False", "False", "True"]
    assert set(haive_contrib_ai.__all__) <= set(dir(haive_contrib_ai))
    for name in haive_contrib_ai.__all__:
        assert getattr(haive_contrib_ai, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'Nonsense'"):
        haive_contrib_ai.Nonsense  # noqa: B018 - the lookup is the test


def test_the_lazy_table_and_all_list_the_same_names():
    assert sorted(haive_contrib_ai.__all__) == sorted(haive_contrib_ai._SUBMODULE_OF)
