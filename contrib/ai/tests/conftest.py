"""Fixtures for haive-contrib-ai's tests: the real model, loaded once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from haive_contrib_ai.embeddings import EmbeddingTransform, SentenceTransformerProvider

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerProvider:
    """The packaged all-MiniLM-L6-v2, loaded once (about 5 s) and shared by every test."""
    provider = SentenceTransformerProvider()
    trio.run(provider.open)
    return provider


@pytest.fixture
def embedder(minilm: SentenceTransformerProvider) -> EmbeddingTransform:
    """An EmbeddingTransform over the session's model."""
    return EmbeddingTransform(provider=minilm)


@pytest.fixture(scope="session")
def intents() -> list[dict[str, str]]:
    """The labeled set: 64 customer messages, 16 each of billing/shipping/technical/account."""
    with open(DATA / "intents.jsonl") as f:
        return [json.loads(line) for line in f]


#: Accuracy figures the classification tests measure, printed in pytest's summary.
ACCURACY: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if ACCURACY:
        terminalreporter.section(
            "haive-contrib-ai classification accuracy (tests/data/intents.jsonl)"
        )
        for name, line in ACCURACY.items():
            terminalreporter.write_line(f"{name}: {line}")


@pytest.fixture
def accuracy_report() -> dict[str, str]:
    """Where a test puts an accuracy line for the end-of-run summary."""
    return ACCURACY
