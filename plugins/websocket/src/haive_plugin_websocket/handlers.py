"""Typed message routing: ``{"type": "x", ...}`` goes to the function registered for ``x``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from haive.dataflow.runtime.nodes import is_async_callable

F = TypeVar("F", bound=Callable[..., Any])

_NOT_HANDLED = object()


class MessageHandler:
    """Routes typed messages to handler functions (sync or ``async def``) by their ``type``.

    The client and the server each own one; ``@client.on_message("x")`` and
    ``@manager.on_message("x")`` register into it. A handler receives the message last,
    after whatever context its owner passes (the server passes the client session).
    ``"*"`` registers a fallback for types without a handler of their own.

    Example::

        >>> import trio
        >>> router = MessageHandler()
        >>> @router.on("greet")
        ... async def greet(message):
        ...     return f"hello {message['name']}"
        >>> trio.run(router.dispatch, {"type": "greet", "name": "ada"})
        (True, 'hello ada')
        >>> trio.run(router.dispatch, {"type": "other"})
        (False, None)
    """

    def __init__(self) -> None:
        self._routes: dict[str, tuple[Callable[..., Any], bool]] = {}

    def on(self, message_type: str) -> Callable[[F], F]:
        """Decorator registering a handler for ``message_type`` (``"*"``: any other type)."""

        def register(fn: F) -> F:
            self.add(message_type, fn)
            return fn

        return register

    def add(self, message_type: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` for ``message_type``; registering a type twice is an error."""
        if not isinstance(message_type, str) or not message_type:
            raise ValueError(f"message type must be a non-empty string, got {message_type!r}")
        if not callable(fn):
            raise TypeError(f"handler for {message_type!r} must be callable, got {fn!r}")
        if message_type in self._routes:
            existing = self._routes[message_type][0]
            raise ValueError(
                f"message type {message_type!r} already has a handler "
                f"({getattr(existing, '__qualname__', existing)!r}); remove it first"
            )
        self._routes[message_type] = (fn, is_async_callable(fn))

    def remove(self, message_type: str) -> None:
        """Forget the handler of ``message_type`` (KeyError if there is none)."""
        del self._routes[message_type]

    def route(self, message_type: str) -> tuple[Callable[..., Any], bool] | None:
        """(handler, is_async) for ``message_type``, the fallback, or None."""
        route = self._routes.get(message_type)
        if route is None:
            route = self._routes.get("*")
        return route

    def types(self) -> list[str]:
        """The message types with a handler, sorted."""
        return sorted(self._routes)

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._routes

    async def dispatch(self, message: dict[str, Any], *context: Any) -> tuple[bool, Any]:
        """Call the handler of ``message["type"]`` with ``(*context, message)``.

        Returns ``(handled, result)``; ``handled`` is False when no handler (and no
        fallback) matches. Exceptions of the handler propagate.
        """
        route = self.route(message.get("type", ""))
        if route is None:
            return False, None
        fn, is_async = route
        result = fn(*context, message)
        if is_async:
            result = await result
        return True, result
