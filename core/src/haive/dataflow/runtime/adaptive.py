"""Adaptive concurrency: a node's items in flight follow the backlog on its input.

The product description's "adaptive processing" (raise parallelism when the input buffer
fills, lower it when idle) as a setting of :class:`~haive.dataflow.runtime.nodes.TransformNode`::

    TransformNode(name="enrich", transform_fn=enrich, concurrency=AdaptiveConcurrency(1, 16))

A :class:`ConcurrencyController` runs beside the node's workers for the whole run. Every
``interval`` seconds (trio time) it compares the backlog (items in the input buffer plus
those taken from it and not yet started) with the buffer's ``buffer_size``: at ``high`` or above it
doubles the limit (up to ``max``); at ``low`` or below, when fewer items wait than the limit
lets run (idle included), it halves it (down to ``min``). The limit is a :class:`trio.CapacityLimiter` every worker holds while it takes and
processes one item, so a lower limit takes effect as running items finish, never by
cancelling work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ..errors import ConfigError

#: Limit changes a controller remembers (oldest forgotten first).
CHANGES_KEPT = 1000


def _positive_int(
    instance: AdaptiveConcurrency, attribute: attrs.Attribute[int], value: int
) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"AdaptiveConcurrency.{attribute.name} must be an int >= 1, got {value!r}"
        )


def _fraction(
    instance: AdaptiveConcurrency, attribute: attrs.Attribute[float], value: float
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(
            f"AdaptiveConcurrency.{attribute.name} must be a fraction of the input buffer "
            f"between 0 and 1, got {value!r}"
        )


def _interval(
    instance: AdaptiveConcurrency, attribute: attrs.Attribute[float], value: float
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"AdaptiveConcurrency.interval must be seconds > 0, got {value!r}")


@attrs.frozen
class AdaptiveConcurrency:
    """Items in flight between ``min`` and ``max``, following the node's input backlog.

    ``high`` and ``low`` are fractions of the input buffer's ``buffer_size``; ``interval`` is in
    seconds. Only async transform functions run concurrently, so only they accept it.

    Example::

        >>> AdaptiveConcurrency(min=1, max=16)
        AdaptiveConcurrency(min=1, max=16, high=0.8, low=0.2, interval=0.1)
        >>> AdaptiveConcurrency(min=8, max=4)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: AdaptiveConcurrency: min (8) must not exceed max (4)
    """

    min: int = attrs.field(default=1, validator=_positive_int)
    max: int = attrs.field(default=16, validator=_positive_int)
    high: float = attrs.field(default=0.8, validator=_fraction, kw_only=True)
    low: float = attrs.field(default=0.2, validator=_fraction, kw_only=True)
    interval: float = attrs.field(default=0.1, validator=_interval, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.min > self.max:
            raise ConfigError(
                f"AdaptiveConcurrency: min ({self.min}) must not exceed max ({self.max})"
            )
        if self.low >= self.high:
            raise ConfigError(
                f"AdaptiveConcurrency: low ({self.low}) must be below high ({self.high})"
            )

    def next_limit(self, limit: int, backlog: int, buffer_size: int) -> int:
        """The limit after one check that saw ``backlog`` items waiting in a buffer of
        ``buffer_size``: doubled at ``high`` or above; halved at ``low`` or below when fewer
        items wait than the limit lets run (some workers would idle).

        Example::

            >>> policy = AdaptiveConcurrency(min=1, max=16)
            >>> policy.next_limit(4, 90, 100), policy.next_limit(4, 50, 100)
            (8, 4)
            >>> policy.next_limit(16, 18, 100), policy.next_limit(16, 3, 100)
            (16, 8)
        """
        if backlog >= self.high * buffer_size:
            return min(self.max, limit * 2)
        if backlog <= self.low * buffer_size and backlog < limit:
            return max(self.min, limit // 2)
        return limit


class ConcurrencyController:
    """The live limit of one node run under an :class:`AdaptiveConcurrency` policy.

    ``backlog()`` counts the items waiting for the node and ``buffer_size`` is its input
    buffer's size. :meth:`run` adjusts :attr:`limiter` until cancelled; ``changes`` keeps
    ``(trio time, new limit)`` for each adjustment.

    Example::

        >>> waiting = [900]
        >>> controller = ConcurrencyController(AdaptiveConcurrency(1, 4), lambda: waiting[0], 1000)
        >>> async def main():
        ...     with trio.move_on_after(0.35):
        ...         await controller.run()
        ...     return controller.limit
        >>> trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        4
    """

    def __init__(
        self, policy: AdaptiveConcurrency, backlog: Callable[[], int], buffer_size: int
    ) -> None:
        self.policy = policy
        self.backlog = backlog
        self.buffer_size = buffer_size
        self.limiter = trio.CapacityLimiter(policy.min)
        self.changes: deque[tuple[float, int]] = deque(maxlen=CHANGES_KEPT)

    @property
    def limit(self) -> int:
        """Items the node may have in flight now."""
        return int(self.limiter.total_tokens)

    async def run(self) -> None:
        policy = self.policy
        while True:
            await trio.sleep(policy.interval)
            limit = policy.next_limit(self.limit, self.backlog(), self.buffer_size)
            if limit != self.limit:
                self.limiter.total_tokens = limit
                self.changes.append((trio.current_time(), limit))


def concurrency_bound(concurrency: int | AdaptiveConcurrency | Any) -> int:
    """The most items a node with this ``concurrency`` setting can have in flight.

    Example::

        >>> concurrency_bound(4), concurrency_bound(AdaptiveConcurrency(2, 32))
        (4, 32)
    """
    if isinstance(concurrency, AdaptiveConcurrency):
        return concurrency.max
    return int(concurrency)
