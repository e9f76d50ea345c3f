"""Retry policies for per-item processing."""

from __future__ import annotations

import random

import attrs

from .errors import ConfigError
from .units import Duration, parse_duration


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"RetryPolicy.{attribute.name} must be an int >= 1, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"RetryPolicy.{attribute.name} must be a number >= 0, got {value!r}")


def _backoff(value: Duration) -> float:
    return parse_duration(value, what="RetryPolicy.backoff")


def _max_backoff(value: Duration) -> float:
    return parse_duration(value, what="RetryPolicy.max_backoff")


@attrs.frozen
class RetryPolicy:
    """How often, and with what pause, a failing item is tried again before it is an error.

    ``attempts`` counts every try, the first included. The pause before retry ``n`` (1-based)
    is ``backoff * multiplier ** (n - 1)``, capped at ``max_backoff``, times a random factor
    in ``[1 - jitter, 1]`` so that many failing items do not retry in lockstep.
    ``backoff`` and ``max_backoff`` are in seconds, as in trio, not milliseconds; a
    :class:`~datetime.timedelta` or ``"250ms"`` works too.

    Example::

        >>> policy = RetryPolicy(attempts=3, backoff=0.1, jitter=0.0)
        >>> [policy.delay(n) for n in (1, 2)]
        [0.1, 0.2]
    """

    attempts: int = attrs.field(default=3, validator=_positive_int)
    backoff: float = attrs.field(default=0.0, converter=_backoff, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_non_negative)
    max_backoff: float = attrs.field(default=30.0, converter=_max_backoff, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        base = min(self.backoff * self.multiplier ** (retry_number - 1), self.max_backoff)
        if self.jitter:
            base *= 1.0 - random.random() * min(self.jitter, 1.0)
        return base


NO_RETRY = RetryPolicy(attempts=1)
