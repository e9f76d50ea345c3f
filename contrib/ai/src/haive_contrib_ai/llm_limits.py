"""Rate limits per key for LLM calls: requests per minute and tokens per minute.

Token buckets on trio's clock (so ``MockClock`` drives them in tests). Each key (an API key,
a tenant, a user: whatever ``key`` picks from the event) has its own pair of buckets, full
at first. A request waits until its key has a request left and its token budget is not in
debt; once the generation is done its real token count (the usage the server reported) is
taken from the budget, which may go into debt, so the next request of that key waits until
the debt is refilled. That is how a provider's token limit behaves, without guessing the
size of an answer in advance.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.validation import POSITIVE_NUMBER, invalid

#: Keys kept at most; buckets that are full again (as good as new) are dropped beyond it.
MAX_KEYS = 10_000


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.updated = now

    def refill(self, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        return self.level

    def wait_for(self, needed: float) -> float:
        """Seconds until the level reaches ``needed`` (after a refill)."""
        return max(0.0, (needed - self.level) / self.rate)


@attrs.frozen
class RateLimit:
    """Requests and tokens per minute allowed for each key (``None``: no such limit).

    ``key`` picks the key from the event (default: one key for everything).

    Example::

        >>> RateLimit(requests_per_minute=60, tokens_per_minute=10_000).requests_per_minute
        60
        >>> RateLimit()
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: RateLimit(requests_per_minute=None): requests_per_minute must be a number > 0 when tokens_per_minute is None too, got None
    """

    requests_per_minute: float | None = attrs.field(
        default=None, validator=POSITIVE_NUMBER.optional()
    )
    tokens_per_minute: float | None = attrs.field(
        default=None, validator=POSITIVE_NUMBER.optional()
    )
    key: Callable[[Any], Hashable] | None = None

    def __attrs_post_init__(self) -> None:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ConfigError(
                invalid(
                    "RateLimit",
                    "requests_per_minute",
                    None,
                    "a number > 0 when tokens_per_minute is None too",
                )
            )


class KeyedRateLimiter:
    """Enforces a :class:`RateLimit` per key.

    Example (on a mock clock: the third request of a key waits for its bucket)::

        >>> import trio, trio.testing
        >>> async def main():
        ...     limiter = KeyedRateLimiter(RateLimit(requests_per_minute=2))
        ...     for _ in range(3):
        ...         await limiter.acquire("alice")
        ...     return trio.current_time(), limiter.waited
        >>> trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        (30.0, 1)
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._requests: dict[Hashable, _Bucket] = {}
        self._tokens: dict[Hashable, _Bucket] = {}
        #: Requests that had to wait, and seconds waited in all.
        self.waited = 0
        self.seconds_waited = 0.0

    def key_of(self, event: Any) -> Hashable:
        return self.limit.key(event) if self.limit.key is not None else None

    def _bucket(
        self, buckets: dict[Hashable, _Bucket], key: Hashable, per_minute: float
    ) -> _Bucket:
        bucket = buckets.get(key)
        now = trio.current_time()
        if bucket is None:
            if len(buckets) >= MAX_KEYS:
                for stale in [k for k, b in buckets.items() if b.refill(now) >= b.capacity]:
                    del buckets[stale]
            bucket = buckets[key] = _Bucket(per_minute, now)
        return bucket

    async def acquire(self, key: Hashable) -> None:
        """Wait until ``key`` may send a request, and take it."""
        limit = self.limit
        started = trio.current_time()
        while True:
            now = trio.current_time()
            pause = 0.0
            requests = None
            if limit.requests_per_minute is not None:
                requests = self._bucket(self._requests, key, limit.requests_per_minute)
                requests.refill(now)
                pause = requests.wait_for(1.0)
            if limit.tokens_per_minute is not None:
                tokens = self._bucket(self._tokens, key, limit.tokens_per_minute)
                tokens.refill(now)
                # Not in debt: a budget that covers at least one token.
                pause = max(pause, tokens.wait_for(1.0))
            if pause <= 0:
                if requests is not None:
                    requests.level -= 1.0
                break
            await trio.sleep(pause)
        waited = trio.current_time() - started
        if waited > 0:
            self.waited += 1
            self.seconds_waited += waited

    def spend_tokens(self, key: Hashable, tokens: int) -> None:
        """Take the tokens a finished generation used from ``key``'s budget."""
        if self.limit.tokens_per_minute is None or tokens <= 0:
            return
        bucket = self._bucket(self._tokens, key, self.limit.tokens_per_minute)
        bucket.refill(trio.current_time())
        bucket.level -= tokens
