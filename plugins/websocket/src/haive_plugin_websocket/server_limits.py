"""The server's limits on what one client may cost: outbound queue overflow and flood control.

* A client that does not read fills its outbound queue; the ``slow_consumer`` strategy
  decides: ``disconnect`` (:class:`_DisconnectOnOverflow`, close 4008 and let the client
  resume with recovery) or a registered backpressure strategy that drops messages.
* A client that sends faster than ``rate_limit`` (token bucket, ``rate_burst``; on by
  default: 100 messages/s, bursts of 200) has the excess dropped with a throttled
  ``rate_limited`` error; after ``flood_close_after`` dropped messages it is disconnected
  (1008).

Message size (``max_message_size``, 1 MiB by default, after decompression) is enforced by
websockets itself; room count per
client by the ``join`` control message (:mod:`.server_control`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from haive.dataflow.runtime.backpressure import BackpressureStrategy, BoundedBuffer

from .protocol import CLOSE_POLICY_VIOLATION

if TYPE_CHECKING:
    from .config import ServerConfig
    from .server import ServerStats
    from .server_session import ClientSession


class _DisconnectOnOverflow(BackpressureStrategy):
    """Outbound strategy ``disconnect``: a full queue drops the connection, not messages."""

    PLUGIN_NAME = "disconnect"

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        self._on_overflow = on_overflow

    def overflow(self, buffer: BoundedBuffer[Any], items: Sequence[Any]) -> Sequence[Any]:
        self._on_overflow()
        return []


class _LimitsMixin:
    """Part of :class:`~haive_plugin_websocket.server.WebSocketManager`: its limits."""

    if TYPE_CHECKING:
        config: ServerConfig
        stats: ServerStats
        _strategy_cls: type[BackpressureStrategy]

    def _outbound_strategy(self, session: ClientSession) -> BackpressureStrategy:
        if self.config.slow_consumer == "disconnect":
            return _DisconnectOnOverflow(session._on_overflow)
        return self._strategy_cls()

    def _rate_limited(self, session: ClientSession, dropped: int) -> None:
        session.rate_dropped += dropped
        self.stats.errors["rate_limited"] += dropped
        now = trio.current_time()
        if now - session._last_rate_error >= 1.0:
            session._last_rate_error = now
            session.error(
                "rate_limited",
                f"more than {self.config.rate_limit:g} messages/s: {session.rate_dropped} dropped so far",
                count=False,
            )
        if session.rate_dropped >= self.config.flood_close_after and session._kick is None:
            self.stats.flood_disconnects += 1
            session.kick(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
