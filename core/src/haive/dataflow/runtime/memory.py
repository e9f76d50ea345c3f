"""Memory accounting: approximate object sizes, the process's RSS, and the memory governor.

``StreamConfig(max_memory_usage="2GB")`` makes a :class:`StreamingPipeline` keep its buffers
and caches under that cap with a :class:`MemoryGovernor`:

* it measures the process's resident memory when the run starts (the interpreter, libraries,
  models already loaded) and shares what is left of the cap, minus a headroom, between the
  result caches (at most half) and the buffers;
* from samples of the items that enter and leave the pipeline it estimates the bytes per item
  and sets every buffer's ``buffer_size`` and ``chunk_size`` so that all buffers and all
  batches in flight fit in the buffers' share;
* as a safety net it reads the resident size before admitting each source batch: above the
  high-water mark caches are shrunk and the pipeline's backpressure strategy applies to the
  input: ``block`` waits until the pipeline has drained, ``drop_newest`` drops the incoming
  batch, ``drop_oldest``/``sliding_window`` drop what is buffered; drops are counted in the
  buffers' ``stats.dropped``. The process never grows past the cap because of buffering.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from ..errors import ConfigError
from .adaptive import concurrency_bound
from .backpressure import BoundedBuffer
from .units import parse_size

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SAMPLE = 8
_CONTAINER_SAMPLE = 64


def approx_sizeof(obj: object, *, depth: int = 6) -> int:
    """Approximate deep size of ``obj`` in bytes (containers, attrs/dataclass objects).

    Large containers are sampled (the first 64 elements, extrapolated); shared objects are
    counted once. Fast enough to call on a few items of every batch.

    Example::

        >>> approx_sizeof(b"x" * 10_000) > 10_000
        True
        >>> approx_sizeof({"text": "a" * 1000, "n": 1}) > 1000
        True
    """
    seen: set[int] = set()

    def size(value: object, level: int) -> int:
        ident = id(value)
        if ident in seen:
            return 0
        seen.add(ident)
        total = sys.getsizeof(value, 64)
        if level <= 0 or isinstance(value, str | bytes | bytearray | int | float | bool):
            return total
        if isinstance(value, Mapping):
            items = list(value.items())
            sample = items[:_CONTAINER_SAMPLE]
            if sample:
                part = sum(size(k, level - 1) + size(v, level - 1) for k, v in sample)
                total += part * len(items) // len(sample)
            return total
        if isinstance(value, list | tuple | set | frozenset):
            elements: Sequence[object] = value if isinstance(value, list | tuple) else list(value)
            head = elements[:_CONTAINER_SAMPLE]
            if head:
                part = sum(size(v, level - 1) for v in head)
                total += part * len(elements) // len(head)
            return total
        fields: Iterable[object] = ()
        cls: Any = type(value)
        if attrs.has(cls):
            fields = (getattr(value, f.name, None) for f in attrs.fields(cls))
        elif hasattr(value, "__dict__"):
            fields = vars(value).values()
        elif hasattr(cls, "__slots__"):
            slots = cls.__slots__
            names = [slots] if isinstance(slots, str) else list(slots)
            fields = (getattr(value, name, None) for name in names)
        for field in fields:
            total += size(field, level - 1)
        return total

    return size(obj, depth)


def current_rss() -> int:
    """Resident memory of this process in bytes (``/proc/self/statm``; 0 if unknown).

    Example::

        >>> current_rss() > 1_000_000
        True
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


#: ``mallopt`` parameter number of glibc's ``M_TRIM_THRESHOLD``.
_M_TRIM_THRESHOLD = -1
#: Free memory a long-running process keeps at the top of its heap (see keep_freed_heap).
KEPT_HEAP_TOP = 32 << 20


