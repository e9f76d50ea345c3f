"""Helpers for the WebSocket plugin's tests: message inboxes and misbehaving peers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from websockets.utils import accept_key


class Inbox:
    """Collects messages (a handler) and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._changed.set()
        self._changed = trio.Event()

    def of_type(self, message_type: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == message_type]

    async def wait_for(self, predicate: Callable[[Inbox], bool]) -> None:
        while not predicate(self):
            await self._changed.wait()

    async def wait_count(self, message_type: str, n: int) -> list[dict[str, Any]]:
        await self.wait_for(lambda inbox: len(inbox.of_type(message_type)) >= n)
        return self.of_type(message_type)


@pytest.fixture
def inbox() -> Callable[..., Inbox]:
    """``inbox(client)`` returns an Inbox receiving every message type the client gets."""

    def make(client: Any = None) -> Inbox:
        box = Inbox()
        if client is not None:
            client.on_message("*")(box)
        return box

    return make


@pytest.fixture
def peers() -> Any:
    """Misbehaving WebSocket peers: ``peers.silent(stream)`` answers the handshake, then ignores all."""

    class Peers:
        silent = staticmethod(silent_peer)
        answer_handshake = staticmethod(answer_handshake)

    return Peers


async def answer_handshake(stream: trio.abc.Stream) -> bytes:
    """Read a WebSocket upgrade request from ``stream`` and accept it (no extensions)."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise trio.BrokenResourceError("peer went away during the handshake")
        request += chunk
    key = ""
    for line in request.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    await stream.send_all(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
        ).encode()
    )
    return request


async def silent_peer(stream: trio.abc.Stream) -> None:
    """Accept the handshake, then read and ignore everything: no pongs, no messages."""
    try:
        await answer_handshake(stream)
        while await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
