"""Error operators: ``retry`` (subscribe again) and ``catch_error`` (switch to a fallback).

They catch only errors raised by their upstream: a failing function downstream of them
stops its own run through its cancel scope and never travels up through these.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from ..errors import ConfigError
from ..runtime.retry import RetryPolicy
from ..runtime.units import Duration
from ._create import from_
from ._runtime import Emit, Ready, call, close_pull, open_pull_or_raise, positive_int
from ._source import FunctionSource, PullOptions, Source


def retry(
    source: Source[Any],
    retries: int | RetryPolicy | None,
    backoff: Duration,
    multiplier: float,
    reset_on_success: bool,
) -> Source[Any]:
    if isinstance(retries, RetryPolicy):
        policy = retries
        limit: float = retries.attempts - 1
    else:
        limit = (
            math.inf if retries is None else positive_int(retries, "retry", "retries", minimum=0)
        )
        try:
            policy = RetryPolicy(attempts=1, backoff=backoff, multiplier=multiplier, jitter=0.0)
        except ConfigError as exc:
            raise ConfigError(f"retry: {exc}") from None

    async def run(emit: Emit, ready: Ready) -> None:
        failures = 0
        seen = False

        async def counting(batch: list[Any]) -> None:
            nonlocal seen
            seen = True
            await emit(batch)

        target = counting if reset_on_success else emit
        while True:
            seen = False
            try:
                await source._run(target, ready)
                return
            except Exception:
                failures = 1 if (reset_on_success and seen) else failures + 1
                if failures > limit:
                    raise
            pause = policy.delay(failures)
            if pause:
                await trio.sleep(pause)

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        failures = 0
        while True:
            inner = open_pull_or_raise(source, options)
            seen = False
            try:
                async for batch in inner:
                    seen = True
                    yield batch
                return
            except Exception:
                failures = 1 if (reset_on_success and seen) else failures + 1
                if failures > limit:
                    raise
            finally:
                await close_pull(inner)
            pause = policy.delay(failures)
            if pause:
                await trio.sleep(pause)

    return FunctionSource(
        run,
        pull,
        label=f"{source._label} → retry",
        roots=source._roots,
        pullable=source._pullable(),
    )


def catch_error(
    source: Source[Any],
    handler: Callable[[BaseException], Any],
    exceptions: type[BaseException] | tuple[type[BaseException], ...],
) -> Source[Any]:
    kinds = exceptions if isinstance(exceptions, tuple) else (exceptions,)
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            raise ConfigError(
                f"catch_error: exceptions must be Exception subclasses (never cancellation), got {kind!r}"
            )

    async def run(emit: Emit, ready: Ready) -> None:
        try:
            await source._run(emit, ready)
            return
        except kinds as exc:
            result = await call(handler, exc)
        ready.started()
        if result is not None:
            await from_(result)._run(emit, ready)

    async def pull(options: PullOptions) -> AsyncIterator[list[Any]]:
        inner = open_pull_or_raise(source, options)
        try:
            async for batch in inner:
                yield batch
            return
        except kinds as exc:
            result = await call(handler, exc)
        finally:
            await close_pull(inner)
        if result is None:
            return
        fallback = from_(result)._open_pull(options)
        if fallback is None:
            raise TypeError(f"catch_error: the fallback {result!r} cannot be read without tasks")
        try:
            async for batch in fallback:
                yield batch
        finally:
            await close_pull(fallback)

    return FunctionSource(
        run,
        pull,
        label=f"{source._label} → catch_error",
        roots=source._roots,
        pullable=source._pullable(),
    )
