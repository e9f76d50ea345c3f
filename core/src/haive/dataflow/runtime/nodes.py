"""Processing nodes: the steps of event and streaming pipelines.

A node receives *batches* of items (whatever is ready on its input edge) and returns the
batch of outputs. User functions are still called once per item; the batching only removes
per-item scheduling cost. A node never mutates the list it is given (fan-out shares it).

Per-item failures are handed to :meth:`NodeContext.recover`, which retries per the node's
:class:`~haive.dataflow.runtime.retry.RetryPolicy` and then applies the pipeline's error policy:
``"raise"`` (stop the pipeline with :class:`~haive.dataflow.errors.NodeError`), ``"result"``
(emit a failed :class:`~haive.dataflow.runtime.results.Result` and go on) or ``"skip"`` (count it).
"""

from __future__ import annotations

import abc
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

import attrs
import trio

from ..errors import ConfigError, NodeError
from .adaptive import AdaptiveConcurrency, ConcurrencyController
from .backpressure import BoundedBuffer, BufferProducer
from .pickling import check_picklable
from .results import Result
from .retry import NO_RETRY, RetryPolicy
from .validation import BOOL, CALLABLE, NON_EMPTY_STR, POSITIVE_INT, Rule, instance_of, one_of

ErrorPolicy = Literal["raise", "result", "skip"]
ERROR_POLICIES: tuple[str, ...] = ("raise", "result", "skip")
#: Where a TransformNode calls its function (see :mod:`haive.dataflow.parallel`).
EXECUTORS: tuple[str, ...] = ("inline", "thread", "process")

Emit = Callable[[list[Any]], Awaitable[None]]


