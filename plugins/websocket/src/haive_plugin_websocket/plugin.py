"""Hook implementations: how haive-dataflow discovers this plugin (entry point ``websocket``).

What it provides is also declared, for tools that do not import it, in ``pyproject.toml``
(``haive.dataflow.provides``, ``.kinds`` and ``.exports`` entry points).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from haive.dataflow import hookimpl

from . import hookspecs

if TYPE_CHECKING:
    from haive.dataflow.io.sinks import StreamSink
    from haive.dataflow.io.sources import DataSource
    from haive.dataflow.plugins import CapabilityKind

    from .server import WebSocketManager


@hookimpl
def haive_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """The ``transport`` kind's hook and the room authorization hook."""
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def haive_register_capability_kinds() -> Iterable[CapabilityKind[Any]]:
    from haive.dataflow.plugins import CapabilityKind

    from .server import WebSocketManager

    return [CapabilityKind("transport", WebSocketManager, hookspecs.haive_register_transports)]


@hookimpl
def haive_register_transports() -> Iterable[type[WebSocketManager]]:
    """The server, as transport ``websocket``."""
    from .server import WebSocketManager

    return [WebSocketManager]


@hookimpl
def haive_register_sources() -> Iterable[type[DataSource]]:
    """Client messages into a pipeline, as source ``websocket``."""
    from .pipeline import WebSocketSource

    return [WebSocketSource]


@hookimpl
def haive_register_sinks() -> Iterable[type[StreamSink]]:
    """Pipeline output broadcast to a room, as sink ``websocket_room``."""
    from .pipeline import WebSocketRoomSink

    return [WebSocketRoomSink]
