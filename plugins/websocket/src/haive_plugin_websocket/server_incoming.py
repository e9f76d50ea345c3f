"""Incoming frames on the server: parse, rate-limit, route to handlers, reply.

A frame (one message, or a batch when the client negotiated ``batch``) is parsed, charged
to the client's token bucket, and each message goes to its control handler
(:mod:`.server_control`) or to the handler registered with
``@manager.on_message(type)``; what a handler returns is sent back to the client. A
synchronous handler takes a fast path without a coroutine per message. Bad input and
failing handlers become ``{"type": "error"}`` frames to the client, never a closed
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from haive.dataflow.errors import SerializationError

from .protocol import parse_frame

if TYPE_CHECKING:
    from .handlers import MessageHandler
    from .server import ServerStats
    from .server_limits import ConnectionLimits
    from .server_session import ClientSession

log = logging.getLogger("haive.websocket.server")


class _IncomingMixin:
    """Part of :class:`~haive_plugin_websocket.server.WebSocketManager`: incoming messages."""

    if TYPE_CHECKING:
        stats: ServerStats
        handlers: MessageHandler
        _limits: ConnectionLimits
        _control: dict[str, Callable[[ClientSession, dict[str, Any]], Awaitable[None]]]


    # -- incoming ------------------------------------------------------------------------
    async def _on_frame(self, session: ClientSession, raw: str | bytes) -> None:
        try:
            messages = parse_frame(raw, msgpack_frames=session.msgpack, batch=session.batch)
        except SerializationError as exc:
            session.error("malformed", str(exc))
            return
        count = len(messages)
        self.stats.messages_received += count
        if session.flood is not None:
            granted = self._limits.admit(session, count)
            if granted < count:
                messages = messages[:granted]
        # Fast path for the common case, a synchronous handler: no coroutine per message.
        control = self._control
        route_of = self.handlers.route
        for message in messages:
            if type(message) is dict:
                mtype = message.get("type")
                if type(mtype) is str and mtype not in control:
                    route = route_of(mtype)
                    if route is not None and not route[1]:
                        try:
                            result = route[0](session, message)
                        except Exception as exc:
                            self._handler_failed(session, mtype, exc, message)
                            continue
                        if result is not None:
                            self._reply(session, result, message)
                        continue
            await self._dispatch(session, message)

    async def _dispatch(self, session: ClientSession, message: Any) -> None:
        if type(message) is not dict:
            session.error(
                "invalid_message",
                f"expected an object with a 'type' string, got {type(message).__name__}",
            )
            return
        mtype = message.get("type")
        if type(mtype) is not str:
            session.error("invalid_message", "the message has no 'type' string", message)
            return
        control = self._control.get(mtype)
        if control is not None:
            await control(session, message)
            return
        route = self.handlers.route(mtype)
        if route is None:
            session.error("unknown_type", f"no handler for message type {mtype!r}", message)
            return
        fn, is_async = route
        try:
            result = fn(session, message)
            if is_async:
                result = await result
        except Exception as exc:
            self._handler_failed(session, mtype, exc, message)
            return
        if result is not None:
            self._reply(session, result, message)

    def _handler_failed(
        self, session: ClientSession, mtype: str, exc: Exception, message: dict[str, Any]
    ) -> None:
        log.error("handler for %r failed (client %s)", mtype, session.client_id, exc_info=exc)
        session.error("handler_error", f"{type(exc).__name__}: {exc}", message)

    def _reply(self, session: ClientSession, result: Any, message: dict[str, Any]) -> None:
        """Send what a handler returned (a dict or bytes) back to its client."""
        if type(result) is dict or isinstance(result, bytes):
            try:
                session.send(result)
            except (TypeError, ValueError) as exc:
                session.error("handler_error", f"handler returned an invalid reply: {exc}", message)
