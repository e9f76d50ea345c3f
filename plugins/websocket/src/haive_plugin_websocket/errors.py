"""Errors of the WebSocket plugin, each naming what went wrong."""

from __future__ import annotations

from haive.dataflow.errors import HaiveError


class WebSocketError(HaiveError):
    """Base class of the WebSocket plugin's errors."""


class InvalidRoomError(WebSocketError, ValueError):
    """A room name is not 1-128 characters of letters, digits and ``_.:@/+-``."""


class UnknownClientError(WebSocketError, LookupError):
    """No connected client has this id (on this server, or anywhere with scale-out)."""


class MessageTooLargeError(WebSocketError, ValueError):
    """An outgoing message is bigger than the configured maximum message size."""


class RoomAccessError(WebSocketError):
    """The server refused a room request (forbidden, invalid name, too many rooms)."""

    def __init__(self, room: str, code: str, message: str) -> None:
        super().__init__(f"room {room!r}: {code}: {message}")
        self.room = room
        self.code = code


class ConnectionFailedError(WebSocketError, ConnectionError):
    """The client gave up: reconnect attempts exhausted, or a fatal handshake refusal."""


class TLSVerificationError(ConnectionFailedError):
    """The TLS handshake failed: the server's certificate is not trusted (or not for this
    host), or the peer does not speak TLS; the message says which and how to fix it."""


class NotServingError(WebSocketError, RuntimeError):
    """The server is not serving (start it with ``nursery.start(manager.serve)``)."""
