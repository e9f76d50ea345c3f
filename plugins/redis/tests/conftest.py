"""Fixtures: a unique key prefix per test on the real Redis (127.0.0.1:6379), cleaned up."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def r(require: Callable[[bool, str], None]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    try:
        answers = bool(client.ping())
    except redis.ConnectionError:
        answers = False
    # The repository's conftest.py: skipped on a developer's machine, a failure in CI.
    require(answers, "needs Redis on 127.0.0.1:6379 (.ci/services starts one)")
    yield client
    client.close()


@pytest.fixture
def tag(r: redis.Redis) -> Iterator[str]:
    """A unique hash tag; every key the test makes starts with ``{tag}`` and is deleted."""
    name = f"haive-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(r.scan_iter(match=f"{{{name}}}*", count=1000))
    keys += list(r.scan_iter(match=f"{name}*", count=1000))
    if keys:
        r.delete(*keys)
