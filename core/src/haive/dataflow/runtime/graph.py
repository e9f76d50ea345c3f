"""A validated graph of nodes and the machinery that runs it on trio.

:class:`Graph` checks names and wiring at build time; :class:`GraphRun` turns it into one task
per node (consecutive synchronous nodes share one: :meth:`GraphRun.chains`), one
:class:`~haive.dataflow.runtime.backpressure.BoundedBuffer` per node input (fan-in shares it)
and an output buffer. Pipelines own a ``GraphRun`` inside their nursery.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import attrs
import trio

from ..errors import GraphError, NodeError
from .backpressure import BoundedBuffer, BufferProducer, BufferStats, strategy_spec
from .config import StreamConfig
from .defaults import (
    DEFAULT_BACKPRESSURE,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ERROR_BUFFER_SIZE,
)
from .nodes import ERROR_POLICIES, Emit, Node, NodeContext, NodeStats
from .results import Result
from .retry import NO_RETRY, RetryPolicy
from .validation import POSITIVE_INT, instance_of, one_of

INPUT = "input"
OUTPUT = "output"
RESERVED = frozenset({INPUT, OUTPUT})


class Graph:
    """Nodes wired by name between the reserved ends ``"input"`` and ``"output"``.

    Example::

        >>> from haive.dataflow.runtime.nodes import TransformNode
        >>> g = Graph()
        >>> g.add(TransformNode(name="inc", transform_fn=lambda x: x + 1))
        >>> g.connect("input", "inc"); g.connect("inc", "output")
        >>> g.validate()
        ['inc']
    """

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, node: Node) -> None:
        name = getattr(node, "name", None)
        if not isinstance(node, Node):
            raise GraphError(
                f"add_node expects a Node (FilterNode, TransformNode, ...), got {node!r}"
            )
        if not isinstance(name, str) or not name:
            raise GraphError(f"node {node!r} has no name")
        if name in RESERVED:
            raise GraphError(f"node name {name!r} is reserved for the pipeline's ends")
        if name in self.nodes:
            raise GraphError(f"duplicate node name {name!r}: node names must be unique")
        self.nodes[name] = node

    def connect(self, source: str, target: str) -> None:
        for end in (source, target):
            if end not in self.nodes and end not in RESERVED:
                known = ", ".join(sorted(self.nodes)) or "(no nodes yet)"
                raise GraphError(f"connect: unknown node {end!r}; nodes are: {known}")
        if source == OUTPUT:
            raise GraphError("connect: 'output' is the end of the pipeline, it has no successors")
        if target == INPUT:
            raise GraphError("connect: 'input' is the start of the pipeline, it has no inputs")
        if source == target:
            raise GraphError(f"connect: {source!r} -> {target!r} is a cycle")
        if (source, target) in self.edges:
            raise GraphError(f"connect: {source!r} -> {target!r} is connected twice")
        self.edges.append((source, target))

    def successors(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]

    def predecessors(self, name: str) -> list[str]:
        return [a for a, b in self.edges if b == name]

    def validate(self) -> list[str]:
        """Check the wiring; return node names in topological order, or raise GraphError."""
        if not self.successors(INPUT):
            raise GraphError("nothing is connected to 'input'")
        if not self.predecessors(OUTPUT):
            raise GraphError("nothing is connected to 'output'")
        order = self._topological_order()
        reachable = self._reach(INPUT, self.successors)
        producing = self._reach(OUTPUT, self.predecessors)
        for name in self.nodes:
            if name not in reachable:
                raise GraphError(f"node {name!r} is dangling: it is not reachable from 'input'")
            if name not in producing:
                raise GraphError(f"node {name!r} is dangling: its outputs never reach 'output'")
        for name, node in self.nodes.items():
            # Nodes that send to chosen successors (routing.RouterNode) check their wiring.
            check = getattr(node, "check_successors", None)
            if check is not None:
                check(self.successors(name))
            # Nodes that tell their inputs apart (state.JoinNode) check which they have.
            check = getattr(node, "check_predecessors", None)
            if check is not None:
                check(self.predecessors(name))
        return order

    def _reach(self, start: str, step: Callable[[str], list[str]]) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in step(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def _topological_order(self) -> list[str]:
        indegree = {name: 0 for name in self.nodes}
        for a, b in self.edges:
            if b in indegree and a != INPUT:
                indegree[b] += 1
        ready = [name for name, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for nxt in self.successors(name):
                if nxt in indegree:
                    indegree[nxt] -= 1
                    if indegree[nxt] == 0:
                        ready.append(nxt)
        if len(order) != len(self.nodes):
            cyclic = sorted(name for name, d in indegree.items() if d > 0)
            raise GraphError(f"the graph has a cycle through: {', '.join(cyclic)}")
        return order


@attrs.define(eq=False, kw_only=True)
class RunSettings:
    """The settings one run sizes its buffers and nodes with, checked when created.

    Both pipeline kinds derive theirs from a :class:`~haive.dataflow.runtime.config.StreamConfig`
    (:meth:`from_config`; ``EventPipeline(buffer_size=, chunk_size=)`` sets the same two
    fields directly) and make every buffer of the run through it, so one name runs from the
    public API to the buffer: ``buffer_size`` items per buffer, taken at most ``chunk_size``
    at a time, and ``error_buffer_size`` failed results waiting to be handled. Defaults are
    those of :mod:`haive.dataflow.runtime.defaults`. ``config_owner`` is the name errors give (the
    pipeline class that was given the values); a backpressure name is resolved through the
    plugin registry here, not when the first buffer is made.

    Example::

        >>> settings = RunSettings.from_config(StreamConfig(buffer_size=64, chunk_size=8))
        >>> buffer = settings.buffer("parse.in")
        >>> buffer.buffer_size, buffer.chunk_size
        (64, 8)
        >>> RunSettings(chunk_size=0, config_owner="EventPipeline")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: EventPipeline(chunk_size=0): chunk_size must be an integer >= 1, got 0
    """

    buffer_size: int = attrs.field(default=DEFAULT_BUFFER_SIZE, validator=POSITIVE_INT)
    chunk_size: int = attrs.field(default=DEFAULT_CHUNK_SIZE, validator=POSITIVE_INT)
    error_buffer_size: int = attrs.field(default=DEFAULT_ERROR_BUFFER_SIZE, validator=POSITIVE_INT)
    backpressure: object = DEFAULT_BACKPRESSURE
    error_policy: str = attrs.field(
        default="raise", alias="on_error", validator=one_of(*ERROR_POLICIES)
    )
    retry: RetryPolicy = attrs.field(
        default=NO_RETRY, validator=instance_of(RetryPolicy, "a RetryPolicy")
    )
    config_owner: str = "RunSettings"

    def __attrs_post_init__(self) -> None:
        self.backpressure = strategy_spec(
            self.backpressure, owner=self.config_owner, parameter="backpressure"
        )

    @classmethod
    def from_config(
        cls,
        config: StreamConfig,
        *,
        backpressure: object = DEFAULT_BACKPRESSURE,
        on_error: str = "raise",
        retry: RetryPolicy = NO_RETRY,
        config_owner: str = "RunSettings",
    ) -> RunSettings:
        """The settings of a run under ``config``, with the pipeline's own error handling."""
        return cls(
            buffer_size=config.buffer_size,
            chunk_size=config.chunk_size,
            error_buffer_size=config.error_buffer_size,
            backpressure=backpressure,
            on_error=on_error,
            retry=retry,
            config_owner=config_owner,
        )

    def buffer(self, name: str, strategy: object = None) -> BoundedBuffer[Any]:
        """A buffer of this run: ``buffer_size`` items, taken ``chunk_size`` at a time, under
        the run's backpressure strategy unless ``strategy`` is given."""
        return BoundedBuffer(
            self.buffer_size,
            self.backpressure if strategy is None else strategy,
            chunk_size=self.chunk_size,
            name=name,
        )

    def error_buffer(self, name: str, *, drained: bool) -> BoundedBuffer[Result]:
        """The buffer failed results wait in: ``error_buffer_size`` of them.

        ``drained=True`` (a StreamingPipeline, whose error task writes them to the dead-letter
        sink) blocks the failing node when full, so no failure is lost; ``drained=False`` (an
        EventPipeline, whose caller polls ``failures()``) keeps the latest instead of stalling
        the pipeline on a caller who never asks.
        """
        return BoundedBuffer(
            self.error_buffer_size,
            "block" if drained else "drop_oldest",
            chunk_size=self.chunk_size,
            name=name,
        )


