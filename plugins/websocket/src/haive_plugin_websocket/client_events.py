"""What happens to a client's connection: :class:`ConnectionEvent` and its observers.

``@client.on_event(kind)`` registers a synchronous observer for one of
:data:`EVENT_KINDS` (or ``"*"``); the client keeps the recent events in
``client.events``. An observer that fails is logged and never breaks the connection.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio

log = logging.getLogger("haive.websocket.client")

F = TypeVar("F", bound=Callable[..., Any])

EVENT_KINDS = (
    "connected",
    "reconnected",
    "disconnected",
    "reconnecting",
    "heartbeat_timeout",
    "gap",
    "replaced",
    "gave_up",
)


@attrs.frozen
class ConnectionEvent:
    """Something that happened to the connection; see :data:`EVENT_KINDS`.

    Example::

        >>> ConnectionEvent("reconnecting", attempt=2, delay=1.5).kind
        'reconnecting'
    """

    kind: str
    attempt: int = 0
    delay: float | None = None
    error: str | None = None
    at: float = 0.0
    detail: dict[str, Any] | None = None


class ConnectionEvents:
    """A client's connection events: the recent ones (:attr:`history`) and their observers.

    Example::

        >>> import trio
        >>> events = ConnectionEvents()
        >>> @events.on_event("reconnecting")
        ... def show(event):
        ...     print(event.kind, event.attempt)
        >>> async def main():
        ...     events.emit("reconnecting", attempt=2, delay=1.5)
        >>> trio.run(main)
        reconnecting 2
        >>> [event.kind for event in events.history]
        ['reconnecting']
    """

    def __init__(self, history: int = 256) -> None:
        self.history: deque[ConnectionEvent] = deque(maxlen=history)
        self._observers: list[tuple[str, Callable[[ConnectionEvent], Any]]] = []

    def on_event(self, kind: str = "*") -> Callable[[F], F]:
        """Decorator: ``fn(event)`` for connection events of ``kind`` (``"*"``: all)."""
        if kind != "*" and kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; kinds are {EVENT_KINDS}")

        def register(fn: F) -> F:
            self._observers.append((kind, fn))
            return fn

        return register

    def emit(self, kind: str, **fields: Any) -> None:
        """Record an event of ``kind`` now and tell its observers (a failing one is logged)."""
        event = ConnectionEvent(kind, at=trio.current_time(), **fields)
        self.history.append(event)
        for wanted, fn in self._observers:
            if wanted in ("*", kind):
                try:
                    result = fn(event)
                    if inspect.isawaitable(result):
                        log.error(
                            "event handlers must be synchronous; %r returned an awaitable", fn
                        )
                        result.close()  # type: ignore[attr-defined]
                except Exception:
                    log.exception("connection event handler %r failed", fn)


__all__ = ["EVENT_KINDS", "ConnectionEvent", "ConnectionEvents"]
