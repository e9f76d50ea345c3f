"""Retry policies for per-item processing."""

from __future__ import annotations

import random

import attrs

from .units import Duration
from .validation import FRACTION, NON_NEGATIVE_NUMBER, POSITIVE_INT, duration


def _backoff(value: Duration) -> float:
    return duration("RetryPolicy", "backoff", value, positive=False)


def _max_backoff(value: Duration) -> float:
    return duration("RetryPolicy", "max_backoff", value, positive=False)


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

    attempts: int = attrs.field(default=3, validator=POSITIVE_INT)
    backoff: float = attrs.field(default=0.0, converter=_backoff)
    multiplier: float = attrs.field(default=2.0, validator=NON_NEGATIVE_NUMBER)
    max_backoff: float = attrs.field(default=30.0, converter=_max_backoff)
    #: Fraction of each pause that is randomised away: 0 (none) to 1 (anywhere in [0, pause]).
    jitter: float = attrs.field(default=0.1, validator=FRACTION)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        base = min(self.backoff * self.multiplier ** (retry_number - 1), self.max_backoff)
        if self.jitter:
            base *= 1.0 - random.random() * self.jitter
        return base


NO_RETRY = RetryPolicy(attempts=1)