#: How a run does a node's work: ``runner(node)(ctx, inbox, emit)``. The default is the
#: node's own ``run``; pipelines pass :func:`haive.dataflow.parallel.executor_runner`.
NodeRunner = Callable[[Node], Callable[[NodeContext, BoundedBuffer[Any], Emit], Awaitable[None]]]


def inline_runner(node: Node) -> Callable[[NodeContext, BoundedBuffer[Any], Emit], Awaitable[None]]:
    """Run every node with its own ``run``, in the run's nursery."""
    return node.run


class BatchTap:
    """What an instrumentation sees of one node's batches (see :attr:`GraphRun.taps`).

    :meth:`taken` is called with every batch the node receives (taken from its input, or
    handed to it inside a chain, see :meth:`GraphRun.chains`), :meth:`emitting` with every
    batch it emits, before it goes on, and :meth:`close` once the node is done. They run
    in the node's task, synchronously: the node waits for them, so they must be quick.
    Installing taps instead of wrapping :attr:`GraphRun.runner` keeps chained nodes chained.

    Example: count what a node takes and gives::

        >>> class Counting(BatchTap):
        ...     def __init__(self):
        ...         self.taken_items = self.emitted_items = 0
        ...     def taken(self, batch):
        ...         self.taken_items += len(batch)
        ...     def emitting(self, batch):
        ...         self.emitted_items += len(batch)
        >>> from haive.dataflow.runtime.nodes import FilterNode
        >>> g = Graph()
        >>> g.add(FilterNode(name="odd", filter_fn=lambda x: x % 2))
        >>> g.connect("input", "odd"); g.connect("odd", "output")
        >>> async def main(tap):
        ...     run = GraphRun(g, RunSettings())
        ...     run.taps["odd"] = tap
        ...     async with trio.open_nursery() as nursery:
        ...         run.start(nursery)
        ...         await run.feed([1, 2, 3])
        ...         run.close_input()
        ...         return await run.output.get_batch()
        >>> tap = Counting()
        >>> trio.run(main, tap), tap.taken_items, tap.emitted_items
        ([1, 3], 3, 2)
    """

    def taken(self, batch: list[Any]) -> None:
        """The node received ``batch``."""

    def emitting(self, batch: list[Any]) -> None:
        """The node is emitting ``batch`` to its successors."""

    def close(self) -> None:
        """The node is done (its input ended, it failed or the run was cancelled)."""


