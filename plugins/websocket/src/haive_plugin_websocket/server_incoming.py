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


ControlHandler = Callable[["ClientSession", dict[str, Any]], Awaitable[None]]


class IncomingRouter:
    """Routes what a client sends: each message to its control handler or registered handler.

    Given the server's stats, its handlers (:class:`~haive_plugin_websocket.handlers.MessageHandler`,
    filled by ``@manager.on_message``), the control handlers
    (:attr:`~haive_plugin_websocket.server_control.ControlMessages.handlers`) and the
    :class:`~haive_plugin_websocket.server_limits.ConnectionLimits` that charge each
    message to its client's rate limit. :meth:`on_frame` takes one frame of a session.

    Example (a message routed to its handler, the reply queued for the client)::

        >>> import trio
        >>> from haive_plugin_websocket import StreamingClient, ConnectionConfig, WebSocketManager
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     manager.on_message("hello")(lambda client, message: {"type": "hi"})
        ...     async with manager.serving():
        ...         async with StreamingClient(ConnectionConfig(url=manager.url, client_id="ada")).connect() as client:
        ...             replied = trio.Event()
        ...             client.on_message("hi")(lambda message: replied.set())
        ...             await client.send_message({"type": "hello"})
        ...             await replied.wait()
        ...     return manager.stats.messages_received
        >>> trio.run(main)
        1
    """

    def __init__(
        self,
        stats: ServerStats,
        handlers: MessageHandler,
        control: dict[str, ControlHandler],
        limits: ConnectionLimits,
    ) -> None:
        self.stats = stats
        self.handlers = handlers
        self.control = control
        self.limits = limits

    # -- incoming ------------------------------------------------------------------------
    async def on_frame(self, session: ClientSession, raw: str | bytes) -> None:
        """Parse one frame from ``session`` and handle the messages its rate limit admits."""
        try:
            messages = parse_frame(raw, msgpack_frames=session.msgpack, batch=session.batch)
        except SerializationError as exc:
            session.error("malformed", str(exc))
            return
        count = len(messages)
        self.stats.messages_received += count
        if session.flood is not None:
            granted = self.limits.admit(session, count)
            if granted < count:
                messages = messages[:granted]
        # Fast path for the common case, a synchronous handler: no coroutine per message.
        control = self.control
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
        control = self.control.get(mtype)
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


__all__ = ["IncomingRouter"]
