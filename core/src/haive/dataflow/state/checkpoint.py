"""Checkpoints and recovery: source positions and operator state saved together.

A checkpointed :class:`~haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline` periodically
asks for a *settle point* (every item read so far has left the pipeline: written by the
sink, dead-lettered, filtered out or absorbed into a node's state), then saves in one record
of a :class:`~haive.dataflow.state.StateStore`:

* the source's position (:class:`CheckpointableSource`: ``position()`` / ``seek()``),
* the sink's position when it can roll back (:class:`CheckpointableSink`), and
* a snapshot of every node that keeps state (:class:`Checkpointable`: windows, keyed state).

After a crash the same pipeline, started again with the same store, restores the nodes, rolls
the sink back to the checkpoint, seeks the source there and replays from it: no input is
lost, and with a sink that rolls back (JSON-lines files) no output is duplicated either.

The record is one value written with one ``put``, so it is atomic on every backend. Node
snapshots are pickled: a checkpoint store is trusted storage, like the process's own memory.
"""

from __future__ import annotations

import abc
import logging
import os
import pickle
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import trio

from ..errors import ConfigError, HaiveError
from ..io.sources import DataSource
from ..runtime.units import Duration
from ..runtime.validation import BOOL, CALLABLE, NON_EMPTY_STR, POSITIVE_INT, optional_duration

if TYPE_CHECKING:
    from ..io.sinks import StreamSink
    from ..pipelines.streaming_pipeline import StreamingPipeline
    from ..runtime.nodes import Node
    from ..runtime.results import Result
    from .backend import StateBackend
    from .store import StateStore

log = logging.getLogger("haive.dataflow.state.checkpoint")

_MAGIC = b"HVCK1"
FORMAT = 1


class CheckpointError(HaiveError):
    """A checkpoint cannot be taken or restored (for example the sink lost data)."""


class CheckpointableSource(abc.ABC):
    """Mixin for sources that can report and return to a position (replay after a crash).

    ``position()`` describes the point just after the last item yielded so far (a plain,
    picklable value); ``seek(position)`` makes the next ``batches()`` start there.

    Example::

        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> async def main():
        ...     source = IterableSource(range(5))
        ...     source.seek(3)
        ...     return [b async for b in source.batches(10)], source.position()
        >>> trio.run(main)
        ([[3, 4]], 5)
    """

    @abc.abstractmethod
    def position(self) -> Any:
        """Where the source stands: just after the last item it yielded."""

    @abc.abstractmethod
    def seek(self, position: Any) -> None:
        """Continue from ``position`` (a value :meth:`position` returned) on the next run."""


class CheckpointableSink(abc.ABC):
    """Mixin for sinks that can report how much they wrote and roll back to that point.

    ``position()`` is awaited at a settle point (the sink flushes first); ``seek(position)``
    discards whatever was written after it, before the restarted pipeline writes again.

    Example::

        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> async def main():
        ...     sink = MemorySink()
        ...     await sink.write_batch([1, 2])
        ...     mark = await sink.position()
        ...     await sink.write_batch([3])
        ...     await sink.seek(mark)
        ...     return sink.items
        >>> trio.run(main)
        [1, 2]
    """

    @abc.abstractmethod
    async def position(self) -> Any:
        """How much was durably written (flush before answering)."""

    @abc.abstractmethod
    async def seek(self, position: Any) -> None:
        """Discard everything written after ``position``."""


@runtime_checkable
class Checkpointable(Protocol):
    """A node whose state is saved in checkpoints.

    ``snapshot()`` is called at a settle point and must return a picklable value that does
    not change afterwards (copy mutable state); ``restore(snapshot)`` is awaited before the
    first item of a restarted run. A node may also define ``begin_checkpointing()``
    (called once when checkpointing is enabled) and ``async checkpoint_committed(snapshot)``
    (called after the checkpoint holding ``snapshot`` is saved).
    """

    def snapshot(self) -> Any: ...

    async def restore(self, snapshot: Any) -> None: ...


