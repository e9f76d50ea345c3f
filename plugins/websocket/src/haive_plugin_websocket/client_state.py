"""What a client's parts share about its connection: the socket, the features, the id.

One :class:`ConnectionState` per :class:`~haive_plugin_websocket.client.StreamingClient`,
given to each of its parts. The connection part writes it (attaches the socket, settles the
features the server accepted, gives up); the rooms, the requests and the incoming messages
read it: whether a connection is up, which codec frames travel in, whether they are
batched, whether the client gave up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import trio

from .errors import ConnectionFailedError
from .protocol import JSON, MSGPACK, Codec, OutMessage, encode_frames, parse_features

if TYPE_CHECKING:
    from ._connections import HaiveClientConnection


class ConnectionState:
    """The state of one client's connection, shared by the client's parts.

    :attr:`ws` is the open connection (None while disconnected); :attr:`features` the
    protocol features the server accepted, from which :attr:`wire_codec` (MessagePack
    frames with ``msgpack``, else JSON), :attr:`batch` and :attr:`recovery` follow;
    :attr:`client_id` the id the client asked for or the server assigned; :attr:`failed`
    the error the client gave up with. ``max_batch_bytes`` bounds a batch frame.

    Example::

        >>> state = ConnectionState(client_id=None, max_batch_bytes=65536)
        >>> state.negotiate(offered=("batch", "msgpack"), accepted="batch, recovery", assigned_id="c-7")
        >>> sorted(state.features), state.batch, state.recovery, state.wire_codec.name, state.client_id
        (['batch'], True, False, 'json', 'c-7')
        >>> state.fail(ConnectionFailedError("gave up"))
        >>> state.check()
        Traceback (most recent call last):
        ...
        haive_plugin_websocket.errors.ConnectionFailedError: gave up
    """

    def __init__(self, *, client_id: str | None, max_batch_bytes: int) -> None:
        self.client_id = client_id
        self.max_batch_bytes = max_batch_bytes
        self.ws: HaiveClientConnection | None = None
        self.features: frozenset[str] = frozenset()
        self.failed: ConnectionFailedError | None = None
        self.wire_codec: Codec = JSON
        self.msgpack_frames = False
        self.batch = False
        self.recovery = False
        # Set while connected, and once the client gave up (waiters then raise `failed`).
        self._connected = trio.Event()

    @property
    def connected(self) -> bool:
        return self.ws is not None

    def negotiate(
        self, *, offered: Iterable[str], accepted: str | None, assigned_id: str | None
    ) -> None:
        """Settle the features from the server's ``accepted`` header and take its client id.

        Only features this client ``offered`` count; ``assigned_id`` (the server's client
        id header, None if absent) replaces :attr:`client_id`.
        """
        offered = frozenset(offered)
        self.features = frozenset(f for f in parse_features(accepted) if f in offered)
        self.batch = "batch" in self.features
        self.recovery = "recovery" in self.features
        self.msgpack_frames = "msgpack" in self.features
        self.wire_codec = MSGPACK if self.msgpack_frames else JSON
        if assigned_id:
            self.client_id = assigned_id

    def encode(self, messages: Sequence[OutMessage]) -> list[tuple[bool, bytes]]:
        """``messages`` as frames for the current connection (its codec, batched if agreed)."""
        return encode_frames(
            messages,
            self.wire_codec,
            with_seq=False,
            batch=self.batch,
            max_batch_bytes=self.max_batch_bytes,
        )

    def attach(self, ws: HaiveClientConnection) -> None:
        """``ws`` is the connection now; wakes :meth:`wait_connected`."""
        self.ws = ws
        self._connected.set()

    def detach(self) -> None:
        """The connection ended; :meth:`wait_connected` waits for the next one."""
        self.ws = None
        self._connected = trio.Event()

    def fail(self, error: ConnectionFailedError) -> None:
        """The client gave up with ``error``; :meth:`wait_connected` and :meth:`check` raise it."""
        self.failed = error
        self._connected.set()

    def check(self) -> None:
        """Raise the error the client gave up with, if it did."""
        if self.failed is not None:
            raise self.failed

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected); raise if the client gave up."""
        while self.ws is None:
            self.check()
            await self._connected.wait()
        await trio.lowlevel.checkpoint()


__all__ = ["ConnectionState"]