class _TappedInbox:
    """A node's input as the node sees it while tapped: each batch taken is shown to the
    tap. Everything else is the buffer's."""

    def __init__(self, inbox: BoundedBuffer[Any], tap: BatchTap) -> None:
        self._inbox = inbox
        self._tap = tap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inbox, name)

    def __len__(self) -> int:
        return len(self._inbox)

    async def get_batch(self, chunk_size: int | None = None) -> list[Any]:
        batch = await self._inbox.get_batch(chunk_size)
        self._tap.taken(batch)
        return batch


def _tapped_emit(emit: Emit, tap: BatchTap) -> Emit:
    # A plain function returning emit's awaitable: no coroutine frame of its own.
    def tapped(batch: list[Any]) -> Awaitable[None]:
        tap.emitting(batch)
        return emit(batch)

    return tapped


class GraphRun:
    """One execution of a :class:`Graph`: buffers, node contexts and node tasks.

    Create it, :meth:`start` it in a nursery, feed :attr:`entry`, read :attr:`output`.
    ``runner`` says how each node's work runs (see :data:`NodeRunner`).
    """

    def __init__(
        self,
        graph: Graph,
        settings: RunSettings,
        *,
        errors: BoundedBuffer[Result] | None = None,
        runner: NodeRunner = inline_runner,
    ) -> None:
        self.graph = graph
        self.runner = runner
        self.settings = settings
        self.order = graph.validate()
        self.inboxes: dict[str, BoundedBuffer[Any]] = {
            name: settings.buffer(f"{name}.in") for name in self.order
        }
        self.output: BoundedBuffer[Any] = settings.buffer("output")
        self.errors = errors
        self.contexts: dict[str, NodeContext] = {}
        self._outs: dict[str, list[BufferProducer[Any]]] = {}
        for name in self.order:
            node = self.graph.nodes[name]
            self.contexts[name] = NodeContext(
                name=name,
                error_policy=node.on_error or settings.error_policy,
                retry=node.retry or settings.retry,
                errors=errors.open_producer() if errors is not None else None,
                on_progress=self._progress,
            )
            self._outs[name] = [self._producer(name, t) for t in graph.successors(name)]
        if errors is not None and not self.order:
            errors.close()  # no node will ever report a failure
        self.entry: list[BufferProducer[Any]] = [
            self._producer(INPUT, t) for t in graph.successors(INPUT)
        ]
        self.output_taken = 0
        #: Per node name, the :class:`BatchTap` an instrumentation installed (before
        #: :meth:`start`); a node without one pays nothing for the others'.
        self.taps: dict[str, BatchTap] = {}
        self._idle_waiters = 0
        self._idle = trio.Event()

    def _buffer_for(self, name: str) -> BoundedBuffer[Any]:
        return self.output if name == OUTPUT else self.inboxes[name]

    def _producer(self, source: str, target: str) -> BufferProducer[Any]:
        """The handle ``source`` puts into ``target``'s input with. A node whose
        ``tags_inputs`` is true (a join told apart its inputs by predecessor) receives
        ``(source, item)`` pairs."""
        producer = self._buffer_for(target).open_producer()
        node = self.graph.nodes.get(target)
        if node is not None and getattr(node, "tags_inputs", False):
            return TaggingProducer(producer, source)
        return producer

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, nursery: trio.Nursery) -> None:
        for chain in self.chains():
            if len(chain) == 1:
                nursery.start_soon(self._run_node, chain[0], name=f"haive-node:{chain[0]}")
            else:
                label = "+".join(chain)
                nursery.start_soon(self._run_chain, chain, name=f"haive-node:{label}")

    def chains(self) -> list[list[str]]:
        """The node tasks this run starts, as lists of node names in order.

        Consecutive nodes ``a -> b`` share one task (operator chaining) when ``a``'s only
        successor is ``b``, ``b``'s only predecessor is ``a``, both are
        :meth:`~haive.dataflow.runtime.nodes.Node.chainable` and the run's :attr:`runner`
        runs both with their own ``run`` (an instrumentation wrapping the runner keeps a
        task per node; one installing :attr:`taps` does not). A chain hands each batch from
        node to node by a call instead of a buffer and a task switch; every node keeps its
        own counters, error policy, dead letters and name in errors, and the chain's first
        input buffer still bounds it.

        Example::

            >>> from haive.dataflow.runtime.nodes import FilterNode, TransformNode
            >>> g = Graph()
            >>> g.add(TransformNode(name="parse", transform_fn=int))
            >>> g.add(FilterNode(name="positive", filter_fn=lambda x: x > 0))
            >>> g.connect("input", "parse"); g.connect("parse", "positive")
            >>> g.connect("positive", "output")
            >>> GraphRun(g, RunSettings()).chains()
            [['parse', 'positive']]
        """
        chains: list[list[str]] = []
        for name in self.order:
            if chains and self._chains_to(chains[-1][-1], name):
                chains[-1].append(name)
            else:
                chains.append([name])
        return chains

    def _chainable(self, name: str) -> bool:
        node = self.graph.nodes[name]
        return (
            node.chainable()
            and self.runner(node) == node.run
            # Routers pick successors per item, tagged inputs need their own producers.
            and getattr(node, "run_routed", None) is None
            and not getattr(node, "tags_inputs", False)
        )

    def _chains_to(self, previous: str, name: str) -> bool:
        graph = self.graph
        return (
            graph.successors(previous) == [name]
            and graph.predecessors(name) == [previous]
            and self._chainable(previous)
            and self._chainable(name)
        )

    async def _run_node(self, name: str) -> None:
        node = self.graph.nodes[name]
        ctx = self.contexts[name]
        inbox = self.inboxes[name]
        outs = self._outs[name]
        emit = _make_emit(outs)
        tap = self.taps.get(name)
        try:
            await node.open()
            routed = getattr(node, "run_routed", None)
            if routed is not None:
                # The node picks successors per item (routing.RouterNode): one emit each.
                targets = self.graph.successors(name)
                await routed(
                    ctx, inbox, {t: p.put_batch for t, p in zip(targets, outs, strict=True)}
                )
            elif tap is not None:
                tapped = cast(BoundedBuffer[Any], _TappedInbox(inbox, tap))
                await self.runner(node)(ctx, tapped, _tapped_emit(emit, tap))
            else:
                await self.runner(node)(ctx, inbox, emit)
        except NodeError:
            raise
        except Exception as exc:
            raise NodeError(name, exc) from exc
        finally:
            if tap is not None:
                tap.close()
            for producer in outs:
                producer.close()
            if ctx.errors is not None:
                ctx.errors.close()
            inbox.close_receiving()
            with trio.CancelScope(shield=True):
                await node.aclose()

    async def _run_chain(self, names: list[str]) -> None:
        """Run chained nodes (see :meth:`chains`) in one task: each batch taken from the
        first node's input goes through every node in turn, then to the last one's
        successors.

        Each node's counters move as in its own task, and the input buffer of every node
        after the first counts what was handed to it as put and taken at once (it stays
        empty), so :meth:`is_idle`, monitors and metrics see the same flow. ``in_progress``
        of the next node rises before that of the previous one falls: nothing looks idle
        while a batch is between two nodes.
        """
        nodes = [self.graph.nodes[name] for name in names]
        contexts = [self.contexts[name] for name in names]
        taps = [self.taps.get(name) for name in names]
        chain = _Chain(
            steps=list(zip(names, nodes, contexts, strict=True)),
            handed=[self.inboxes[name].stats for name in names[1:]],
            emit=_make_emit(self._outs[names[-1]]),
            taps=taps if any(tap is not None for tap in taps) else None,
        )
        inbox = self.inboxes[names[0]]
        next_batch = contexts[0].next_batch
        progress = self._progress
        through = chain.through
        current = names[0]
        try:
            for name, node, _ in chain.steps:
                current = name  # what a failure is named after
                await node.open()
            while (batch := await next_batch(inbox)) is not None:
                await through(batch, 0)
                progress()
            # End of input: what a node still holds goes through the nodes after it.
            for index, (name, node, ctx) in enumerate(chain.steps):
                current = name
                tail = await node.flush(ctx)
                if tail:
                    ctx.stats.items_out += len(tail)
                    if chain.taps is not None and (tap := chain.taps[index]) is not None:
                        tap.emitting(tail)
                    if index + 1 < len(names):
                        chain.hand(index + 1, tail)
                        await through(tail, index + 1)
                    else:
                        await chain.emit(tail)
        except NodeError:
            raise
        except Exception as exc:
            raise NodeError(current, exc) from exc
        finally:
            for tap in taps:
                if tap is not None:
                    tap.close()
            for name, ctx in zip(names, contexts, strict=True):
                # Every node's producers belong to this task, the last one's successors'
                # as well as those of the inputs it handed batches through.
                for producer in self._outs[name]:
                    producer.close()
                if ctx.errors is not None:
                    ctx.errors.close()
                self.inboxes[name].close_receiving()
            with trio.CancelScope(shield=True):
                failures: list[BaseException] = []
                for node in nodes:
                    try:
                        await node.aclose()
                    except BaseException as exc:  # every node is closed; the first error wins
                        failures.append(exc)
                if failures:
                    raise failures[0]

    async def feed(self, batch: list[Any]) -> None:
        """Put a batch into every successor of ``input``."""
        for producer in self.entry:
            await producer.put_batch(batch)

    def close_input(self) -> None:
        for producer in self.entry:
            producer.close()

    # -- progress and quiescence ---------------------------------------------------------
    def _progress(self) -> None:
        if self._idle_waiters and self.is_idle():
            self._idle.set()

    def note_output_taken(self, n: int) -> None:
        """The consumer of :attr:`output` finished handling ``n`` items."""
        self.output_taken += n
        self._progress()

    def is_idle(self) -> bool:
        """True when no item is buffered or being processed anywhere in the graph."""
        for name, inbox in self.inboxes.items():
            stats = self.contexts[name].stats
            if len(inbox) or stats.in_progress or inbox.stats.items_out != stats.items_in:
                return False
        return not len(self.output) and self.output.stats.items_out == self.output_taken

    async def wait_idle(self) -> None:
        """Wait until everything fed so far has left the graph (or was dropped/absorbed)."""
        while not self.is_idle():
            self._idle_waiters += 1
            try:
                await self._idle.wait()
            finally:
                self._idle_waiters -= 1
                if self._idle.is_set():
                    self._idle = trio.Event()
        await trio.lowlevel.checkpoint()

    # -- introspection -------------------------------------------------------------------
    def node_stats(self) -> dict[str, NodeStats]:
        return {name: ctx.stats for name, ctx in self.contexts.items()}

    def buffers(self) -> Iterable[BoundedBuffer[Any]]:
        yield from self.inboxes.values()
        yield self.output


