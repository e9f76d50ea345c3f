"""Requests a client sends and the replies it waits for, matched by ``"id"``.

:meth:`PendingRequests.request` gives each control request (``members``, ``rooms``, ...)
a fresh ``id`` and waits until the incoming part hands over the reply carrying the same
``id``. If the client gives up first, the waiters are woken and raise its failure.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .client_outbound import OutboundQueue
    from .client_state import ConnectionState


class _Pending:
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: dict[str, Any] | None = None


class PendingRequests:
    """A client's requests waiting for their replies.

    Given the client's :class:`~haive_plugin_websocket.client_state.ConnectionState`
    (a client that gave up refuses new requests) and its
    :class:`~haive_plugin_websocket.client_outbound.OutboundQueue` (requests queue in
    order with everything else, and wait there while disconnected).

    Example (the reply is handed over as the incoming part would)::

        >>> import trio
        >>> from haive_plugin_websocket import ClientStats, ConnectionConfig
        >>> from haive_plugin_websocket.client_outbound import OutboundQueue
        >>> from haive_plugin_websocket.client_state import ConnectionState
        >>> from haive_plugin_websocket.protocol import JSON
        >>> config = ConnectionConfig(url="ws://h/")
        >>> state = ConnectionState(client_id=None, max_batch_bytes=config.max_batch_bytes)
        >>> requests = PendingRequests(state, OutboundQueue(config, ClientStats(), JSON))
        >>> async def main():
        ...     async with trio.open_nursery() as nursery:
        ...         nursery.start_soon(reply_later)
        ...         print(await requests.request({"type": "rooms"}))
        >>> async def reply_later():
        ...     await trio.sleep(0)
        ...     requests.complete({"type": "rooms", "id": 1, "rooms": ["news"]})
        >>> trio.run(main)
        {'type': 'rooms', 'id': 1, 'rooms': ['news']}
    """

    def __init__(self, state: ConnectionState, outbound: OutboundQueue) -> None:
        self._state = state
        self._outbound = outbound
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a control request and wait for the server's reply (matched by ``"id"``)."""
        self._state.check()
        request_id = next(self._ids)
        # Checked before it is registered: a message that cannot be sent leaves no waiter.
        out = self._outbound.prepare({**message, "id": request_id})
        pending = self._pending[request_id] = _Pending()
        await self._outbound.put(out)
        await pending.done.wait()
        if pending.value is None:
            assert self._state.failed is not None
            raise self._state.failed
        return pending.value

    def complete(self, message: dict[str, Any]) -> None:
        """If ``message`` replies to a pending request (same ``"id"``), hand it over."""
        request_id = message.get("id")
        if type(request_id) is int:
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                pending.value = message
                pending.done.set()

    def wake_waiters(self) -> None:
        """Wake every :meth:`request` waiting (the client gave up: they raise its failure)."""
        for pending in self._pending.values():
            pending.done.set()


__all__ = ["PendingRequests"]
