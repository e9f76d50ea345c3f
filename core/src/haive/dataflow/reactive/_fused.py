"""Operator fusion: consecutive per-item operators run as one step, in one task.

``map``, ``filter``, ``scan``, ``take``... do not need a task or a channel: each is a
function from a batch to a batch. A :class:`Fused` observable keeps its source and the
list of such steps; when run, every batch the source emits goes through all the steps in
the same call (plain list operations, no checkpoint between them) and only the result is
emitted downstream. A step whose user function is async is awaited inline, still in the
same task. Each run builds fresh step state, so a cold observable can be run many times.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, NamedTuple

import attrs
import trio

from ..errors import HaiveError
from ._runtime import (
    NOTHING,
    Emit,
    Partial,
    Ready,
    RunState,
    close_pull,
    coroutine_error,
    is_async_callable,
)
from ._source import PullOptions, Source


class EmptyStreamError(HaiveError, LookupError):
    """``reduce`` without a seed over a stream that completed without any item.

    Example::

        >>> import trio
        >>> from haive.dataflow.reactive import Observable
        >>> async def main():
        ...     try:
        ...         await Observable.empty().reduce(lambda a, b: a + b).to_list()
        ...     except EmptyStreamError as exc:
        ...         return str(exc)
        >>> trio.run(main)
        'reduce() of an empty stream with no seed'
    """


class StepFns(NamedTuple):
    """One step's functions for one run. ``process`` maps a batch to a batch (async when the
    spec says so); ``flush`` runs at completion and returns what is left (e.g. a partial
    buffer); ``on_error`` runs when the run fails. Both may be sync or async."""

    process: Callable[[list[Any]], Any]
    flush: Callable[[], Any] | None = None
    on_error: Callable[[BaseException], Any] | None = None


@attrs.frozen
class StepSpec:
    """A fusable operator: ``make(state)`` builds its per-run functions."""

    name: str
    make: Callable[[RunState], StepFns]
    is_async: bool = False


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class FusedRun:
    """The steps of one run, applied to batches."""

    __slots__ = ("asyncs", "errors", "flushes", "procs", "state")

    def __init__(self, specs: tuple[StepSpec, ...], state: RunState) -> None:
        fns = [spec.make(state) for spec in specs]
        self.state = state
        self.procs = [f.process for f in fns]
        self.asyncs = [spec.is_async for spec in specs]
        self.flushes = [f.flush for f in fns]
        self.errors = [f.on_error for f in fns if f.on_error is not None]

    async def apply(
        self, batch: list[Any], start: int = 0, end: int | None = None
    ) -> tuple[list[Any], BaseException | None]:
        """Push ``batch`` through steps ``start:end``; a failing step's prefix goes on.

        When several steps fail on one batch the last one's error wins: it failed on an
        earlier item, and items travel one by one in the semantics we follow.
        """
        error: BaseException | None = None
        procs, asyncs = self.procs, self.asyncs
        for i in range(start, len(procs) if end is None else end):
            if not batch:
                break
            try:
                batch = await procs[i](batch) if asyncs[i] else procs[i](batch)
            except Partial as partial:
                batch, error = partial.out, partial.error
        return batch, error

    def pusher(self, emit: Emit) -> Emit:
        """The emit function handed to the source: steps, then ``emit`` downstream."""
        state, procs = self.state, self.procs
        if any(self.asyncs):

            async def push_mixed(batch: list[Any]) -> None:
                if state.done:
                    return
                out, error = await self.apply(batch)
                if out:
                    await emit(out)
                if error is not None:
                    state.fail(error)
                elif state.stopped:
                    state.scope.cancel()

            return push_mixed

        async def push(batch: list[Any]) -> None:
            if state.done:
                return
            proc = procs[0] if procs else None
            try:
                for proc in procs:
                    batch = proc(batch)
                    if not batch:
                        break
            except Partial as partial:
                out, error = await self.apply(partial.out, procs.index(proc) + 1)  # type: ignore[arg-type]
                if out:
                    await emit(out)
                state.fail(partial.error if error is None else error)
                return
            if batch:
                await emit(batch)
            if state.stopped:
                state.scope.cancel()

        return push

    async def flush(self) -> tuple[list[Any], BaseException | None]:
        """At completion: each step's leftovers go through the steps after it."""
        carry: list[Any] = []
        n = len(self.procs)
        for i in range(n):
            if carry:
                carry, error = await self.apply(carry, i, i + 1)
                if error is not None:
                    rest, later = await self.apply(carry, i + 1)
                    return rest, error if later is None else later
            flush = self.flushes[i]
            if flush is not None:
                try:
                    tail = await _maybe_await(flush())
                except Exception as exc:
                    rest, later = await self.apply(carry, i + 1)
                    return rest, exc if later is None else later
                if tail:
                    carry = carry + tail if carry else tail
        return carry, None

    async def failed(self, error: BaseException) -> None:
        for on_error in self.errors:
            await _maybe_await(on_error(error))