def _make_emit(outs: list[BufferProducer[Any]]) -> Emit:
    if len(outs) == 1:
        return outs[0].put_batch

    async def emit_all(batch: list[Any]) -> None:
        for producer in outs:
            await producer.put_batch(batch)

    return emit_all


@attrs.define(eq=False)
class _Chain:
    """The nodes of one chain (see :meth:`GraphRun.chains`) and how a batch goes through
    them: ``steps`` are ``(name, node, context)``, ``handed[i]`` counts what node ``i + 1``
    was handed (its input buffer's stats), ``emit`` puts into the last node's successors."""

    steps: list[tuple[str, Node, NodeContext]]
    handed: list[BufferStats]
    emit: Emit
    #: Each node's :class:`BatchTap` or None; None when no node has one.
    taps: list[BatchTap | None] | None = None

    def hand(self, index: int, batch: list[Any]) -> None:
        """Count ``batch`` as put into and taken from node ``index``'s input, and received
        by that node (what its own task's ``next_batch`` would count)."""
        n = len(batch)
        received = self.handed[index - 1]
        received.items_in += n
        received.items_out += n
        stats = self.steps[index][2].stats
        stats.items_in += n
        stats.in_progress += n

    async def through(self, batch: list[Any], start: int) -> None:
        """Process ``batch``, already received by node ``start``, through it and the nodes
        after it, then emit what is left; a failure names the node it happened in."""
        steps = self.steps
        taps = self.taps
        last = len(steps) - 1
        clock = time.perf_counter
        for index in range(start, last + 1):
            name, node, ctx = steps[index]
            stats = ctx.stats
            n = len(batch)
            tap = taps[index] if taps is not None else None
            try:
                if tap is not None:
                    tap.taken(batch)  # as its own task's tapped input would, before timing
                started = clock()
                out = await node.process_batch(batch, ctx)
                stats.busy_seconds += clock() - started
                stats.batches += 1
                if not out:
                    stats.in_progress -= n
                    return
                stats.items_out += len(out)
                if tap is not None:
                    tap.emitting(out)
                if index == last:
                    await self.emit(out)
                else:
                    self.hand(index + 1, out)
            except NodeError:
                raise
            except Exception as exc:
                raise NodeError(name, exc) from exc
            stats.in_progress -= n
            batch = out


class TaggingProducer(BufferProducer[Any]):
    """A producer handle that puts ``(tag, item)`` for each item: how a node fed by several
    predecessors learns which one each item came from (see ``GraphRun._producer``).

    Example::

        >>> async def main():
        ...     buffer = BoundedBuffer(10)
        ...     producer = TaggingProducer(buffer.open_producer(), "orders")
        ...     await producer.put_batch([1, 2])
        ...     producer.close()
        ...     return await buffer.get_batch()
        >>> trio.run(main)
        [('orders', 1), ('orders', 2)]
    """

    __slots__ = ("_tag",)

    def __init__(self, producer: BufferProducer[Any], tag: str) -> None:
        super().__init__(producer.buffer)
        self._tag = tag

    async def put_batch(self, items: Iterable[Any]) -> None:
        tag = self._tag
        await super().put_batch([(tag, item) for item in items])

    async def put(self, item: Any) -> None:
        await super().put_batch([(self._tag, item)])

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        tag = self._tag
        super().put_nowait_batch([(tag, item) for item in items])

    def clone(self) -> BufferProducer[Any]:
        return TaggingProducer(super().clone(), self._tag)