def is_async_callable(fn: object) -> bool:
    """True when calling ``fn`` returns an awaitable we must await (async def or __call__)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return inspect.iscoroutinefunction(call)


#: A node's ``on_error``: one of :data:`ERROR_POLICIES`, or None for the pipeline's.
NODE_ON_ERROR = one_of(*ERROR_POLICIES).optional()
NODE_RETRY = instance_of(RetryPolicy, "a RetryPolicy").optional()
CONCURRENCY = Rule(
    "an integer >= 1 or an AdaptiveConcurrency",
    lambda value: isinstance(value, AdaptiveConcurrency) or POSITIVE_INT.test(value),
)


def check_error_policy(value: str | None, where: str) -> None:
    """Raise ConfigError unless ``value`` is an error policy or None (``where`` owns it)."""
    NODE_ON_ERROR.check(where, "on_error", value)


@attrs.define
class NodeStats:
    """Per-node counters, updated once per batch.

    Example::

        >>> NodeStats().items_in
        0
    """

    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    retries: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    in_progress: int = 0


@attrs.define(eq=False)
class NodeContext:
    """What a running node may use: its name, error handling and counters.

    Example::

        >>> ctx = NodeContext(name="n")
        >>> ctx.error_policy
        'raise'
    """

    name: str
    error_policy: str = "raise"
    retry: RetryPolicy = NO_RETRY
    errors: BufferProducer[Result] | None = None
    stats: NodeStats = attrs.field(factory=NodeStats)
    on_progress: Callable[[], None] | None = None

    async def recover(
        self, fn: Callable[[Any], Any], item: Any, error: Exception, *, is_async: bool
    ) -> tuple[bool, Any]:
        """Retry ``fn(item)`` after ``error`` per the retry policy, then apply the error policy.

        Returns ``(True, value)`` when a retry succeeded, ``(False, None)`` when the item
        failed for good (and was reported, skipped or raised as :class:`NodeError`).
        """
        attempts = 1
        while attempts < self.retry.attempts:
            delay = self.retry.delay(attempts)
            attempts += 1
            self.stats.retries += 1
            if delay:
                await trio.sleep(delay)
            try:
                value = await fn(item) if is_async else fn(item)
            except Exception as exc:
                error = exc
            else:
                return True, value
        await self.fail(item, error, attempts=attempts)
        return False, None

    async def next_batch(self, inbox: BoundedBuffer[Any]) -> list[Any] | None:
        """The next ready batch of ``inbox`` (at most its ``chunk_size`` items), counted in
        :attr:`stats` as received and in progress; ``None`` once the input has ended.

        Example::

            >>> async def main():
            ...     ctx, inbox = NodeContext("n"), BoundedBuffer(10)
            ...     await inbox.put_batch([1, 2])
            ...     inbox.close()
            ...     return await ctx.next_batch(inbox), await ctx.next_batch(inbox), ctx.stats
            >>> trio.run(main)
            ([1, 2], None, NodeStats(items_in=2, items_out=0, errors=0, retries=0, batches=0, busy_seconds=0.0, in_progress=2))
        """
        try:
            batch = await inbox.get_batch()
        except trio.EndOfChannel:
            return None
        n = len(batch)
        self.stats.in_progress += n
        self.stats.items_in += n
        return batch

    async def fail(self, item: Any, error: BaseException, *, attempts: int = 1) -> None:
        """Report ``item`` as failed for good, per the error policy."""
        self.stats.errors += 1
        if self.error_policy == "raise":
            raise NodeError(self.name, error) from error
        if self.error_policy == "result" and self.errors is not None:
            await self.errors.put(Result.failed(item, error, node=self.name, attempts=attempts))


class Node(abc.ABC):
    """Base class of every pipeline step. Subclasses implement :meth:`process_batch`.

    ``PLUGIN_NAME`` is set on node classes a plugin registers as processors.

    Example: a node that upper-cases strings::

        >>> class Upper(Node):
        ...     def __init__(self, name="upper"):
        ...         self.name = name
        ...     async def process_batch(self, batch, ctx):
        ...         return [s.upper() for s in batch]
        >>> trio.run(Upper().process_batch, ["a", "b"], NodeContext("upper"))
        ['A', 'B']
    """

    PLUGIN_NAME: ClassVar[str] = ""
    name: str
    #: Error policy for this node; ``None`` means the pipeline's.
    on_error: str | None = None
    #: Retry policy for this node; ``None`` means the pipeline's.
    retry: RetryPolicy | None = None

    async def open(self) -> None:
        """Called once before the first batch (acquire models, connections...)."""

    async def aclose(self) -> None:
        """Called once after the last batch, also on error or cancellation."""

    @abc.abstractmethod
    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        """Process a batch of inputs and return the batch of outputs (possibly empty)."""

    async def flush(self, ctx: NodeContext) -> list[Any]:
        """Called at the end of the input; return outputs still held (partial windows)."""
        return []

    def chainable(self) -> bool:
        """True when a run may call this node in the task of a chainable neighbour instead
        of giving it a task of its own (operator chaining, as Flink does; see
        :class:`~haive.dataflow.runtime.graph.GraphRun`).

        Only a node whose :meth:`process_batch` awaits nothing but its own failures (retry
        back-off, a full error buffer) may say yes: a node that waits on I/O in its own
        task lets its neighbours work meanwhile, which chaining would take away. The
        default is no; :class:`TransformNode` and :class:`FilterNode` with a synchronous
        function on the inline executor say yes, and so does a :class:`StreamProcessor`
        whose ``process`` is synchronous (unless it overrides ``process_batch`` or ``run``).

        Example::

            >>> TransformNode(name="inc", transform_fn=lambda x: x + 1).chainable()
            True
        """
        return False

    async def run(self, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit) -> None:
        """The node's task: take ready batches, process, emit, until the input ends."""
        stats = ctx.stats
        next_batch = ctx.next_batch
        progress = ctx.on_progress
        clock = time.perf_counter
        while (batch := await next_batch(inbox)) is not None:
            n = len(batch)
            started = clock()
            out = await self.process_batch(batch, ctx)
            stats.busy_seconds += clock() - started
            stats.batches += 1
            if out:
                stats.items_out += len(out)
                await emit(out)
            stats.in_progress -= n
            if progress is not None:
                progress()
        tail = await self.flush(ctx)
        if tail:
            stats.items_out += len(tail)
            await emit(tail)


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


