"""The connected clients of one server, by client id.

A client id names one connection at a time: registering a newer connection with an id
that is connected already replaces the older one, which is closed with 4009
(:data:`~haive_plugin_websocket.protocol.CLOSE_REPLACED`). When a connection ends it is
removed only if it is still the one registered under its id, so an old connection closing
late never takes its successor's place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import UnknownClientError
from .protocol import CLOSE_REPLACED

if TYPE_CHECKING:
    from .server_session import ClientSession


class ConnectionRegistry:
    """Client id -> the open :class:`~haive_plugin_websocket.server_session.ClientSession`.

    :attr:`clients` is the live mapping (``WebSocketManager.clients``); :meth:`add` and
    :meth:`remove` keep one connection per client id; :meth:`session` looks a connected
    client up or says which ones are connected.

    Example::

        >>> registry = ConnectionRegistry()
        >>> len(registry), registry.get("ada")
        (0, None)
        >>> registry.session("ada")
        Traceback (most recent call last):
        ...
        haive_plugin_websocket.errors.UnknownClientError: no client 'ada' is connected to this server; connected: (none)
    """

    def __init__(self) -> None:
        self.clients: dict[str, ClientSession] = {}

    def __len__(self) -> int:
        return len(self.clients)

    def __iter__(self) -> Iterator[ClientSession]:
        return iter(list(self.clients.values()))

    def get(self, client_id: str) -> ClientSession | None:
        """The open connection of ``client_id``, or None."""
        return self.clients.get(client_id)

    def session(self, client_id: str) -> ClientSession:
        """The open connection of ``client_id``; UnknownClientError naming the connected ones."""
        session = self.clients.get(client_id)
        if session is None:
            raise UnknownClientError(
                f"no client {client_id!r} is connected to this server; connected: "
                f"{', '.join(sorted(self.clients)[:20]) or '(none)'}"
            )
        return session

    def add(self, session: ClientSession) -> None:
        """Register ``session`` under its client id, replacing (closing 4009) an older one."""
        previous = self.clients.get(session.client_id)
        if previous is not None:
            previous.kick(CLOSE_REPLACED, "replaced by a newer connection with the same client id")
        self.clients[session.client_id] = session

    def remove(self, session: ClientSession) -> bool:
        """Forget ``session``; False (and nothing changes) if a newer connection holds its id."""
        if self.clients.get(session.client_id) is not session:
            return False
        del self.clients[session.client_id]
        return True

    def connection_stats(self) -> dict[str, dict[str, Any]]:
        """Client id -> that connection's counters (:meth:`ClientSession.snapshot`)."""
        return {cid: session.snapshot() for cid, session in self.clients.items()}

    def client_rooms(self) -> dict[str, set[str]]:
        """Client id -> the rooms it is in (a snapshot)."""
        return {cid: set(session.rooms) for cid, session in self.clients.items()}


__all__ = ["ConnectionRegistry"]
