"""Who may join and publish to which room.

A join or a publish is allowed only if every ``haive_websocket_authorize_room`` plugin
hook and the manager's ``authorize_room(info, room, action)`` callback (sync or async)
agree: any ``False`` (a falsy value from the callback), or a check that fails, denies.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import trio

from .server_session import ClientInfo

log = logging.getLogger("haive.websocket.server")

AuthorizeFn = Callable[[ClientInfo, str, str], Any]


class RoomAuthorization:
    """Decides whether a client may ``join`` or ``publish`` to a room.

    Asks the installed plugins' ``haive_websocket_authorize_room`` hooks, then
    :attr:`authorize_room` (the manager's callback, sync or async; None allows).

    Example::

        >>> import trio
        >>> def members_only(info, room, action):
        ...     return room != "staff" or info.identity == "ada"
        >>> rooms = RoomAuthorization(members_only)
        >>> trio.run(rooms.allowed, ClientInfo("c1", identity="bob"), "staff", "join")
        False
        >>> trio.run(rooms.allowed, ClientInfo("c2", identity="ada"), "staff", "join")
        True
    """

    def __init__(self, authorize_room: AuthorizeFn | None = None) -> None:
        self.authorize_room = authorize_room

    async def allowed(self, info: ClientInfo, room: str, action: str) -> bool:
        """True if the client ``info`` may do ``action`` (``join``, ``publish``) in ``room``."""
        from haive.dataflow.plugins import get_registry

        from .hookspecs import room_verdicts

        try:
            verdicts = room_verdicts(
                get_registry().plugin_manager, client=info, room=room, action=action
            )
        except Exception:
            log.exception("haive_websocket_authorize_room failed; denying %s on %r", action, room)
            return False
        if any(v is False for v in verdicts):
            return False
        if self.authorize_room is not None:
            try:
                verdict = self.authorize_room(info, room, action)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception:
                log.exception("authorize_room failed; denying %s on %r", action, room)
                return False
            if not verdict:
                return False
        await trio.lowlevel.checkpoint_if_cancelled()
        return True


__all__ = ["AuthorizeFn", "RoomAuthorization"]
