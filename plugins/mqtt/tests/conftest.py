"""Fixtures: a fresh topic root per test on the real Mosquitto (127.0.0.1:1883), a
collector reading topics with a plain paho client (independent of the plugin's code), and
Mosquitto brokers of a test's own (restarts, passwords, packet limits) on free ports."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

URL = "mqtt://127.0.0.1:1883"


@pytest.fixture
def root() -> str:
    """A topic prefix no other test uses."""
    return f"haive-test/{uuid.uuid4().hex[:12]}"


@attrs.frozen
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, str]


class Collector:
    """Subscribes to ``filters`` with a plain paho client (paho's own loop thread: this is
    test code observing the broker, not the plugin) and keeps what arrives, in order.

    ``client_id`` with ``persistent=True`` keeps a session in the broker, so a collector
    opened again later gets what arrived while it was closed."""

    def __init__(self, url: str, filters: list[str], *, qos: int = 2,
                 client_id: str | None = None, persistent: bool = False) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.host, self.port = host, int(port)
        self.filters, self.qos, self.persistent = filters, qos, persistent
        self.client_id = client_id or f"collector-{uuid.uuid4().hex[:8]}"
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or [])
        with self._lock:
            self.messages.append(Received(message.topic, message.payload, message.qos,
                                          bool(message.retain), props))

    def __enter__(self) -> Collector:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        if self.persistent:
            properties.SessionExpiryInterval = 600
        properties.ReceiveMaximum = 65_535
        self.client.connect(self.host, self.port, 30, clean_start=not self.persistent,
                            properties=properties)
        self.client.loop_start()
        self.client.subscribe([(f, self.qos) for f in self.filters])
        assert self._subscribed.wait(10), "no SUBACK"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_for(self, n: int, timeout: float = 30.0, idle: float = 0.5) -> list[Received]:
        """Blocks until ``n`` messages came (then ``idle`` more seconds, to see extra copies)
        or ``timeout`` passed; returns them all."""
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.02)
        last, quiet_since = self.count(), time.monotonic()
        while time.monotonic() - quiet_since < idle and time.monotonic() < deadline:
            time.sleep(0.05)
            if self.count() != last:
                last, quiet_since = self.count(), time.monotonic()
        with self._lock:
            return list(self.messages)


def publish_raw(url: str, messages: list[tuple[str, bytes, int, bool]]) -> None:
    """Publish with a plain paho client and wait until every QoS 1/2 message is confirmed."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(host, int(port), 30)
    client.loop_start()
    try:
        infos = [client.publish(t, p, q, r) for t, p, q, r in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """A ``mosquitto`` of the test's own on a free port, with ``persistence true`` and a
    store directory that survives restarts, unlimited queues for offline sessions, and the
    given extra configuration lines; ``stop()`` is a clean shutdown (the store is saved),
    ``kill()`` is SIGKILL."""

    def __init__(self, root: Path, *config: str) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise RuntimeError("mosquitto is not installed")
        root.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = root / "mosquitto.conf"
        self.log = root / "mosquitto.log"
        has_auth = any(line.startswith("password_file") for line in config)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if has_auth else 'true'}",
            "persistence true",
            f"persistence_location {root}/",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.log}",
            # Run as root (CI containers), mosquitto would switch to the `mosquitto` user,
            # who cannot read the test's private directory: stay who we are.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            *config,
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path, require: Any) -> Iterator[Any]:
    """``mosquitto(*config_lines)`` starts a broker of the test's own; all are killed after."""
    require(shutil.which("mosquitto") is not None or os.path.exists("/usr/sbin/mosquitto"),
            "needs the mosquitto binary (.ci/services installs mosquitto)")
    brokers: list[Mosquitto] = []

    def start(*config: str) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker{len(brokers)}", *config)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        broker.kill()