@attrs.define(eq=False)
class FilterNode(Node):
    """Keeps the items for which ``filter_fn`` (sync or async) returns true.

    Example::

        >>> node = FilterNode(name="relevant", filter_fn=lambda e: e["score"] > 0.7)
        >>> trio.run(node.process_batch, [{"score": 0.9}, {"score": 0.1}], NodeContext("relevant"))
        [{'score': 0.9}]
    """

    PLUGIN_NAME: ClassVar[str] = "filter"
    name: str = attrs.field(validator=NON_EMPTY_STR)
    filter_fn: Callable[[Any], Any] = attrs.field(validator=CALLABLE)
    on_error: str | None = attrs.field(default=None, validator=NODE_ON_ERROR)
    retry: RetryPolicy | None = attrs.field(default=None, validator=NODE_RETRY)
    _is_async: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._is_async = is_async_callable(self.filter_fn)

    def chainable(self) -> bool:
        # This class's own synchronous path only: a subclass may await in process_batch.
        return type(self) is FilterNode and not self._is_async

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        fn = self.filter_fn
        out: list[Any] = []
        append = out.append
        if self._is_async:
            for element in batch:
                try:
                    keep = await fn(element)
                except Exception as exc:
                    ok, keep = await ctx.recover(fn, element, exc, is_async=True)
                    if not ok:
                        continue
                if keep:
                    append(element)
            return out
        items = iter(batch)
        item: Any = None
        while True:
            try:
                # One try around the whole loop (free in 3.11+); on a failure the loop
                # resumes after the failing item, so no item is evaluated twice.
                for item in items:
                    if fn(item):
                        append(item)
                return out
            except Exception as exc:
                ok, keep = await ctx.recover(fn, item, exc, is_async=False)
                if ok and keep:
                    append(item)


