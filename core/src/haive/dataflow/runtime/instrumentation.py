"""The seam a tracing plugin instruments a pipeline run through; the core traces nothing.

A :class:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline` asks the installed
instrumentation factories once per run for a :class:`RunInstrumentation`
(:func:`run_instrumentation`). A plugin declares its factory in its metadata, in the entry-point
group :data:`ENTRY_POINT_GROUP`::

    [project.entry-points."haive.dataflow.instrumentation"]
    profiling = "acme_profiler.hooks:instrument_run"

The first run of a process imports those modules and nothing else (not the other plugins,
not the plugin registry), so a process with no such plugin, or with tracing off, pays one
metadata lookup. When no instrumentation is returned (none installed, or it is off) the run
calls nothing more of this module and does no per-batch or per-item work for it. When one
is returned the run:

1. hands it the :class:`~haive.dataflow.runtime.graph.GraphRun` before starting it
   (:meth:`RunInstrumentation.instrument`), so it can install a
   :class:`~haive.dataflow.runtime.graph.BatchTap` per node in ``graph.taps`` (one span per
   node per batch; taps keep chained nodes in one task, a wrapped ``graph.runner`` does not);
2. tells it about every non-empty batch read from the source, with the items' incoming trace
   headers when the source keeps them (:meth:`RunInstrumentation.source_batch`);
3. wraps each sink write in :meth:`RunInstrumentation.sink_batch`, whose value (one header
   mapping or ``None`` per item) the sink reads through
   :func:`haive.dataflow.io.trace_headers.outgoing_trace_headers`.

Example: an instrumentation that counts what it sees::

    >>> import contextlib, trio
    >>> from haive.dataflow import StreamingPipeline
    >>> from haive.dataflow.builtins.sources import IterableSource
    >>> from haive.dataflow.builtins.sinks import MemorySink
    >>> class Counting(RunInstrumentation):
    ...     def __init__(self):
    ...         self.read = self.written = 0
    ...     def source_batch(self, batch, headers):
    ...         self.read += len(batch)
    ...     @contextlib.contextmanager
    ...     def sink_batch(self, sink_name, batch):
    ...         self.written += len(batch)
    ...         yield None
    >>> counting = Counting()
    >>> pipeline = StreamingPipeline("counted")
    >>> pipeline.set_source(IterableSource(range(5)))
    >>> pipeline.set_sink(MemorySink())
    >>> pipeline.instrument(counting)
    >>> _ = trio.run(pipeline.execute)
    >>> counting.read, counting.written
    (5, 5)
"""

from __future__ import annotations

import abc
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..errors import PluginError
from ..plugins.catalogue import disabled_plugins

if TYPE_CHECKING:
    from .graph import GraphRun

#: What a sink sends with each item of a batch: its trace headers, or ``None``.
OutgoingHeaders = Sequence[Mapping[str, str] | None] | None


class RunInstrumentation(abc.ABC):
    """One pipeline run's instrumentation, made by a plugin for that run (see module doc).

    Its methods are called from the run's tasks (trio), synchronously, a few times per
    batch and never per item by the core; what an implementation does per item is its own
    cost, paid only while it is on.
    """

    def instrument(self, graph: GraphRun) -> None:
        """Called once before the run starts; may install taps in ``graph.taps`` (or replace
        ``graph.runner`` with a wrapper, which gives every node a task of its own)."""

    @abc.abstractmethod
    def source_batch(
        self, batch: list[Any], headers: Sequence[Mapping[str, str] | None] | None
    ) -> None:
        """A non-empty batch read from the source, before it enters the graph; ``headers``
        has one entry per item (its trace headers or ``None``), or is ``None``."""

    @abc.abstractmethod
    def sink_batch(
        self, sink_name: str, batch: list[Any]
    ) -> AbstractContextManager[OutgoingHeaders]:
        """Wraps one ``write_batch`` of the sink (named ``sink_name``) with ``batch``; yields
        the headers to send with each item (or ``None``)."""

    def close(self) -> None:
        """The run ended (normally, by an error or cancelled)."""


#: The entry-point group instrumentation factories are declared in: ``name = "module:function"``,
#: the function taking a pipeline and returning a :class:`RunInstrumentation` or ``None``.
#: ``HAIVE_DISABLE_PLUGINS`` blocks one by its entry-point name.
ENTRY_POINT_GROUP = "haive.dataflow.instrumentation"

InstrumentationFactory = Callable[[Any], "RunInstrumentation | None"]

_factories: list[InstrumentationFactory] | None = None


def instrumentation_factories() -> list[InstrumentationFactory]:
    """The installed instrumentation factories, in entry-point name order (loaded once)."""
    global _factories
    if _factories is None:
        blocked = set(disabled_plugins())
        found = sorted(
            (ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
             if ep.name not in blocked),
            key=lambda ep: ep.name,
        )
        loaded: list[InstrumentationFactory] = []
        for entry_point in found:
            try:
                loaded.append(entry_point.load())
            except Exception as exc:  # a broken plugin must say which one it is
                raise PluginError(
                    f"loading the instrumentation {entry_point.name!r} "
                    f"({entry_point.value}) failed: {exc!r}"
                ) from exc
        _factories = loaded
    return _factories


def forget_instrumentation_factories() -> None:
    """Load the factories again on the next run (after installing or disabling a plugin)."""
    global _factories
    _factories = None


def run_instrumentation(pipeline: Any) -> RunInstrumentation | None:
    """The first instrumentation an installed factory returns for one run of ``pipeline``."""
    for factory in instrumentation_factories():
        instrumentation = factory(pipeline)
        if instrumentation is not None:
            return instrumentation
    return None
