"""WebSocket connection and room figures, from the websocket plugin's server when it is used.

Read through the server object's public counters (``stats``) and ``rooms`` on every
collector sample, so this plugin does not import (or depend on) ``haive-plugin-websocket``:
any object with the same two attributes works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.units import Duration

from .metric_base import Metric
from .windows import CounterWindow, as_seconds


@attrs.frozen
class WebSocketSnapshot:
    """Connections, message rates and room sizes of one WebSocket server.

    Example::

        >>> WebSocketSnapshot(connections=3, rooms={"market": 2}).to_dict()["rooms"]
        {'market': 2}
    """

    connections: int = 0
    connections_opened: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    received_per_second: float = 0.0
    sent_per_second: float = 0.0
    dropped_outbound: int = 0
    slow_consumer_disconnects: int = 0
    rooms: Mapping[str, int] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["rooms"] = dict(self.rooms)
        return data


class WebSocketMetric(Metric):
    """Samples a :class:`haive_plugin_websocket.WebSocketManager` (connections, rooms, rates).

    Example (any object with ``stats`` and ``rooms`` will do)::

        >>> import types
        >>> server = types.SimpleNamespace(
        ...     stats=types.SimpleNamespace(connections_open=2, connections_opened=5,
        ...         messages_received=40, messages_sent=90, dropped_outbound=0,
        ...         slow_consumer_disconnects=0),
        ...     rooms={"market_analysis": {"a", "b"}, "news": {"a"}})
        >>> metric = WebSocketMetric(server)
        >>> metric.poll(0.0)
        >>> snap = metric.snapshot(0.0)
        >>> snap.connections, dict(snap.rooms)
        (2, {'market_analysis': 2, 'news': 1})
    """

    kind = "websocket"

    def __init__(self, server: Any, *, window: Duration = 10.0) -> None:
        if not hasattr(server, "stats") or not hasattr(server, "rooms"):
            raise ConfigError(
                f"WebSocketMetric expects a WebSocket server with .stats and .rooms "
                f"(haive_plugin_websocket.WebSocketManager), got {server!r}"
            )
        self.server = server
        self._window = CounterWindow(as_seconds(window, "WebSocketMetric window"), width=2)
        self._latest = WebSocketSnapshot()

    def poll(self, now: float) -> None:
        stats = self.server.stats
        received = int(getattr(stats, "messages_received", 0))
        sent = int(getattr(stats, "messages_sent", 0))
        self._window.update(now, (received, sent))
        self._latest = WebSocketSnapshot(
            connections=int(getattr(stats, "connections_open", 0)),
            connections_opened=int(getattr(stats, "connections_opened", 0)),
            messages_received=received,
            messages_sent=sent,
            dropped_outbound=int(getattr(stats, "dropped_outbound", 0)),
            slow_consumer_disconnects=int(getattr(stats, "slow_consumer_disconnects", 0)),
            rooms={name: len(members) for name, members in sorted(self.server.rooms.items())},
        )

    def snapshot(self, now: float) -> WebSocketSnapshot:
        received_rate, sent_rate = self._window.rate(now)
        return attrs.evolve(
            self._latest, received_per_second=received_rate, sent_per_second=sent_rate
        )

    @property
    def connections(self) -> int:
        self.poll(self.fresh_now())
        return self._latest.connections

    @property
    def rooms(self) -> Mapping[str, int]:
        self.poll(self.fresh_now())
        return self._latest.rooms