@attrs.define(eq=False)
class TransformNode(Node):
    """Applies ``transform_fn`` (sync or async) to every item.

    With an async function and ``concurrency=N``, up to N items are in flight at once;
    ``ordered=True`` (default) emits results in input order, ``ordered=False`` as they finish.
    ``concurrency=AdaptiveConcurrency(min, max)`` lets the number in flight follow the backlog
    on the node's input: doubled while the input buffer is filling, halved while it is
    (nearly) empty (see :mod:`haive.dataflow.runtime.adaptive`; ``current_concurrency`` is the limit
    now).
    Sync functions run inline, batch by batch, unless ``executor`` says otherwise:
    ``executor="process"`` runs a CPU-bound, picklable function in ``concurrency`` worker
    processes, ``executor="thread"`` a blocking one in ``concurrency`` trio worker threads
    (see :mod:`haive.dataflow.parallel`, which pipelines use to run such a node;
    :meth:`process_batch` and :meth:`run` themselves always run inline).

    Example::

        >>> node = TransformNode(name="double", transform_fn=lambda x: x * 2)
        >>> trio.run(node.process_batch, [1, 2, 3], NodeContext("double"))
        [2, 4, 6]
    """

    PLUGIN_NAME: ClassVar[str] = "transform"
    name: str = attrs.field(validator=NON_EMPTY_STR)
    transform_fn: Callable[[Any], Any] = attrs.field(validator=CALLABLE)
    concurrency: int | AdaptiveConcurrency = attrs.field(default=1, validator=CONCURRENCY)
    ordered: bool = attrs.field(default=True, validator=BOOL)
    on_error: str | None = attrs.field(default=None, validator=NODE_ON_ERROR)
    retry: RetryPolicy | None = attrs.field(default=None, validator=NODE_RETRY)
    #: ``"inline"``, ``"thread"`` (blocking functions) or ``"process"`` (CPU-bound ones).
    executor: str = attrs.field(default="inline", validator=one_of(*EXECUTORS))
    _is_async: bool = attrs.field(init=False, default=False)
    _controller: ConcurrencyController | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._is_async = is_async_callable(self.transform_fn)
        if isinstance(self.concurrency, AdaptiveConcurrency) and (
            not self._is_async or self.executor != "inline"
        ):
            raise ConfigError(
                f"TransformNode {self.name!r}: concurrency={self.concurrency!r} needs an async "
                "transform_fn on the inline executor (sync functions run one item at a time; "
                "give executor='thread' or 'process' a fixed concurrency=N)"
            )
        if self.executor != "inline" and self._is_async:
            raise ConfigError(
                f"TransformNode {self.name!r}: executor={self.executor!r} needs a sync "
                "function; async functions already run concurrently (use concurrency=N)"
            )
        if self.executor == "process":
            check_picklable(self.transform_fn, f"TransformNode {self.name!r}")

    def chainable(self) -> bool:
        # This class's own synchronous inline path only: a subclass may await in
        # process_batch, an async function overlaps its neighbours' work, and the thread
        # and process executors run the node their own way.
        return type(self) is TransformNode and self.executor == "inline" and not self._is_async

    @property
    def current_concurrency(self) -> int:
        """Items this node may have in flight now (the adaptive limit while it runs)."""
        if self._controller is not None:
            return self._controller.limit
        if isinstance(self.concurrency, AdaptiveConcurrency):
            return self.concurrency.min
        return self.concurrency

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        fn = self.transform_fn
        out: list[Any] = []
        append = out.append
        if self._is_async:
            for element in batch:
                try:
                    append(await fn(element))
                except Exception as exc:
                    ok, value = await ctx.recover(fn, element, exc, is_async=True)
                    if ok:
                        append(value)
            return out
        # map() + list.extend run the per-item loop in C (about 40 ns an item less than a
        # Python loop calling append). When fn raises, extend has kept what it appended and
        # map has taken the failing item from ``items``: the failing item is the one after
        # those, and the next extend resumes after it, so no item is evaluated twice.
        items = iter(batch)
        extend = out.extend
        position = 0  # index in ``batch`` of the next item ``items`` yields
        while True:
            start = len(out)
            try:
                extend(map(fn, items))
                return out
            except Exception as exc:
                position += len(out) - start
                item = batch[position]
                position += 1
                ok, value = await ctx.recover(fn, item, exc, is_async=False)
                if ok:
                    append(value)

    async def run(self, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit) -> None:
        if self.executor != "inline":
            # Executors live above the runtime: pipelines run their graph with
            # haive.dataflow.parallel.executor_runner, which never calls this for such a node.
            raise ConfigError(
                f"TransformNode {self.name!r}: executor={self.executor!r} runs on the executors "
                "of haive.dataflow.parallel (a pipeline applies them; outside one, use "
                "haive.dataflow.parallel.run_with_executor); node.run runs inline only"
            )
        if not self._is_async or self.concurrency == 1:
            await super().run(ctx, inbox, emit)
            return
        await _run_worker_pool(self, ctx, inbox, emit)


V = TypeVar("V")


class Resequencer(Generic[V]):
    """Puts results that finish out of order back in order: values pushed with sequence
    numbers 0, 1, 2... come out of :meth:`pop_ready` in that order, each once the values
    before it are out.

    Example::

        >>> order = Resequencer()
        >>> order.push(1, "b")
        >>> order.pop_ready()
        []
        >>> order.push(0, "a")
        >>> order.pop_ready()
        ['a', 'b']
    """

    __slots__ = ("_next", "_pending")

    def __init__(self) -> None:
        self._pending: dict[int, V] = {}
        self._next = 0

    def push(self, seq: int, value: V) -> None:
        self._pending[seq] = value

    def pop_ready(self) -> list[V]:
        """The values whose predecessors are all out, in sequence order."""
        pending = self._pending
        ready: list[V] = []
        while self._next in pending:
            ready.append(pending.pop(self._next))
            self._next += 1
        return ready


