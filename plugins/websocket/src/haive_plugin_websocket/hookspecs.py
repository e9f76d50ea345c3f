"""The hooks this plugin owns, added to haive-dataflow's plugin manager in ``haive_addhooks``.

* ``haive_register_transports``: the ``transport`` capability kind (network endpoints that
  serve clients; :class:`~haive_plugin_websocket.server.WebSocketManager` and subclasses).
* ``haive_websocket_authorize_room``: a decision other plugins take for the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from haive.dataflow.plugins.hookspecs import hookspec

if TYPE_CHECKING:
    from .server import WebSocketManager


@hookspec
def haive_register_transports() -> Iterable[type[WebSocketManager]]:
    """Return transport classes (network endpoints such as WebSocket servers).

    Called once when the registry is built; ``registry.get("transport", name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_websocket_authorize_room(client: Any, room: str, action: str) -> bool | None:
    """Decide whether a WebSocket client may ``action`` (``"join"`` or ``"publish"``) ``room``.

    Called by this plugin's server for every room join and publish a client requests, after
    token authentication. ``client`` is a ``ClientInfo`` (``client_id``, the ``identity``
    the server's ``authenticate`` callback returned, negotiated ``features``). Return
    ``False`` to deny, ``True`` to allow, ``None`` for no opinion: any ``False`` denies.
    Called synchronously on the event loop, so it must not block; do I/O-bound checks in the
    server's async ``authorize_room`` callback instead.
    """
    raise NotImplementedError


def room_verdicts(
    pluginmanager: pluggy.PluginManager, client: Any, room: str, action: str
) -> list[bool | None]:
    """Every plugin's answer to ``haive_websocket_authorize_room`` (a typed call of the hook).

    Example::

        >>> from haive.dataflow.plugins import build_plugin_manager
        >>> room_verdicts(build_plugin_manager(), client=None, room="lobby", action="join")
        []
    """
    try:
        hook = pluginmanager.hook.haive_websocket_authorize_room
    except AttributeError:  # the websocket plugin was disabled, so nobody added the spec
        return []
    verdicts: list[bool | None] = hook(client=client, room=room, action=action)
    return verdicts
