"""The server's limits on what one client may cost: outbound queue overflow and flood control.

* A client that does not read fills its outbound queue; the ``slow_consumer`` policy
  decides: ``disconnect`` (:meth:`ConnectionLimits.slow_consumer`, close 4008 and let the
  client resume with recovery), ``drop_oldest`` or ``drop_newest`` (the session drops and
  counts).
* A client that sends faster than ``rate_limit`` (token bucket, ``rate_burst``; on by
  default: 100 messages/s, bursts of 200) has the excess dropped with a throttled
  ``rate_limited`` error; after ``flood_close_after`` dropped messages it is disconnected
  (1008).

:class:`ConnectionLimits` applies both for a server; each connection carries its own
:class:`FloodControl`. Message size (``max_message_size``, 1 MiB by default, after
decompression) is enforced by websockets itself; room count per client by the ``join``
control message (:mod:`.server_control`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from .protocol import CLOSE_POLICY_VIOLATION, CLOSE_SLOW_CONSUMER, TokenBucket

if TYPE_CHECKING:
    from .config import ServerConfig
    from .server import ServerStats
    from .server_session import ClientSession

#: At most one ``rate_limited`` error frame per connection this often (seconds).
_WARN_EVERY = 1.0


class FloodControl:
    """One connection's rate limit: its token bucket and the messages it had dropped.

    :meth:`admit` grants what the bucket holds and counts the rest as :attr:`dropped`;
    :meth:`warn_due` says when the client may be told again (once a second);
    :attr:`flooding` once ``close_after`` messages were dropped.

    Example::

        >>> flood = FloodControl(rate=10, burst=5, close_after=4, now=0.0)
        >>> flood.admit(8, now=0.0), flood.dropped, flood.flooding
        (5, 3, False)
        >>> flood.warn_due(now=0.0), flood.warn_due(now=0.5), flood.warn_due(now=1.0)
        (True, False, True)
        >>> flood.admit(1, now=0.0), flood.flooding
        (0, True)
    """

    __slots__ = ("_bucket", "_last_warning", "close_after", "dropped", "rate")

    def __init__(self, rate: float, burst: float, close_after: int, now: float) -> None:
        self.rate = rate
        self.close_after = close_after
        self.dropped = 0
        self._bucket = TokenBucket(rate, burst, now)
        self._last_warning = -math.inf

    def admit(self, count: int, now: float) -> int:
        """How many of ``count`` messages arriving at ``now`` pass; the rest are dropped."""
        granted = self._bucket.take(count, now)
        self.dropped += count - granted
        return granted

    def warn_due(self, now: float) -> bool:
        """True (and remembered) if the client was last told more than a second ago."""
        if now - self._last_warning < _WARN_EVERY:
            return False
        self._last_warning = now
        return True

    @property
    def flooding(self) -> bool:
        """The connection dropped ``close_after`` messages: it is to be closed."""
        return self.dropped >= self.close_after


class ConnectionLimits:
    """A server's limits per connection: its slow-consumer disconnect and its rate limit.

    Given the server's :class:`~haive_plugin_websocket.config.ServerConfig` and its
    :class:`~haive_plugin_websocket.server.ServerStats` (where drops and disconnects are
    counted). :meth:`flood_control` makes a new connection's :class:`FloodControl`,
    :meth:`slow_consumer` closes one whose outbound queue overflowed under ``disconnect``
    (the session applies the other policies itself), :meth:`admit` charges what it sends.

    Example::

        >>> from haive_plugin_websocket import ServerConfig, ServerStats
        >>> limits = ConnectionLimits(ServerConfig(rate_limit=50, rate_burst=10), ServerStats())
        >>> flood = limits.flood_control(now=0.0)
        >>> flood.rate, flood.admit(12, now=0.0)
        (50, 10)
        >>> ConnectionLimits(ServerConfig(rate_limit=None), ServerStats()).flood_control(now=0.0) is None
        True
    """

    def __init__(self, config: ServerConfig, stats: ServerStats) -> None:
        self.config = config
        self.stats = stats

    def flood_control(self, now: float) -> FloodControl | None:
        """A new connection's rate limit at ``now`` (None when ``rate_limit`` is off)."""
        rate, burst = self.config.rate_limit, self.config.effective_rate_burst
        if rate is None or burst is None:
            return None
        return FloodControl(rate, burst, self.config.flood_close_after, now)

    def slow_consumer(self, session: ClientSession) -> None:
        """``session``'s outbound queue is full under ``disconnect``: count and close it."""
        if not session.closing:
            self.stats.slow_consumer_disconnects += 1
            self.stats.errors["slow_consumer"] += 1
            session.kick(CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full")

    def admit(self, session: ClientSession, count: int) -> int:
        """How many of the ``count`` messages ``session`` just sent pass the rate limit;
        the excess is counted, the client told (once a second), and a flooding client
        disconnected (1008)."""
        flood = session.flood
        if flood is None:
            return count
        now = trio.current_time()
        granted = flood.admit(count, now)
        if granted == count:
            return count
        self.stats.errors["rate_limited"] += count - granted
        if flood.warn_due(now):
            session.error(
                "rate_limited",
                f"more than {flood.rate:g} messages/s: {flood.dropped} dropped so far",
                count=False,
            )
        if flood.flooding and not session.closing:
            self.stats.flood_disconnects += 1
            session.kick(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
        return granted


__all__ = ["ConnectionLimits", "FloodControl"]
