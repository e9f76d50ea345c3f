"""websockets' trio connections, customised through its ``create_connection`` hatch.

Two changes: outgoing frames queued together are written with one ``send_all`` (one
syscall) instead of one per frame, and frames can be queued in bulk with
:func:`send_frames`. Everything else (handshake, ping/pong, close, compression) is
websockets' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from websockets.trio.client import ClientConnection
from websockets.trio.connection import Connection
from websockets.trio.server import ServerConnection


async def _send_data(conn: Connection) -> None:
    async with conn.send_lock:
        chunks = conn.protocol.data_to_send()
        pending: list[bytes] = []
        for data in chunks:
            if data:
                pending.append(data)
                continue
            if pending:
                await conn.stream.send_all(b"".join(pending) if len(pending) > 1 else pending[0])
                pending = []
            # An empty chunk asks for the end of the stream (after the closing handshake).
            if isinstance(conn.stream, trio.abc.HalfCloseableStream):
                try:
                    await conn.stream.send_eof()
                except Exception:  # the peer may already be gone; closing is the goal
                    pass
            else:  # pragma: no cover - TLS streams cannot half-close
                await conn.stream.aclose()
        if pending:
            await conn.stream.send_all(b"".join(pending) if len(pending) > 1 else pending[0])


class HaiveServerConnection(ServerConnection):
    """A server connection that writes queued frames in one syscall; carries our state."""

    haive: Any = None

    async def send_data(self) -> None:
        await _send_data(self)


class HaiveClientConnection(ClientConnection):
    """A client connection that writes queued frames in one syscall."""

    async def send_data(self) -> None:
        await _send_data(self)


async def send_frames(conn: Connection, frames: Sequence[tuple[bool, bytes]]) -> None:
    """Queue ``frames`` ((is_text, data) pairs) on ``conn`` and write them together.

    Raises websockets' ConnectionClosed when the connection is closing or closed.
    """
    async with conn.send_context():
        protocol = conn.protocol
        for is_text, data in frames:
            if is_text:
                protocol.send_text(data)
            else:
                protocol.send_binary(data)