class Fused(Source[Any]):
    """A source followed by fused steps (see the module docstring)."""

    __slots__ = ("_source", "_specs")

    def __init__(self, source: Source[Any], specs: tuple[StepSpec, ...]) -> None:
        label = f"{source._label} → {specs[-1].name}" if specs else source._label
        super().__init__(label=label, roots=source._roots)
        self._source = source
        self._specs = specs

    async def _run(self, emit: Emit, ready: Ready) -> None:
        state = RunState()
        run = FusedRun(self._specs, state)
        try:
            if not state.stopped:
                with state.scope:
                    await self._source._run(run.pusher(emit), ready)
        except Exception as exc:
            await run.failed(exc)
            raise
        ready.started()
        if state.error is not None:
            await run.failed(state.error)
            raise state.error
        out, error = await run.flush()
        if out:
            await emit(out)
        if error is not None:
            await run.failed(error)
            raise error

    def _pullable(self) -> bool:
        return self._source._pullable()

    def _open_pull(self, options: PullOptions) -> AsyncIterator[list[Any]] | None:
        inner = self._source._open_pull(options)
        if inner is None:
            return None
        return self._pull(inner)

    async def _pull(self, inner: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
        state = RunState()
        run = FusedRun(self._specs, state)
        try:
            if not state.stopped:
                try:
                    async for batch in inner:
                        out, error = await run.apply(batch)
                        if out:
                            yield out
                        if error is not None:
                            raise error
                        if state.stopped:
                            break
                except Exception as exc:
                    await run.failed(exc)
                    raise
            out, error = await run.flush()
            if out:
                yield out
            if error is not None:
                await run.failed(error)
                raise error
        finally:
            await close_pull(inner)


def fuse(source: Source[Any], spec: StepSpec) -> Fused:
    """``source`` followed by ``spec``: one more step of the same run if ``source`` is
    already fused."""
    if isinstance(source, Fused):
        return Fused(source._source, (*source._specs, spec))
    return Fused(source, (spec,))


# -- the steps -----------------------------------------------------------------------------
def _probe(what: str, fn: object, value: object) -> None:
    if inspect.isawaitable(value):
        raise coroutine_error(what, fn, value)


def map_step(fn: Callable[[Any], Any]) -> StepSpec:
    if is_async_callable(fn):

        def make_async(state: RunState) -> StepFns:
            async def process(batch: list[Any]) -> list[Any]:
                out: list[Any] = []
                append = out.append
                try:
                    for item in batch:
                        append(await fn(item))
                except Exception as exc:
                    raise Partial(out, exc) from None
                return out

            return StepFns(process)

        return StepSpec("map", make_async, True)

    def make(state: RunState) -> StepFns:
        probed = False

        def process(batch: list[Any]) -> list[Any]:
            nonlocal probed
            out: list[Any] = []
            try:
                out.extend(map(fn, batch))
            except Exception as exc:
                raise Partial(out, exc) from None
            if not probed:
                probed = True
                if inspect.isawaitable(out[0]):
                    for value in out[1:]:
                        getattr(value, "close", lambda: None)()
                    raise Partial([], coroutine_error("map", fn, out[0]))
            return out

        return StepFns(process)

    return StepSpec("map", make)


def filter_step(predicate: Callable[[Any], Any]) -> StepSpec:
    if is_async_callable(predicate):

        def make_async(state: RunState) -> StepFns:
            async def process(batch: list[Any]) -> list[Any]:
                out: list[Any] = []
                append = out.append
                try:
                    for item in batch:
                        if await predicate(item):
                            append(item)
                except Exception as exc:
                    raise Partial(out, exc) from None
                return out

            return StepFns(process)

        return StepSpec("filter", make_async, True)

    def make(state: RunState) -> StepFns:
        probed = False

        def process(batch: list[Any]) -> list[Any]:
            nonlocal probed
            out: list[Any] = []
            try:
                if probed:
                    out.extend(filter(predicate, batch))
                else:
                    probed = True
                    first = predicate(batch[0])
                    _probe("filter", predicate, first)
                    if first:
                        out.append(batch[0])
                    out.extend(filter(predicate, batch[1:]))
            except Exception as exc:
                raise Partial(out, exc) from None
            return out

        return StepFns(process)

    return StepSpec("filter", make)


def scan_step(fn: Callable[[Any, Any], Any], seed: Any, *, emit_each: bool = True) -> StepSpec:
    """``scan`` (every accumulated value) or, with ``emit_each=False``, ``reduce``."""
    name = "scan" if emit_each else "reduce"
    is_async = is_async_callable(fn)

    def make(state: RunState) -> StepFns:
        acc = seed
        probed = is_async

        def flush() -> list[Any]:
            if emit_each:
                return []
            if acc is NOTHING:
                raise EmptyStreamError("reduce() of an empty stream with no seed")
            return [acc]

        if is_async:

            async def process_async(batch: list[Any]) -> list[Any]:
                nonlocal acc
                out: list[Any] = []
                try:
                    for item in batch:
                        acc = item if acc is NOTHING else await fn(acc, item)
                        if emit_each:
                            out.append(acc)
                except Exception as exc:
                    raise Partial(out, exc) from None
                return out

            return StepFns(process_async, flush)

        def process(batch: list[Any]) -> list[Any]:
            nonlocal acc, probed
            out: list[Any] = []
            append = out.append
            a = acc
            try:
                for item in batch:
                    if a is NOTHING:
                        a = item
                    else:
                        a = fn(a, item)
                        if not probed:
                            probed = True
                            _probe(name, fn, a)
                    if emit_each:
                        append(a)
            except Exception as exc:
                raise Partial(out, exc) from None
            finally:
                acc = a
            return out

        return StepFns(process, flush)

    return StepSpec(name, make, is_async)


def take_step(count: int) -> StepSpec:
    def make(state: RunState) -> StepFns:
        remaining = count
        if remaining == 0:
            state.stop()

        def process(batch: list[Any]) -> list[Any]:
            nonlocal remaining
            if remaining <= 0:
                return []
            if len(batch) < remaining:
                remaining -= len(batch)
                return batch
            out = batch if len(batch) == remaining else batch[:remaining]
            remaining = 0
            state.stop()
            return out

        return StepFns(process)

    return StepSpec(f"take({count})", make)


def skip_step(count: int) -> StepSpec:
    def make(state: RunState) -> StepFns:
        remaining = count

        def process(batch: list[Any]) -> list[Any]:
            nonlocal remaining
            if remaining <= 0:
                return batch
            if len(batch) <= remaining:
                remaining -= len(batch)
                return []
            out = batch[remaining:]
            remaining = 0
            return out

        return StepFns(process)

    return StepSpec(f"skip({count})", make)


def distinct_step(key: Callable[[Any], Hashable] | None) -> StepSpec:
    is_async = key is not None and is_async_callable(key)

    def make(state: RunState) -> StepFns:
        seen: set[Any] = set()
        probed = key is None or is_async

        async def process_async(batch: list[Any]) -> list[Any]:
            assert key is not None
            out: list[Any] = []
            try:
                for item in batch:
                    k = await key(item)  # type: ignore[misc]
                    if k not in seen:
                        seen.add(k)
                        out.append(item)
            except Exception as exc:
                raise Partial(out, exc) from None
            return out

        def process(batch: list[Any]) -> list[Any]:
            nonlocal probed
            out: list[Any] = []
            append, add = out.append, seen.add
            try:
                for item in batch:
                    k = item if key is None else key(item)
                    if not probed:
                        probed = True
                        _probe("distinct", key, k)
                    if k not in seen:
                        add(k)
                        append(item)
            except Exception as exc:
                raise Partial(out, exc) from None
            return out

        return StepFns(process_async if is_async else process)

    return StepSpec("distinct", make, is_async)


def distinct_until_changed_step(key: Callable[[Any], Any] | None) -> StepSpec:
    is_async = key is not None and is_async_callable(key)

    def make(state: RunState) -> StepFns:
        last: Any = NOTHING
        probed = key is None or is_async

        async def process_async(batch: list[Any]) -> list[Any]:
            nonlocal last
            assert key is not None
            out: list[Any] = []
            try:
                for item in batch:
                    k = await key(item)
                    if last is NOTHING or k != last:
                        out.append(item)
                    last = k
            except Exception as exc:
                raise Partial(out, exc) from None
            return out

        def process(batch: list[Any]) -> list[Any]:
            nonlocal last, probed
            out: list[Any] = []
            append = out.append
            try:
                for item in batch:
                    k = item if key is None else key(item)
                    if not probed:
                        probed = True
                        _probe("distinct_until_changed", key, k)
                    if last is NOTHING or k != last:
                        append(item)
                    last = k
            except Exception as exc:
                raise Partial(out, exc) from None
            return out

        return StepFns(process_async if is_async else process)

    return StepSpec("distinct_until_changed", make, is_async)


def tap_step(
    on_next: Callable[[Any], Any] | None,
    on_error: Callable[[BaseException], Any] | None,
    on_completed: Callable[[], Any] | None,
) -> StepSpec:
    is_async = on_next is not None and is_async_callable(on_next)

    def make(state: RunState) -> StepFns:
        probed = is_async

        async def process_async(batch: list[Any]) -> list[Any]:
            assert on_next is not None
            out: list[Any] = []
            try:
                for item in batch:
                    await on_next(item)
                    out.append(item)
            except Exception as exc:
                raise Partial(out, exc) from None
            return out

        def process(batch: list[Any]) -> list[Any]:
            nonlocal probed
            if on_next is None:
                return batch
            done = 0
            try:
                for item in batch:
                    result = on_next(item)
                    if not probed:
                        probed = True
                        _probe("tap", on_next, result)
                    done += 1
            except Exception as exc:
                raise Partial(batch[:done], exc) from None
            return batch

        def flush() -> Awaitable[Any] | list[Any]:
            if on_completed is None:
                return []
            return _then_empty(on_completed())

        return StepFns(process_async if is_async else process, flush, on_error)

    return StepSpec("tap", make, is_async)


async def _then_empty(value: Any) -> list[Any]:
    await _maybe_await(value)
    return []


def buffer_step(count: int) -> StepSpec:
    def make(state: RunState) -> StepFns:
        pending: list[Any] = []

        def process(batch: list[Any]) -> list[Any]:
            nonlocal pending
            if len(pending) + len(batch) < count:
                pending.extend(batch)
                return []
            pending.extend(batch)
            full = len(pending) - len(pending) % count
            out = [pending[i : i + count] for i in range(0, full, count)]
            pending = pending[full:]
            return out

        def flush() -> list[Any]:
            return [pending] if pending else []

        return StepFns(process, flush)

    return StepSpec(f"buffer({count})", make)


def throttle_step(period: float) -> StepSpec:
    def make(state: RunState) -> StepFns:
        next_allowed = -math.inf

        def process(batch: list[Any]) -> list[Any]:
            nonlocal next_allowed
            now = trio.current_time()
            if now < next_allowed:
                return []
            next_allowed = now + period
            return [batch[0]]

        return StepFns(process)

    return StepSpec(f"throttle({period:g}s)", make)