@attrs.frozen
class CheckpointRecord:
    """One saved checkpoint (what :meth:`Checkpointer.latest` returns).

    Example::

        >>> record = CheckpointRecord(pipeline="p", seq=1, taken_at=0.0, completed=False,
        ...                           source=10, sink=None, nodes={})
        >>> CheckpointRecord.decode(record.encode()) == record
        True
    """

    pipeline: str
    seq: int
    taken_at: float
    completed: bool
    source: Any
    sink: Any
    nodes: dict[str, Any]

    def encode(self) -> bytes:
        payload = pickle.dumps(
            {
                "format": FORMAT,
                "pipeline": self.pipeline,
                "seq": self.seq,
                "taken_at": self.taken_at,
                "completed": self.completed,
                "source": self.source,
                "sink": self.sink,
                "nodes": self.nodes,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        return _MAGIC + zlib.crc32(payload).to_bytes(4, "big") + payload

    @classmethod
    def decode(cls, raw: bytes) -> CheckpointRecord:
        """Parse a stored record; :class:`CheckpointError` says what is wrong with it."""
        if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + 4:
            raise CheckpointError("not a haive checkpoint record (bad header)")
        checksum = int.from_bytes(raw[len(_MAGIC) : len(_MAGIC) + 4], "big")
        payload = raw[len(_MAGIC) + 4 :]
        if zlib.crc32(payload) != checksum:
            raise CheckpointError("checksum mismatch: the record is damaged")
        try:
            data = pickle.loads(payload)
        except Exception as exc:
            raise CheckpointError(f"cannot unpickle the record: {exc!r}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"unknown checkpoint format {data.get('format')!r}")
        try:
            return cls(
                pipeline=data["pipeline"],
                seq=data["seq"],
                taken_at=data["taken_at"],
                completed=data["completed"],
                source=data["source"],
                sink=data["sink"],
                nodes=data["nodes"],
            )
        except KeyError as exc:
            raise CheckpointError(f"checkpoint record lacks {exc}") from exc


@attrs.define
class CheckpointStats:
    """What a :class:`Checkpointer` did in this process.

    Example::

        >>> CheckpointStats().taken
        0
    """

    taken: int = 0
    restored_seq: int | None = None
    restored_completed: bool = False
    corrupt: int = 0
    last_seconds: float = 0.0


class Checkpointer:
    """Saves and restores a pipeline's checkpoints in a :class:`StateStore`.

    Made by :meth:`StreamingPipeline.enable_checkpointing
    <haive.dataflow.pipelines.streaming_pipeline.StreamingPipeline.enable_checkpointing>` (or
    :meth:`attach`): it wraps the pipeline's source so that, every ``interval`` (trio clock)
    or every ``every`` items, the pipeline settles and a checkpoint is saved; when the input
    ends a last, *completed* checkpoint is saved (``interval`` is in seconds, not
    milliseconds: a number, a :class:`~datetime.timedelta` or ``"5s"``). Start the pipeline again with the same
    store and name to resume after the last checkpoint (``resume=False`` deletes the
    checkpoint and reads the input from its start; keyed state kept in stores stays, use
    ``StateStore.forget`` to clear it too).

    A damaged checkpoint record is moved to the store's dead-letter place with the reason,
    and the run starts from the beginning (no input is lost).

    Example::

        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive.dataflow.state import StateStore
        >>> store = StateStore()
        >>> def build(items):
        ...     pipeline = StreamingPipeline("doubler")
        ...     pipeline.set_source(IterableSource(items))
        ...     pipeline.add_processor(lambda x: 2 * x)
        ...     pipeline.set_sink(MemorySink())
        ...     return pipeline, pipeline.enable_checkpointing(store, every=2)
        >>> async def main():
        ...     first, _ = build([1, 2, 3])
        ...     await first.execute()
        ...     again, checkpointer = build([1, 2, 3, 4])   # the input grew: only 4 is new
        ...     await again.execute()
        ...     return again.sink.items, checkpointer.stats.restored_seq
        >>> trio.run(main)
        ([8], 2)
    """

    def __init__(
        self,
        store: StateStore | StateBackend | str | os.PathLike[str],
        *,
        name: str,
        interval: Duration | None = "5s",
        every: int | None = None,
        resume: bool = True,
        on_checkpoint: Callable[[CheckpointRecord], Awaitable[None] | None] | None = None,
    ) -> None:
        from .store import StateStore

        self.store = store if isinstance(store, StateStore) else StateStore(store)
        self.name = NON_EMPTY_STR.check("Checkpointer", "name", name)
        self.interval = optional_duration("Checkpointer", "interval", interval)
        POSITIVE_INT.optional().check("Checkpointer", "every", every)
        BOOL.check("Checkpointer", "resume", resume)
        if on_checkpoint is not None:
            CALLABLE.check("Checkpointer", "on_checkpoint", on_checkpoint)
        if self.interval is None and every is None:
            raise ConfigError(
                "Checkpointer(interval=None, every=None): give an interval, every=N items, or both"
            )
        self.every = every
        self.resume = resume
        self.on_checkpoint = on_checkpoint
        self.key = f"checkpoint:{name}"
        self.stats = CheckpointStats()
        self.source: CheckpointedSource | None = None
        self.nodes: list[Node] = []
        self.pipeline: StreamingPipeline | None = None
        self._seq = 0
        self._restored = False

    # -- wiring ---------------------------------------------------------------------------
    @classmethod
    def attach(
        cls,
        pipeline: StreamingPipeline,
        store: StateStore | StateBackend | str | os.PathLike[str],
        **options: Any,
    ) -> Checkpointer:
        """Checkpoint ``pipeline`` (its source must be set and checkpointable)."""
        options.setdefault("name", pipeline.name)
        checkpointer = cls(store, **options)
        source = pipeline.source
        if source is None:
            raise ConfigError(
                f"enable_checkpointing on pipeline {pipeline.name!r}: set the source first"
            )
        if isinstance(source, CheckpointedSource):
            raise ConfigError(f"pipeline {pipeline.name!r} is already checkpointed")
        if not isinstance(source, CheckpointableSource):
            raise ConfigError(
                f"pipeline {pipeline.name!r}: source {type(source).__name__} cannot be "
                "checkpointed (it does not implement CheckpointableSource: position/seek)"
            )
        mode = getattr(pipeline.sink, "mode", "ab")
        if isinstance(pipeline.sink, CheckpointableSink) and mode not in ("a", "ab"):
            raise ConfigError(
                f"pipeline {pipeline.name!r}: a checkpointed sink must append (mode='ab'), "
                f"got mode={mode!r}"
            )
        checkpointer.nodes = list(pipeline.nodes)
        checkpointer.pipeline = pipeline
        for node in checkpointer.nodes:
            begin = getattr(node, "begin_checkpointing", None)
            if isinstance(node, Checkpointable) and callable(begin):
                begin()
        wrapper = CheckpointedSource(source, checkpointer)
        checkpointer.source = wrapper
        pipeline.source = wrapper
        return checkpointer

    def _sink(self) -> StreamSink | None:
        return self.pipeline.sink if self.pipeline is not None else None

    # -- records --------------------------------------------------------------------------
    async def latest(self) -> CheckpointRecord | None:
        """The saved checkpoint, or None (a damaged one raises :class:`CheckpointError`)."""
        raw = await self.store.backend.get(self.store.full_key(self.key))
        return None if raw is None else CheckpointRecord.decode(raw)

    async def reset(self) -> bool:
        """Delete the saved checkpoint: the next run starts from the beginning."""
        return await self.store.delete(self.key)

    # -- restore --------------------------------------------------------------------------
    async def restore(self) -> CheckpointRecord | None:
        """Restore nodes, sink and source from the saved checkpoint (once per run)."""
        if self._restored:
            return None
        self._restored = True
        await self.store.open()
        if not self.resume:
            await self.reset()
            return None
        full_key = self.store.full_key(self.key)
        raw = await self.store.backend.get(full_key)
        if raw is None:
            return None
        try:
            record = CheckpointRecord.decode(raw)
        except CheckpointError as exc:
            self.stats.corrupt += 1
            log.warning("checkpoint %r is damaged (%s): starting from the beginning", self.key, exc)
            await self.store.quarantine(self.key, raw, f"damaged checkpoint: {exc}")
            return None
        for node in self.nodes:
            if node.name in record.nodes and isinstance(node, Checkpointable):
                await node.restore(record.nodes[node.name])
        sink = self._sink()
        if isinstance(sink, CheckpointableSink) and record.sink is not None:
            await sink.seek(record.sink)
        assert self.source is not None
        self.source.positional.seek(record.source)
        self._seq = record.seq
        self.stats.restored_seq = record.seq
        self.stats.restored_completed = record.completed
        return record

    # -- taking checkpoints ---------------------------------------------------------------
    async def checkpoint(
        self, *, completed: bool = False, position: Any = None
    ) -> CheckpointRecord:
        """Save a checkpoint now; the caller guarantees the pipeline is settled.

        ``position`` is the source position the settled state corresponds to (default: the
        source's current position).
        """
        started = trio.current_time()
        assert self.source is not None
        # Node state first, sink position after: an output produced in between (a timer
        # closing a window) is then at worst written twice after a crash, never lost.
        snapshots: dict[str, Any] = {
            node.name: node.snapshot() for node in self.nodes if isinstance(node, Checkpointable)
        }
        source_position = self.source.positional.position() if position is None else position
        sink = self._sink()
        sink_position = await sink.position() if isinstance(sink, CheckpointableSink) else None
        self._seq += 1
        record = CheckpointRecord(
            pipeline=self.name,
            seq=self._seq,
            taken_at=time.time(),
            completed=completed,
            source=source_position,
            sink=sink_position,
            nodes=snapshots,
        )
        await self.store.open()
        await self.store.backend.put(self.store.full_key(self.key), record.encode())
        for node in self.nodes:
            committed = getattr(node, "checkpoint_committed", None)
            if node.name in snapshots and callable(committed):
                await committed(snapshots[node.name])
        self.stats.taken += 1
        self.stats.last_seconds = trio.current_time() - started
        if self.on_checkpoint is not None:
            result = self.on_checkpoint(record)
            if result is not None:
                await result
        return record


class CheckpointedSource(DataSource):
    """The source of a checkpointed pipeline: the user's source plus settle-point requests.

    Made by :meth:`Checkpointer.attach`; ``inner`` is the wrapped source. When a checkpoint
    is due it notes the source position and, before the next batch goes in, asks the
    pipeline for an acknowledgment point (an empty batch); the pipeline settles and calls
    :meth:`acknowledge`, which saves the checkpoint. Waiting for the next batch means the
    last checkpoint of a finite input is the *completed* one taken at its end.

    Example: see :class:`Checkpointer`.
    """

    acknowledges = True

    def __init__(self, inner: DataSource, checkpointer: Checkpointer) -> None:
        if not isinstance(inner, CheckpointableSource):
            raise ConfigError(f"source {type(inner).__name__} is not a CheckpointableSource")
        self.inner = inner
        self.positional: CheckpointableSource = inner
        self.checkpointer = checkpointer
        self._exhausted = False
        self._since = 0
        self._due_at = 0.0
        self._due_position: Any = None
        self._settle_position: Any = None

    async def open(self) -> None:
        self._exhausted = False
        await self.inner.open()
        await self.checkpointer.restore()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _due(self) -> bool:
        every = self.checkpointer.every
        if every is not None and self._since >= every:
            return True
        interval = self.checkpointer.interval
        return interval is not None and trio.current_time() >= self._due_at

    def _reset_due(self) -> None:
        self._since = 0
        self._due_at = trio.current_time() + (self.checkpointer.interval or 0.0)

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        self._reset_due()
        every = self.checkpointer.every
        limit = chunk_size if every is None else max(1, min(chunk_size, every))
        async with aclosing(self.inner.batches(limit)) as batches:  # type: ignore[type-var]
            async for batch in batches:
                if batch and self._due_position is not None:
                    # Settle what came before this batch, then checkpoint at its position.
                    self._settle_position, self._due_position = self._due_position, None
                    yield []
                yield batch  # an empty one is the inner source's own acknowledgment request
                self._since += len(batch)
                if self._due_position is None and self._due():
                    self._due_position = self.positional.position()
        self._exhausted = True

    async def reject(self, failed: list[Result]) -> None:
        """Failures go to the wrapped source, which may dead-letter or redeliver them."""
        if self.inner.acknowledges:
            await self.inner.reject(failed)

    async def acknowledge(self, count: int) -> None:
        """Everything read so far is handled: save a checkpoint, then pass the ack on."""
        if self._exhausted:
            await self.checkpointer.checkpoint(completed=True)
            self._reset_due()
        elif self._settle_position is not None:
            position, self._settle_position = self._settle_position, None
            await self.checkpointer.checkpoint(position=position)
            self._reset_due()
        if self.inner.acknowledges:
            await self.inner.acknowledge(count)