def keep_freed_heap(threshold: int = KEPT_HEAP_TOP) -> bool:
    """Let glibc keep up to ``threshold`` bytes of freed heap instead of returning it at once.

    Why: glibc gives the top of the heap back to the kernel as soon as more than 128 KB of
    it is free. A streaming worker allocates and frees the same few hundred KB every batch
    (orjson starts every ``dumps`` in a 1 KB buffer, kept alive with the batch), so each
    batch hands its pages back and faults them in again: about one page fault per encoded
    item, 2 us of an item's 2.3 us in ``orjson.dumps`` on the benchmark machine. Keeping
    32 MB makes the pages stay; the process's resident size can stay up to that much above
    what it uses. Returns whether the setting was applied: not on other C libraries, and
    not when ``MALLOC_TRIM_THRESHOLD_`` is set (the operator's choice wins). ``haive worker``
    calls it at start.

    Example::

        >>> keep_freed_heap() in (True, False)
        True
    """
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") is not None:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): nothing to tune
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, int(threshold)) == 1)


def sample_item_size(
    batch: Sequence[Any], sizeof: Callable[[object], int] = approx_sizeof
) -> float:
    """Average approximate size of up to 8 items spread over ``batch`` (0 for an empty one).

    Example::

        >>> sample_item_size([b"a" * 100] * 50) > 100
        True
    """
    n = len(batch)
    if not n:
        return 0.0
    step = max(1, n // _SAMPLE)
    picks = [batch[i] for i in range(0, n, step)][:_SAMPLE]
    return sum(sizeof(item) for item in picks) / len(picks)


class MemoryGovernor:
    """Keeps a pipeline run's buffers and caches under ``limit`` bytes (see the module doc).

    ``buffers`` are the run's edges, ``nodes_in_flight`` how many batches nodes may hold
    besides the buffers (about two per node, more for parallel executors), ``caches``
    objects with ``max_bytes`` and ``shrink_to(bytes)`` (:class:`~haive.dataflow.runtime.caching.ResultCache`).

    Example::

        >>> buffers = [BoundedBuffer(10_000, name="a.in"), BoundedBuffer(10_000, name="output")]
        >>> governor = MemoryGovernor("400MB", buffers=buffers, baseline=100_000_000)
        >>> governor.observe([b"x" * 100_000] * 10)
        >>> 0 < buffers[0].buffer_size < 10_000
        True
    """

    def __init__(
        self,
        limit: int | str | None,
        *,
        buffers: Sequence[BoundedBuffer[Any]],
        caches: Sequence[Any] = (),
        nodes_in_flight: int = 0,
        strategy: str = "block",
        baseline: int | None = None,
        headroom: float = 0.15,
        wait_drained: Callable[[], Any] | None = None,
        rss: Callable[[], int] = current_rss,
        gc_interval: int = 0,
    ) -> None:
        self.gc_interval = gc_interval
        self._since_gc = 0
        self.capped = limit is not None
        self.limit = parse_size(limit, what="max_memory_usage") if limit is not None else 0
        self.buffers = list(buffers)
        self.caches = list(caches)
        self.strategy = strategy
        self.rss = rss
        self.baseline = rss() if baseline is None else baseline
        self.headroom = max(int(self.limit * headroom), 8 * 2**20)  # at least 8 MiB
        self.budget = self.limit - self.baseline - self.headroom
        if self.capped and self.budget <= 0:
            raise ConfigError(
                f"max_memory_usage is {_mb(self.limit)}, but this process already uses "
                f"{_mb(self.baseline)} and needs {_mb(self.headroom)} of headroom: raise "
                "the cap or start the pipeline in a smaller process"
            )
        self.high_water = self.limit - self.headroom // 2
        #: The sizes each buffer was made with: the governor only ever lowers them.
        self.configured = {id(buf): (buf.buffer_size, buf.chunk_size) for buf in self.buffers}
        self.slots = len(self.buffers) + max(nodes_in_flight, 0)
        self.cache_share = 0
        for cache in self.caches if self.capped else ():
            share = min(cache.max_bytes, self.budget // (2 * len(self.caches)))
            cache.max_bytes = share
            self.cache_share += share
        self.item_size = 0.0
        self.pressure_events = 0
        self.dropped = 0
        self._wait_drained = wait_drained

    @property
    def buffer_budget(self) -> int:
        """Bytes the buffers and batches in flight may take together."""
        return max(self.budget - self.cache_share, 1)

    def buffer_size_for(self, item_size: float) -> int:
        """Items each buffer may hold for items of ``item_size`` bytes."""
        if item_size <= 0:
            return 1 << 30
        return max(1, int(self.buffer_budget / (item_size * max(self.slots, 1))))

    def observe(self, batch: Sequence[Any]) -> None:
        """Update the bytes-per-item estimate from ``batch`` and resize buffers and batches."""
        if not self.capped:
            return
        sample = sample_item_size(batch)
        if sample <= 0:
            return
        # Grow at once, shrink slowly: never under-estimate for long.
        self.item_size = max(sample, self.item_size * 0.98)
        fits = self.buffer_size_for(self.item_size)
        for buf in self.buffers:
            buffer_size, chunk_size = self.configured[id(buf)]
            buf.buffer_size = min(buffer_size, fits)
            buf.chunk_size = min(chunk_size, fits)

    @property
    def buffered_bytes(self) -> int:
        """Estimated bytes held in the buffers now."""
        return int(sum(len(buf) for buf in self.buffers) * self.item_size)

    async def admit(self, batch: list[Any]) -> list[Any]:
        """Called before ``batch`` enters the pipeline; returns what may enter.

        Applies the strategy when the process is above the high-water mark (see module doc).
        With ``gc_interval`` set, runs a collection of the young generations every
        ``gc_interval`` items, so reference cycles are freed at a steady pace.
        """
        if self.gc_interval:
            self._since_gc += len(batch)
            if self._since_gc >= self.gc_interval:
                self._since_gc = 0
                gc.collect(1)
        if not self.capped:
            return batch
        self.observe(batch)
        if self.rss() <= self.high_water:
            return batch
        self.pressure_events += 1
        for cache in self.caches:
            cache.shrink_to(cache.total_bytes // 2)
        gc.collect()
        if self.rss() <= self.high_water:
            return batch
        if self.strategy == "drop_newest":
            self.dropped += len(batch)
            if self.buffers:
                self.buffers[0].stats.dropped += len(batch)
            return []
        if self.strategy in ("drop_oldest", "sliding_window"):
            evicted = sum(len(buf) for buf in self.buffers)
            for buf in self.buffers:
                buf.evict_oldest(len(buf))
            self.dropped += evicted
            return batch
        if self._wait_drained is not None:
            await self._wait_drained()
        else:
            await trio.lowlevel.checkpoint()
        return batch

    def snapshot(self) -> dict[str, Any]:
        """Figures for monitors: limit, baseline, estimate, buffer size, pressure events."""
        return {
            "limit": self.limit,
            "baseline": self.baseline,
            "rss": self.rss(),
            "item_size": self.item_size,
            "buffer_size": min((buf.buffer_size for buf in self.buffers), default=0),
            "buffered_bytes": self.buffered_bytes,
            "cache_bytes": sum(cache.total_bytes for cache in self.caches),
            "pressure_events": self.pressure_events,
            "dropped": self.dropped,
        }


def governor_for_run(run: Any) -> MemoryGovernor | None:
    """The governor a :class:`~haive.dataflow.pipelines.streaming_pipeline.PipelineRun` uses, if any.

    ``None`` unless the pipeline's ``StreamConfig`` sets ``max_memory_usage`` or
    ``gc_interval``. Counts the run's buffers (edges, output, errors, results), the batches
    nodes hold while working (two per node, two more for parallel executors, one for the
    source) and the pipeline's result cache.
    """
    pipeline = run.pipeline
    config = pipeline.config
    if config.max_memory_usage is None and not config.gc_interval:
        return None
    graph = run.graph
    buffers = [*graph.buffers(), run.errors]
    if run.results is not None:
        buffers.append(run.results)
    in_flight = 1
    for node in graph.graph.nodes.values():
        in_flight += 2
        concurrency = concurrency_bound(getattr(node, "concurrency", 1))
        if getattr(node, "executor", "inline") != "inline" or concurrency > 1:
            in_flight += 2
    cache = getattr(pipeline, "cache", None)
    return MemoryGovernor(
        config.max_memory_usage,
        buffers=buffers,
        caches=[cache] if cache is not None else [],
        nodes_in_flight=in_flight,
        strategy=graph.output.strategy.PLUGIN_NAME,
        wait_drained=graph.wait_idle,
        gc_interval=config.gc_interval,
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f}MB"


__all__ = [
    "MemoryGovernor",
    "approx_sizeof",
    "current_rss",
    "governor_for_run",
    "keep_freed_heap",
    "sample_item_size",
]
