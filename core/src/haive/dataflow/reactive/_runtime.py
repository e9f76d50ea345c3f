"""Internals shared by every reactive operator: the run protocol and its helpers.

An observable is *run* by awaiting ``observable._run(emit, ready)``:

* ``emit(batch)`` is awaited with each non-empty list of items, in order. It is the
  downstream's entry point; awaiting it is what applies backpressure. Batches are never
  mutated after being handed on.
* ``ready.started()`` is called once the run is subscribed upstream (a hot stream attached),
  before the first emit; ``nursery.start`` waits for it so no hot item is missed.
* ``_run`` returns when the stream completes and raises when it fails.

A downstream callback never raises a user error into its upstream: it records the error in
its :class:`RunState` and cancels the scope that encloses the upstream, so ``retry`` and
``catch_error`` only ever see errors that really come from upstream.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeAlias

import trio

from ..errors import ConfigError
from ..runtime.nodes import is_async_callable as is_async_callable  # one definition, shared
from ..runtime.units import Duration
from ..runtime.validation import duration, integer

Emit: TypeAlias = Callable[[list[Any]], Awaitable[None]]


class _Nothing:
    """Marker for "no value yet" (``None`` is a valid item)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()


class Ready:
    """Idempotent "subscribed upstream" signal, wrapping a trio ``TaskStatus`` if any."""

    __slots__ = ("_status", "called")

    def __init__(self, status: trio.TaskStatus[None] | None = None) -> None:
        self._status = status
        self.called = False

    def started(self) -> None:
        if not self.called:
            self.called = True
            if self._status is not None:
                self._status.started()


class RunState:
    """How one run of an operator ends early: stopped (``take``) or failed (a user error).

    The owner runs its upstream inside :attr:`scope`; callbacks call :meth:`fail` or set
    :attr:`stopped` and the owner cancels the scope once the last batch went downstream.
    """

    __slots__ = ("error", "scope", "stopped")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = False
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.stopped or self.error is not None

    def stop(self) -> None:
        """Ask to complete; the owner cancels :attr:`scope` after emitting the last batch."""
        self.stopped = True

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.scope.cancel()


class Partial(Exception):
    """Raised by a fused step whose function failed mid-batch: ``out`` holds the outputs of
    the items before the failing one (they are still delivered), ``error`` the failure."""

    __slots__ = ("error", "out")

    def __init__(self, out: list[Any], error: BaseException) -> None:
        self.out = out
        self.error = error


class SerialEmit:
    """Serializes emissions of several tasks into one downstream, in FIFO order.

    Downstream operators may keep state across batches (``scan``), so two tasks must never
    interleave inside one ``emit``. Uncontended, it costs no extra checkpoint.
    """

    __slots__ = ("_emit", "_lock")

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._lock = trio.StrictFIFOLock()

    async def __call__(self, batch: list[Any]) -> None:
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._emit(batch)
        finally:
            lock.release()

    async def acquire(self) -> None:
        await self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside a nursery's exception group, else the group itself."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    return group


class _CollapsingGroups:
    """``with collapsing_groups:`` re-raises an exception group that holds one real error
    (see :func:`collapse`) as that error; other exceptions pass unchanged. For nurseries
    entered and left by hand (``manager.__aexit__``) and wrapped around ``async with``."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, BaseExceptionGroup):
            error = collapse(exc)
            if error is not exc:
                raise error from None


collapsing_groups = _CollapsingGroups()


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that re-raises a single child error as itself, not as a group.

    ``catch_error`` and ``retry`` match on exception types, so operators that run tasks
    must not hide their upstream's error inside an ``ExceptionGroup``.
    """
    with collapsing_groups:
        async with trio.open_nursery() as nursery:
            yield nursery


async def start_run(
    source: Any, emit: Emit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``source`` as a task started with ``nursery.start`` (returns once subscribed)."""
    ready = Ready(task_status)
    await source._run(emit, ready)
    ready.started()


def open_pull_or_raise(source: Any, options: Any) -> AsyncIterator[list[Any]]:
    """``source._open_pull(options)``, for readers that cannot start tasks of their own:
    a source that needs them is a ``TypeError``."""
    inner: AsyncIterator[list[Any]] | None = source._open_pull(options)
    if inner is None:
        raise TypeError(f"{source!r} cannot be read without tasks of its own")
    return inner


async def close_pull(inner: AsyncIterator[Any]) -> None:
    """Close a pulled batch iterator (its ``aclose``, if it has one), shielded from
    cancellation so a cancelled reader still detaches from its source."""
    closer = getattr(inner, "aclose", None)
    if closer is not None:
        with trio.CancelScope(shield=True):
            await closer()


def seconds(value: Duration, operator: str, parameter: str) -> float:
    """Seconds from a number, a ``timedelta`` or a duration string ("250ms"); must be > 0."""
    return duration(operator, parameter, value)


def positive_int(value: object, operator: str, parameter: str, *, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``, else ConfigError naming the operator."""
    integer(minimum).check(operator, parameter, value)
    assert isinstance(value, int)
    return value


def check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise ConfigError(f"{what} expects a function, got {type(fn).__name__} {fn!r}")


def coroutine_error(what: str, fn: object, value: object) -> TypeError:
    """The error for a plain function (often a lambda) that returned a coroutine."""
    close = getattr(value, "close", None)
    if close is not None:
        close()  # do not leave a "never awaited" warning behind
    name = getattr(fn, "__qualname__", repr(fn))
    return TypeError(
        f"{what}({name}) returned an awaitable, but {name} is not an async function: pass the "
        f"async function itself (e.g. {what}(enrich) rather than {what}(lambda x: enrich(x))) "
        f"or use flat_map, which awaits what its function returns"
    )


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async function and return its (awaited) result."""
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    return value
