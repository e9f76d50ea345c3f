"""The run protocol as a type: :class:`Source`, what every operator works on and makes.

A source is something that can be *run* (``await source._run(emit, ready)``, see
:mod:`._runtime`) and perhaps read without tasks (``source._open_pull(options)``). The
operator modules (``_create``, ``_combine``, ``_fused``, ``_timed``, ``_recover``), the hot
sources (``_hot``) and the consumers (``subscription``) take sources and make sources; none
of them needs the fluent API. :class:`~haive.dataflow.reactive.Observable` is a ``Source``
with that API on top, and ``observable.py`` is the one module that wraps what the operators
make into observables. So the modules of ``reactive/`` import one way: ``_runtime`` <-
``_source`` <- operators, ``_hot``, ``subscription`` <- ``observable`` <- ``subject``,
``operators``, ``bridges``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ..errors import ConfigError
from ..runtime.backpressure import strategy_spec
from ..runtime.defaults import DEFAULT_BUFFER_SIZE
from ..runtime.validation import POSITIVE_INT
from ._runtime import Emit, Ready

if TYPE_CHECKING:
    from .subject import ReactiveStream

T = TypeVar("T")


@attrs.define(eq=False)
class PullOptions:
    """How hot streams buffer for one pulling consumer; ``readers`` collects the hot
    readers opened for it (so the consumer can stop them and report their counters).

    Example::

        >>> PullOptions(buffer_size=10, backpressure="drop_newest").readers
        []
    """

    buffer_size: int = attrs.field(default=DEFAULT_BUFFER_SIZE, validator=POSITIVE_INT)
    backpressure: object = "block"
    readers: list[Any] = attrs.field(factory=list)
    #: What errors name (the operation given these options: ``subscribe``, ``iterate``...).
    config_owner: str = attrs.field(default="PullOptions", kw_only=True)

    def __attrs_post_init__(self) -> None:
        # A strategy name is resolved once, here, not in every buffer made from the options.
        self.backpressure = strategy_spec(
            self.backpressure, owner=self.config_owner, parameter="backpressure"
        )


class Source(Generic[T]):
    """Something that can be run: a stream of items, described (see the module docstring).

    ``label`` names it in messages; ``roots`` are the hot streams it is built on (a
    subscription made without a nursery starts when they are opened).
    """

    __slots__ = ("_label", "_roots")

    def __init__(self, *, label: str, roots: tuple[ReactiveStream[Any], ...] = ()) -> None:
        self._label = label
        self._roots = roots

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label}>"

    async def _run(self, emit: Emit, ready: Ready) -> None:
        raise NotImplementedError

    def _pullable(self) -> bool:
        """Whether :meth:`_open_pull` works: no task of its own is needed to read this."""
        return False

    def _open_pull(self, options: PullOptions) -> AsyncIterator[list[T]] | None:
        """Batches read in the consumer's own task, or ``None`` if this needs tasks."""
        return None


class FunctionSource(Source[T]):
    """A source defined by a run function (and optionally a pull function)."""

    __slots__ = ("_can_pull", "_puller", "_runner")

    def __init__(
        self,
        runner: Callable[[Emit, Ready], Awaitable[None]],
        puller: Callable[[PullOptions], AsyncIterator[list[Any]] | None] | None = None,
        *,
        label: str,
        roots: tuple[ReactiveStream[Any], ...] = (),
        pullable: bool | None = None,
    ) -> None:
        super().__init__(label=label, roots=roots)
        self._runner = runner
        self._puller = puller
        self._can_pull = puller is not None if pullable is None else pullable

    def _pullable(self) -> bool:
        return self._can_pull

    async def _run(self, emit: Emit, ready: Ready) -> None:
        await self._runner(emit, ready)

    def _open_pull(self, options: PullOptions) -> AsyncIterator[list[T]] | None:
        return None if self._puller is None else self._puller(options)


def merge_roots(*sources: Source[Any]) -> tuple[ReactiveStream[Any], ...]:
    roots: dict[int, ReactiveStream[Any]] = {}
    for source in sources:
        for root in source._roots:
            roots.setdefault(id(root), root)
    return tuple(roots.values())


def as_source(value: object, what: str) -> Source[Any]:
    """``value`` if it is an observable (operators take only those), else ConfigError."""
    if isinstance(value, Source):
        return value
    raise ConfigError(f"{what} expects Observables, got {type(value).__name__} {value!r}")


# -- what flat_map / catch_error / from_ accept ------------------------------------------
SINGLE, ITERABLE, ASYNC_ITERABLE, AWAITABLE, OBSERVABLE = range(5)


def classify(value: object) -> int:
    """How a function result is flattened: one of the constants above."""
    if isinstance(value, Source):
        return OBSERVABLE
    if hasattr(value, "__aiter__"):
        return ASYNC_ITERABLE
    if inspect.isawaitable(value):
        return AWAITABLE
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        return SINGLE
    return ITERABLE
