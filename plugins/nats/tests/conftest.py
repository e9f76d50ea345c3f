"""Fixtures: a fresh JetStream stream per test on the real NATS (127.0.0.1:4222), deleted
after; reading a subject back; and NATS servers of a test's own (for restarts)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from haive_plugin_nats import delete_stream, ensure_stream
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, DeliverPolicy

from haive.dataflow.runtime.bridge import open_asyncio_bridge

URL = "nats://127.0.0.1:4222"


@attrs.frozen
class Stream:
    """A test's stream: ``name`` storing ``input``, ``dead`` (``input.dead``) and ``output``."""

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


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    name = f"T{uuid.uuid4().hex[:12]}"
    await ensure_stream(name, [f"{name}.in", f"{name}.in.dead", f"{name}.out"], url=URL,
                        storage="memory")
    yield Stream(name, URL)
    await delete_stream(name, url=URL)


@attrs.frozen
class Stored:
    subject: str
    data: bytes
    headers: dict[str, str]
    sequence: int


async def _read_all(client: NatsClient, stream: str, subject: str) -> list[Stored]:
    js = client.jetstream()
    sub = await js.pull_subscribe(
        subject, stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0),
    )
    out: list[Stored] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(1000, timeout=0.5)
        except TimeoutError:  # nats-py raises its own or asyncio's
            msgs = []
        for msg in msgs:
            await msg.ack()
            out.append(Stored(msg.subject, msg.data, dict(msg.headers or {}),
                              msg.metadata.sequence.stream))
        if not msgs:  # everything stored was there before reading began
            break
    await sub.unsubscribe()
    return out


async def read_subject(url: str, stream: str, subject: str) -> list[Stored]:
    """Every message stored on ``subject`` in ``stream``, in stream order."""
    async with open_asyncio_bridge(name="test-reader") as bridge:
        client = NatsClient()
        await bridge.run(client.connect, url)
        try:
            return await bridge.run(_read_all, client, stream, subject)
        finally:
            await bridge.run(client.close)


async def consumer_state(url: str, stream: str, durable: str) -> Any:
    """The durable consumer's info (``num_pending``, ``num_ack_pending``, ``delivered``)."""
    async with open_asyncio_bridge(name="test-info") as bridge:
        client = NatsClient()
        await bridge.run(client.connect, url)
        try:
            return await bridge.run(client.jetstream().consumer_info, stream, durable)
        finally:
            await bridge.run(client.close)


async def _count(client: NatsClient, stream: str, subject: str) -> int:
    info = await client.jetstream().stream_info(stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def subject_count(url: str, stream: str, subject: str) -> int:
    """How many messages ``stream`` stores on ``subject``."""
    async with open_asyncio_bridge(name="test-count") as bridge:
        client = NatsClient()
        await bridge.run(client.connect, url)
        try:
            return await bridge.run(_count, client, stream, subject)
        finally:
            await bridge.run(client.close)


@pytest.fixture
def count() -> Callable[[str, str, str], Awaitable[int]]:
    return subject_count


@pytest.fixture
def read() -> Callable[[str, str, str], Awaitable[list[Stored]]]:
    return read_subject


@pytest.fixture
def consumer() -> Callable[[str, str, str], Awaitable[Any]]:
    return consumer_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """A ``nats-server -js`` of the test's own, on a free port with a store directory that
    survives restarts; ``kill()`` is SIGKILL."""

    def __init__(self, root: Path, *args: str) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server is not installed")
        root.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.args = args
        self.store = root / "jetstream"
        self.log = root / "nats.log"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.store), "-l", str(self.log), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    if conn.recv(4096).startswith(b"INFO "):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not start on port {self.port}: {self.log}")

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
def nats_server(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    servers: list[NatsServer] = []

    def start(*args: str) -> NatsServer:
        server = NatsServer(tmp_path / f"server{len(servers)}", *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
