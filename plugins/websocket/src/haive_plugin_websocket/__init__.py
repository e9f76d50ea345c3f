"""WebSocket streaming for haive-dataflow: a server with rooms, a resilient client.

Example::

    >>> from haive.dataflow.streaming import WebSocketManager, StreamingClient, ConnectionConfig
    >>> WebSocketManager.PLUGIN_NAME, StreamingClient.__module__
    ('websocket', 'haive_plugin_websocket.client')
"""

from __future__ import annotations

from .agent_streams import AgentStreams, AgentStreamStats
from .backplane import Backplane, RedisBackplane
from .client import ClientStats, ConnectionEvent, StreamingClient, reconnect_delay
from .config import ConnectionConfig, ServerConfig
from .errors import (
    ConnectionFailedError,
    InvalidRoomError,
    MessageTooLargeError,
    NotServingError,
    RoomAccessError,
    TLSVerificationError,
    UnknownClientError,
    WebSocketError,
)
from .handlers import MessageHandler
from .pipeline import ClientMessage, WebSocketRoomSink, WebSocketSource
from .server import ClientInfo, ClientSession, MultiRoomWebSocket, ServerStats, WebSocketManager
from .tls import client_ssl_context, server_ssl_context

__all__ = [
    "AgentStreamStats",
    "AgentStreams",
    "Backplane",
    "ClientInfo",
    "ClientMessage",
    "ClientSession",
    "ClientStats",
    "ConnectionConfig",
    "ConnectionEvent",
    "ConnectionFailedError",
    "InvalidRoomError",
    "MessageHandler",
    "MessageTooLargeError",
    "MultiRoomWebSocket",
    "NotServingError",
    "RedisBackplane",
    "RoomAccessError",
    "ServerConfig",
    "ServerStats",
    "StreamingClient",
    "TLSVerificationError",
    "UnknownClientError",
    "WebSocketError",
    "WebSocketManager",
    "WebSocketRoomSink",
    "WebSocketSource",
    "client_ssl_context",
    "reconnect_delay",
    "server_ssl_context",
]
