"""Fixtures: fresh queues per test on the real RabbitMQ (127.0.0.1:5672), deleted after;
reading a queue back; and RabbitMQ nodes of a test's own (for restarts)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import attrs
import pytest
from haive_plugin_rabbitmq import DEFAULT_URL, delete_exchange, delete_queues

from haive.dataflow.runtime.bridge import open_asyncio_bridge

URL = DEFAULT_URL


@attrs.frozen
class Queues:
    """A test's queues: ``input`` (declared durable), ``dead`` (``input.dead``) and
    ``output`` (declared durable), and an ``exchange`` name (not declared)."""

    name: str
    url: str

    @property
    def input(self) -> str:
        return f"{self.name}.in"

    @property
    def dead(self) -> str:
        return f"{self.name}.in.dead"

    @property
    def output(self) -> str:
        return f"{self.name}.out"

    @property
    def exchange(self) -> str:
        return f"{self.name}.x"


async def _declare(url: str, names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, durable=True)


async def declare_queues(url: str, *names: str) -> None:
    async with open_asyncio_bridge(name="test-declare") as bridge:
        await bridge.run(_declare, url, list(names))


async def _bind(url: str, exchange: str, queue: str, key: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        x = await channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        if queue:
            q = await channel.declare_queue(queue, durable=True)
            await q.bind(x, routing_key=key)


async def declare_exchange(url: str, exchange: str, queue: str = "", key: str = "") -> None:
    """Declare the direct exchange ``exchange`` (durable), and bind ``queue`` to it with
    ``key`` when a queue is given."""
    async with open_asyncio_bridge(name="test-exchange") as bridge:
        await bridge.run(_bind, url, exchange, queue, key)


@pytest.fixture
async def queues() -> AsyncIterator[Queues]:
    q = Queues(f"t-{uuid.uuid4().hex[:12]}", URL)
    await declare_queues(URL, q.input, q.dead, q.output)
    yield q
    await delete_queues(q.input, q.dead, q.output, url=URL)
    await delete_exchange(q.exchange, url=URL)


@attrs.frozen
class Stored:
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    routing_key: str
    redelivered: bool
    delivery_mode: int | None
    timestamp: float | None


async def _read_all(url: str, queue: str, idle: float) -> list[Stored]:
    connection = await aio_pika.connect(url)
    out: list[Stored] = []
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        q = await channel.declare_queue(queue, passive=True)
        async with q.iterator(no_ack=True) as messages:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        message = await anext(messages)
                except TimeoutError:
                    break
                out.append(Stored(
                    message.body, dict(message.headers or {}), message.message_id,
                    message.routing_key or "", bool(message.redelivered),
                    message.delivery_mode,
                    message.timestamp.timestamp() if message.timestamp else None,
                ))
    return out


async def read_queue(url: str, queue: str, idle: float = 1.0) -> list[Stored]:
    """Every message in ``queue`` (consumed: the queue is empty after), in queue order;
    stops once nothing came for ``idle`` seconds."""
    async with open_asyncio_bridge(name="test-reader") as bridge:
        return await bridge.run(_read_all, url, queue, idle)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RabbitServer:
    """A RabbitMQ node of the test's own: ``haive-test-<port>@localhost`` on free AMQP and
    distribution ports, its database and logs in a temporary directory that survives
    restarts. ``kill()`` is SIGKILL of the whole node."""

    BINARY = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(self) -> None:
        binary = self.BINARY if os.path.exists(self.BINARY) else shutil.which("rabbitmq-server")
        if binary is None:
            raise RuntimeError("rabbitmq-server is not installed")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="haive-rabbitmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        (self.root / "mnesia").mkdir()
        (self.root / "log").mkdir()
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        self.user: str | None = None
        if os.geteuid() == 0:  # the Debian scripts refuse root; the rabbitmq user runs it
            self.user = "rabbitmq"
            shutil.chown(self.root, self.user, self.user)
            for path in self.root.rglob("*"):
                shutil.chown(path, self.user, self.user)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def env(self) -> dict[str, str]:
        node = f"haive-test-{self.port}@localhost"
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
        }
        if self.user is not None:
            env["HOME"] = os.path.expanduser(f"~{self.user}")  # its Erlang cookie
        return env

    def start(self) -> None:
        command = [self.binary]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", self.binary]
        self.proc = subprocess.Popen(
            command, env=self.env(), cwd=self.root, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited at start: see {self.root / 'log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"AMQP\x00\x00\x09\x01")
                    if conn.recv(7)[:3] == b"\x01\x00\x00":
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"rabbitmq-server did not start on port {self.port}: {self.root}")

    def kill(self) -> None:
        """SIGKILL the node (every process of its session: the shell scripts and beam)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None
        # epmd forgets the node when its connection closes; wait until the port is free.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return
            time.sleep(0.1)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def rabbit_server() -> Iterator[RabbitServer]:
    server = RabbitServer()
    try:
        yield server
    finally:
        server.remove()
