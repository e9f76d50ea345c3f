"""Hook implementations: how haive-dataflow discovers this plugin (entry point ``websocket``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from haive.dataflow import hookimpl

_MODULE = "haive_plugin_websocket"


@hookimpl
def haive_register_transports() -> Iterable[type[Any]]:
    """The server, as transport ``websocket``."""
    from .server import WebSocketManager

    return [WebSocketManager]


@hookimpl
def haive_register_sources() -> Iterable[type[Any]]:
    """Client messages into a pipeline, as source ``websocket``."""
    from .pipeline import WebSocketSource

    return [WebSocketSource]


@hookimpl
def haive_register_sinks() -> Iterable[type[Any]]:
    """Pipeline output broadcast to a room, as sink ``websocket_room``."""
    from .pipeline import WebSocketRoomSink

    return [WebSocketRoomSink]


@hookimpl
def haive_streaming_exports() -> Mapping[str, str]:
    """The seed's names in ``haive.dataflow.streaming``."""
    return {
        "WebSocketManager": f"{_MODULE}.server:WebSocketManager",
        "MultiRoomWebSocket": f"{_MODULE}.server:MultiRoomWebSocket",
        "StreamingClient": f"{_MODULE}.client:StreamingClient",
        "ConnectionConfig": f"{_MODULE}.config:ConnectionConfig",
        "MessageHandler": f"{_MODULE}.handlers:MessageHandler",
    }
