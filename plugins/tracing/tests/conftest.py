"""Fixtures: tracing on with spans kept in memory (the SDK's InMemorySpanExporter)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from haive_plugin_tracing import Tracing, active_tracing, enable_tracing
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def traced() -> Iterator[Callable[..., tuple[Tracing, InMemorySpanExporter]]]:
    """``traced(sample_ratio=1.0)``: turn tracing on with an in-memory exporter; off after."""
    handles: list[Tracing] = []

    def turn_on(sample_ratio: float = 1.0, **options: object) -> tuple[Tracing, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        tracing = enable_tracing(sample_ratio, exporter=exporter, simple_export=True, **options)  # type: ignore[arg-type]
        handles.append(tracing)
        return tracing, exporter

    yield turn_on
    for tracing in handles:
        tracing.shutdown()
    assert active_tracing() is None


@pytest.fixture
def tag(require: Callable[[bool, str], None]) -> Iterator[str]:
    """A unique hash tag on the real Redis (127.0.0.1:6379); its keys are deleted after."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        answers = bool(client.ping())
    except redis.ConnectionError:
        answers = False
    require(answers, "needs Redis on 127.0.0.1:6379 (.ci/services starts one)")
    name = f"haive-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(match=f"{{{name}}}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
