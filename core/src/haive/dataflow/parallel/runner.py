"""How a TransformNode runs on the ``"process"`` and ``"thread"`` executors.

One feeder task takes whatever batch is ready on the node's input and cuts it into at most
``concurrency`` chunks; ``concurrency`` submitter tasks each hand one chunk at a time to the
executor (a worker process of a :class:`~haive.dataflow.parallel.pool.ProcessPool`, or one
of ``concurrency`` trio worker threads); a collector emits results, in input order when the
node is ``ordered``. A semaphore bounds the chunks between feeder and collector, so a slow
chunk holds back at most ``2 * concurrency`` chunks, never an unbounded reorder buffer.

When the node's function is wrapped by :mod:`haive.dataflow.runtime.caching`, cache look-ups and
stores happen here, in the trio thread, and only the misses travel to workers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio

from ..errors import ConfigError, unwrap_node_errors
from ..runtime.adaptive import AdaptiveConcurrency, concurrency_bound
from ..runtime.backpressure import BoundedBuffer
from ..runtime.caching import unwrap_cached
from ..runtime.config import StreamConfig
from ..runtime.nodes import Emit, Node, NodeContext, Resequencer, TransformNode, is_async_callable
from ..runtime.validation import BOOL, POSITIVE_INT
from .errors import WorkerError
from .pool import BatchResult, apply_inline, open_process_pool

Apply = Callable[[list[Any]], Awaitable[BatchResult]]


@attrs.frozen
class ParallelSettings:
    """What ``enable_parallel_processing(parallelism, ordered)`` asked for.

    ``parallelism=None`` means: ``StreamConfig.worker_threads`` worker processes for
    CPU-bound nodes and ``StreamConfig.io_threads`` for I/O-bound ones.

    Example::

        >>> ParallelSettings(parallelism=4).ordered
        False
        >>> ParallelSettings(parallelism=0)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: ParallelSettings(parallelism=0): parallelism must be an integer >= 1, or None, got 0
    """

    #: None: the StreamConfig defaults (worker_threads, io_threads).
    parallelism: int | None = attrs.field(default=None, validator=POSITIVE_INT.optional())
    ordered: bool = attrs.field(default=False, validator=BOOL)


def apply_parallelism(
    nodes: Iterable[Node], settings: ParallelSettings, config: StreamConfig
) -> dict[str, int]:
    """Set ``concurrency``/``ordered`` on every node that can use them; returns what was set.

    * ``executor="process"`` (CPU-bound): ``parallelism`` worker processes, default
      ``config.worker_threads``;
    * ``executor="thread"`` or an async function (I/O-bound): ``parallelism`` in flight,
      default ``config.io_threads``;
    * plain sync functions on the inline executor are left alone: Python runs them one at a
      time whatever the setting (mark them ``executor="process"`` to use more cores).

    Example::

        >>> async def fetch(x):
        ...     return x
        >>> nodes = [TransformNode(name="fetch", transform_fn=fetch),
        ...          TransformNode(name="inc", transform_fn=abs)]
        >>> apply_parallelism(nodes, ParallelSettings(8), StreamConfig())
        {'fetch': 8}
    """
    applied: dict[str, int] = {}
    for node in nodes:
        if not isinstance(node, TransformNode) or isinstance(node.concurrency, AdaptiveConcurrency):
            continue  # an adaptive node keeps its own bounds
        if node.executor == "process":
            workers = settings.parallelism or config.worker_threads
        elif node.executor == "thread" or is_async_callable(node.transform_fn):
            workers = settings.parallelism or config.io_threads
        else:
            continue
        node.concurrency = workers
        node.ordered = settings.ordered
        applied[node.name] = workers
    return applied


@attrs.define(eq=False)
class ProcessPoolNode(TransformNode):
    """A :class:`~haive.dataflow.runtime.nodes.TransformNode` whose function runs in worker processes.

    The same as ``TransformNode(..., executor="process")``: ``concurrency`` is the number of
    worker processes; the function must be picklable (a module-level function).

    Example::

        >>> import math
        >>> node = ProcessPoolNode(name="fact", transform_fn=math.factorial, concurrency=2)
        >>> node.executor, node.concurrency
        ('process', 2)
    """

    executor: str = "process"


def executor_runner(
    node: Node,
) -> Callable[[NodeContext, BoundedBuffer[Any], Emit], Awaitable[None]]:
    """How a pipeline runs ``node``: a :class:`TransformNode` with ``executor="process"`` or
    ``"thread"`` on that executor (:func:`run_with_executor`), any other node with its own
    ``run``. Pipelines give it to their graph run (``GraphRun(..., runner=executor_runner)``).

    Example::

        >>> import math
        >>> executor_runner(TransformNode(name="inc", transform_fn=abs)).__name__
        'run'
        >>> executor_runner(ProcessPoolNode(name="fact", transform_fn=math.factorial)).func
        <function run_with_executor at ...>
    """
    if isinstance(node, TransformNode) and node.executor != "inline":
        return functools.partial(run_with_executor, node)
    return node.run


async def run_with_executor(
    node: TransformNode, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit
) -> None:
    """Run ``node`` (executor ``"process"`` or ``"thread"``) until its input ends."""
    with unwrap_node_errors():
        await _run_with_executor(node, ctx, inbox, emit)


async def _run_with_executor(
    node: TransformNode, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit
) -> None:
    fn, cached = unwrap_cached(node.transform_fn)
    # TransformNode refuses AdaptiveConcurrency with an executor: a fixed count here.
    workers = concurrency_bound(node.concurrency)
    if node.executor == "process":
        async with open_process_pool(fn, workers, name=node.name) as pool:
            await _drive(node, ctx, inbox, emit, pool.map_batch, workers, cached)
        return
    if node.executor != "thread":
        raise ConfigError(f"TransformNode {node.name!r}: unknown executor {node.executor!r}")
    limiter = trio.CapacityLimiter(workers)

    async def in_thread(items: list[Any]) -> BatchResult:
        return await trio.to_thread.run_sync(apply_inline, fn, items, limiter=limiter)

    await _drive(node, ctx, inbox, emit, in_thread, workers, cached)


async def _drive(
    node: TransformNode,
    ctx: NodeContext,
    inbox: BoundedBuffer[Any],
    emit: Emit,
    apply: Apply,
    workers: int,
    cached: Any,
) -> None:
    stats = ctx.stats
    window = trio.Semaphore(2 * workers)
    chunk_send, chunk_recv = trio.open_memory_channel[tuple[int, list[Any]]](0)
    done_send, done_recv = trio.open_memory_channel[tuple[int, list[Any], int]](workers)

    async def call_one(item: Any) -> Any:
        result = await apply([item])
        if 0 in result.errors:
            raise result.errors[0]
        return result.values[0]

    async def process_chunk(chunk: list[Any]) -> list[Any]:
        # With a cache: hits are answered here, and items sharing a key travel once.
        keys: list[Any] = []
        hits: dict[int, Any] = {}
        slot_of: list[int] = []
        misses = chunk
        if cached is not None:
            misses = []
            first_slot: dict[Any, int] = {}
            for index, item in enumerate(chunk):
                hit, key, value = cached.lookup(item)
                keys.append(key)
                if hit:
                    hits[index] = value
                    slot_of.append(-1)
                elif key in first_slot:
                    slot_of.append(first_slot[key])
                else:
                    first_slot[key] = len(misses)
                    slot_of.append(len(misses))
                    misses.append(item)
        else:
            slot_of = list(range(len(chunk)))
        outcomes: list[tuple[bool, Any]] = []
        if misses:
            try:
                result = await apply(misses)
            except WorkerError as exc:
                for item in misses:
                    await ctx.fail(item, exc)
                outcomes = [(False, None)] * len(misses)
            else:
                stats.busy_seconds += result.seconds
                for item, (ok, value) in zip(misses, result.outcomes(), strict=True):
                    if not ok:
                        ok, value = await ctx.recover(call_one, item, value, is_async=True)
                    outcomes.append((ok, value))
        out: list[Any] = []
        stored: set[int] = set()
        for index, slot in enumerate(slot_of):
            if slot < 0:
                out.append(hits[index])
                continue
            ok, value = outcomes[slot]
            if ok:
                out.append(value)
                if cached is not None and slot not in stored:
                    stored.add(slot)
                    cached.store(keys[index], value)
        return out

    async def feed() -> None:
        async with chunk_send:
            seq = 0
            while (batch := await ctx.next_batch(inbox)) is not None:
                size = -(-len(batch) // workers)
                for start in range(0, len(batch), size):
                    await window.acquire()
                    await chunk_send.send((seq, batch[start : start + size]))
                    seq += 1

    async def submit(
        chunks: trio.MemoryReceiveChannel[tuple[int, list[Any]]],
        results: trio.MemorySendChannel[tuple[int, list[Any], int]],
    ) -> None:
        async with chunks, results:
            async for seq, chunk in chunks:
                outputs = await process_chunk(chunk)
                await results.send((seq, outputs, len(chunk)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, name=f"haive-feed:{node.name}")
        async with chunk_recv, done_send:
            for index in range(workers):
                nursery.start_soon(
                    submit,
                    chunk_recv.clone(),
                    done_send.clone(),
                    name=f"haive-submit:{node.name}:{index}",
                )
        order: Resequencer[tuple[list[Any], int]] = Resequencer()
        async with done_recv:
            async for seq, outputs, taken in done_recv:
                if node.ordered:
                    order.push(seq, (outputs, taken))
                    ready = order.pop_ready()
                else:
                    ready = [(outputs, taken)]
                for outputs, taken in ready:
                    stats.batches += 1
                    if outputs:
                        stats.items_out += len(outputs)
                        await emit(outputs)
                    stats.in_progress -= taken
                    window.release()
                if ready and ctx.on_progress is not None:
                    ctx.on_progress()


__all__ = ["ParallelSettings", "ProcessPoolNode", "apply_parallelism", "run_with_executor"]