async def _run_worker_pool(
    node: TransformNode, ctx: NodeContext, inbox: BoundedBuffer[Any], emit: Emit
) -> None:
    """N workers over a rendezvous channel; results re-ordered by sequence when ordered.

    Under :class:`AdaptiveConcurrency` there are ``max`` workers and a controller task; a
    worker holds the controller's limiter while it takes and processes an item, so only
    ``limit`` of them work at a time.
    """
    fn = node.transform_fn
    stats = ctx.stats
    policy = node.concurrency
    # Items the feeder took from the inbox and has not handed to a worker yet.
    held = [0]
    controller: ConcurrencyController | None = None
    if isinstance(policy, AdaptiveConcurrency):
        workers = policy.max
        controller = ConcurrencyController(policy, lambda: len(inbox) + held[0], inbox.buffer_size)
    else:
        workers = policy
    work_send, work_recv = trio.open_memory_channel[tuple[int, Any]](0)
    done_send, done_recv = trio.open_memory_channel[tuple[int, bool, Any]](workers)

    async def feed() -> None:
        async with work_send:
            seq = 0
            while (batch := await ctx.next_batch(inbox)) is not None:
                held[0] = len(batch)
                for item in batch:
                    await work_send.send((seq, item))
                    held[0] -= 1
                    seq += 1

    async def handle(seq: int, item: Any, results: trio.MemorySendChannel[Any]) -> None:
        try:
            value = await fn(item)
            ok = True
        except Exception as exc:
            ok, value = await ctx.recover(fn, item, exc, is_async=True)
        await results.send((seq, ok, value))

    async def work(
        jobs: trio.MemoryReceiveChannel[tuple[int, Any]],
        results: trio.MemorySendChannel[tuple[int, bool, Any]],
    ) -> None:
        async with jobs, results:
            async for seq, item in jobs:
                await handle(seq, item, results)

    async def work_limited(
        jobs: trio.MemoryReceiveChannel[tuple[int, Any]],
        results: trio.MemorySendChannel[tuple[int, bool, Any]],
        limiter: trio.CapacityLimiter,
    ) -> None:
        async with jobs, results:
            while True:
                async with limiter:
                    try:
                        seq, item = await jobs.receive()
                    except trio.EndOfChannel:
                        return
                    await handle(seq, item, results)

    async with trio.open_nursery() as nursery:
        if controller is not None:
            node._controller = controller
            nursery.start_soon(controller.run)
        nursery.start_soon(feed)
        async with work_recv, done_send:
            for _ in range(workers):
                if controller is not None:
                    nursery.start_soon(
                        work_limited, work_recv.clone(), done_send.clone(), controller.limiter
                    )
                else:
                    nursery.start_soon(work, work_recv.clone(), done_send.clone())
        order: Resequencer[tuple[bool, Any]] = Resequencer()
        async with done_recv:
            async for first in done_recv:
                finished = [first]
                while True:
                    try:
                        finished.append(done_recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if node.ordered:
                    for seq, ok, value in finished:
                        order.push(seq, (ok, value))
                    out = [value for ok, value in order.pop_ready() if ok]
                else:
                    out = [value for _, ok, value in finished if ok]
                stats.batches += 1
                if out:
                    stats.items_out += len(out)
                    await emit(out)
                stats.in_progress -= len(finished)
                if ctx.on_progress is not None:
                    ctx.on_progress()
        # Every worker is done: only the controller is left.
        nursery.cancel_scope.cancel()
    node._controller = None


@attrs.define(eq=False)
class AggregateNode(Node):
    """Collects ``window_size`` items (a tumbling count window) and emits ``aggregate_fn(items)``.

    ``aggregate_fn`` may be sync or async. At the end of the input a partial window is
    aggregated too unless ``emit_partial=False``.

    Example::

        >>> node = AggregateNode(name="sum3", window_size=3, aggregate_fn=sum)
        >>> trio.run(node.process_batch, [1, 2, 3, 4], NodeContext("sum3"))
        [6]
    """

    PLUGIN_NAME: ClassVar[str] = "aggregate"
    name: str = attrs.field(validator=NON_EMPTY_STR)
    window_size: int = attrs.field(validator=POSITIVE_INT)
    aggregate_fn: Callable[[list[Any]], Any] = attrs.field(validator=CALLABLE)
    emit_partial: bool = attrs.field(default=True, validator=BOOL)
    on_error: str | None = attrs.field(default=None, validator=NODE_ON_ERROR)
    retry: RetryPolicy | None = attrs.field(default=None, validator=NODE_RETRY)
    _window: list[Any] = attrs.field(init=False, factory=list)
    _is_async: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._is_async = is_async_callable(self.aggregate_fn)

    async def _aggregate(self, window: list[Any], ctx: NodeContext) -> list[Any]:
        fn = self.aggregate_fn
        try:
            value = await fn(window) if self._is_async else fn(window)
        except Exception as exc:
            ok, value = await ctx.recover(fn, window, exc, is_async=self._is_async)
            if not ok:
                return []
        return [value]

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        window = self._window
        size = self.window_size
        out: list[Any] = []
        start = 0
        while start < len(batch):
            take = min(size - len(window), len(batch) - start)
            window.extend(batch[start : start + take])
            start += take
            if len(window) == size:
                self._window = []
                out.extend(await self._aggregate(window, ctx))
                window = self._window
        return out

    async def flush(self, ctx: NodeContext) -> list[Any]:
        window, self._window = self._window, []
        if window and self.emit_partial:
            return await self._aggregate(window, ctx)
        return []


class StreamProcessor(Node):
    """Base class for user processors: implement :meth:`process` (sync or async) per item.

    Return the output; raise to fail the item. Override :meth:`process_batch` instead when
    the work is cheaper per batch (model inference, bulk I/O).

    Example::

        >>> class Tokenize(StreamProcessor):
        ...     def process(self, item):
        ...         return item.split()
        >>> trio.run(Tokenize().process_batch, ["a b"], NodeContext("tokenize"))
        [['a', 'b']]
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name or type(self).__name__
        owner = type(self).__name__
        NON_EMPTY_STR.check(owner, "name", self.name)
        self.on_error = NODE_ON_ERROR.check(owner, "on_error", on_error)
        self.retry = NODE_RETRY.check(owner, "retry", retry)

    def process(self, item: Any) -> Any:
        """Turn one input into one output (may be ``async def`` in subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def chainable(self) -> bool:
        # This class's own per-item loop over a synchronous process() only: a subclass
        # overriding process_batch or run may await I/O there.
        cls = type(self)
        return (
            cls.process_batch is StreamProcessor.process_batch
            and cls.run is Node.run
            and not is_async_callable(self.process)
        )

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        fn = self.process
        is_async = is_async_callable(fn)
        out: list[Any] = []
        for item in batch:
            try:
                value = await fn(item) if is_async else fn(item)
            except Exception as exc:
                ok, value = await ctx.recover(fn, item, exc, is_async=is_async)
                if not ok:
                    continue
            out.append(value)
        return out


def as_node(step: Node | Callable[[Any], Any], index: int) -> Node:
    """Accept a node, or a plain function as a TransformNode named after it."""
    if isinstance(step, Node):
        return step
    if callable(step):
        return TransformNode(name=f"{_callable_name(step)}_{index}", transform_fn=step)
    raise ConfigError(f"pipeline step {index} must be a Node or a callable, got {step!r}")


def node_names(nodes: Sequence[Node]) -> list[str]:
    return [node.name for node in nodes]
