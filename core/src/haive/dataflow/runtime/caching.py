"""Result caching: memoize a node's outputs by a key, bounded by size (LRU) and age (TTL).

``pipeline.enable_caching(cache_size="500MB", ttl=300)`` gives a pipeline one
:class:`ResultCache`; every cacheable node (TransformNode, FilterNode, StreamProcessor: one
output per input) looks its items up there before computing, under its own namespace, so
counters exist per node and for the whole cache (:attr:`ResultCache.stats`,
:meth:`ResultCache.stats_for`). A node can also be cached on its own with
:func:`enable_node_caching`.

* Sizes are approximate (:func:`~haive.dataflow.runtime.memory.approx_sizeof` of key and value plus a
  fixed entry overhead); when the total passes ``max_bytes`` the least recently used entries
  are evicted. A value larger than the whole cache is not stored (counted as ``rejected``).
* Ages use trio's clock (:func:`trio.current_time`), so tests can drive them with
  ``MockClock``; an entry is served at most ``ttl`` seconds after it was stored.
* Failures are never cached. Concurrent misses of one key in an async node compute once.
* Nodes running on worker processes or threads are looked up in the trio thread; only the
  misses travel to workers.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from ..errors import ConfigError
from .memory import approx_sizeof
from .nodes import FilterNode, Node, StreamProcessor, TransformNode, is_async_callable
from .units import Duration
from .validation import optional_duration, size

#: Bytes charged per entry besides key and value (dict slot, entry record, LRU links).
ENTRY_OVERHEAD = 200

KeyFunction = Callable[[Any], Hashable]


@attrs.define
class CacheStats:
    """Hit/miss/eviction counters; ``hit_rate`` is hits / look-ups.

    Example::

        >>> CacheStats(hits=3, misses=1).hit_rate
        0.75
    """

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    expirations: int = 0
    rejected: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        """Counters and hit rate, for metrics."""
        return {**attrs.asdict(self), "hit_rate": self.hit_rate}


@attrs.define(slots=True)
class _Entry:
    value: Any
    size: int
    expires: float
    namespace: str | None


class ResultCache:
    """An LRU cache bounded by approximate bytes, with a time-to-live on trio's clock.

    ``max_bytes`` takes sizes like ``"500MB"``; ``ttl`` seconds (not milliseconds), a
    :class:`~datetime.timedelta` or ``"5m"`` (``None``: no expiry). Use it inside trio (the
    clock is trio's) unless ``clock`` is given.

    Example::

        >>> async def main():
        ...     cache = ResultCache("1MB", ttl=60)
        ...     cache.put("a", 1)
        ...     first = cache.get("a")
        ...     await trio.sleep(61)
        ...     return first, cache.get("a"), cache.stats.expirations
        >>> trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        ((True, 1), (False, None), 1)
    """

    def __init__(
        self,
        max_bytes: int | str = "500MB",
        ttl: Duration | None = 300,
        *,
        name: str = "cache",
        sizeof: Callable[[object], int] = approx_sizeof,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.max_bytes = size("ResultCache", "max_bytes", max_bytes)
        self.ttl = optional_duration("ResultCache", "ttl", ttl)
        self.requested_bytes = self.max_bytes
        self.sizeof = sizeof
        self.total_bytes = 0
        self.stats = CacheStats()
        self._clock = clock or trio.current_time
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._expiry: deque[tuple[Hashable, _Entry]] = deque()
        self._namespaces: dict[str, CacheStats] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def stats_for(self, namespace: str) -> CacheStats:
        """Counters of one namespace (a node's name when a pipeline caches nodes)."""
        stats = self._namespaces.get(namespace)
        if stats is None:
            stats = self._namespaces[namespace] = CacheStats()
        return stats

    def _counters(self, namespace: str | None) -> tuple[CacheStats, CacheStats | None]:
        return self.stats, (self.stats_for(namespace) if namespace is not None else None)

    # -- look-up -------------------------------------------------------------------------
    def get(self, key: Hashable, *, namespace: str | None = None) -> tuple[bool, Any]:
        """``(True, value)`` for a live entry (now most recently used), else ``(False, None)``."""
        full = key if namespace is None else (namespace, key)
        entry = self._entries.get(full)
        if entry is not None and self.ttl is not None and entry.expires <= self._clock():
            self._remove(full, entry)
            self._count(namespace, "expirations")
            entry = None
        if entry is None:
            self._count(namespace, "misses")
            return False, None
        self._entries.move_to_end(full)
        self._count(namespace, "hits")
        return True, entry.value

    def put(self, key: Hashable, value: Any, *, namespace: str | None = None) -> bool:
        """Store ``value``; returns False if it is larger than the whole cache (not stored)."""
        full = key if namespace is None else (namespace, key)
        size = self.sizeof(key) + self.sizeof(value) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            self._count(namespace, "rejected")
            return False
        old = self._entries.pop(full, None)
        if old is not None:
            self.total_bytes -= old.size
        now = self._clock()
        expires = now + self.ttl if self.ttl is not None else float("inf")
        entry = _Entry(value, size, expires, namespace)
        self._entries[full] = entry
        self.total_bytes += size
        self._count(namespace, "stores")
        if self.ttl is not None:
            self._expiry.append((full, entry))
            self._expire(now)
        self._evict_to(self.max_bytes)
        return True

    def __contains__(self, key: Hashable) -> bool:
        entry = self._entries.get(key)
        return entry is not None and (self.ttl is None or entry.expires > self._clock())

    # -- bounds --------------------------------------------------------------------------
    def shrink_to(self, max_bytes: int) -> None:
        """Evict least recently used entries until at most ``max_bytes`` are held."""
        self._evict_to(max(0, max_bytes))

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._entries.clear()
        self._expiry.clear()
        self.total_bytes = 0

    def _evict_to(self, limit: int) -> None:
        entries = self._entries
        while self.total_bytes > limit and entries:
            _, entry = entries.popitem(last=False)
            self.total_bytes -= entry.size
            self._count(entry.namespace, "evictions")

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        entries = self._entries
        while expiry:
            full, entry = expiry[0]
            if entries.get(full) is not entry:
                expiry.popleft()  # replaced or evicted since
                continue
            if entry.expires > now:
                break
            expiry.popleft()
            self._remove(full, entry)
            self._count(entry.namespace, "expirations")
        if len(expiry) > 2 * len(entries) + 1000:
            # Many stale records (evicted entries): rebuild from the live ones, in age order.
            live = [(full, e) for full, e in entries.items()]
            live.sort(key=lambda pair: pair[1].expires)
            self._expiry = deque(live)

    def _remove(self, full: Hashable, entry: _Entry) -> None:
        if self._entries.get(full) is entry:
            del self._entries[full]
            self.total_bytes -= entry.size

    def _count(self, namespace: str | None, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if namespace is not None:
            stats = self.stats_for(namespace)
            setattr(stats, counter, getattr(stats, counter) + 1)

    def snapshot(self) -> dict[str, Any]:
        """Size, bounds and counters (global and per namespace), for monitors."""
        return {
            "entries": len(self._entries),
            "bytes": self.total_bytes,
            "max_bytes": self.max_bytes,
            "ttl": self.ttl,
            **self.stats.as_dict(),
            "namespaces": {name: s.as_dict() for name, s in self._namespaces.items()},
        }


# -- keys ---------------------------------------------------------------------------------


def default_key(item: Any) -> Hashable:
    """The item itself when hashable, else a hashable frozen copy of its content.

    Example::

        >>> default_key({"b": [1, 2], "a": 1}) == default_key({"a": 1, "b": [1, 2]})
        True
    """
    try:
        hash(item)
    except TypeError:
        return _freeze(item, 8)
    return item  # type: ignore[no-any-return]


def _freeze(value: Any, depth: int) -> Hashable:
    if depth < 0:
        raise ConfigError("cannot derive a cache key: the item is nested too deeply; pass key=")
    try:
        hash(value)
    except TypeError:
        pass
    else:
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return (
            "__map__",
            frozenset((_freeze(k, depth - 1), _freeze(v, depth - 1)) for k, v in value.items()),
        )
    if isinstance(value, list | tuple):
        return ("__seq__", tuple(_freeze(v, depth - 1) for v in value))
    if isinstance(value, set | frozenset):
        return ("__set__", frozenset(_freeze(v, depth - 1) for v in value))
    if attrs.has(type(value)):
        cls = type(value)
        return (
            cls.__qualname__,
            tuple(_freeze(getattr(value, f.name), depth - 1) for f in attrs.fields(cls)),
        )
    try:
        return ("__pickle__", pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise ConfigError(
            f"cannot derive a cache key for a {type(value).__name__}; pass key= to enable_caching"
        ) from exc


# -- cached functions ---------------------------------------------------------------------


class CachedFunction:
    """Wraps a sync function: look the item's key up in the cache, else compute and store.

    Example::

        >>> calls = []
        >>> def square(x):
        ...     calls.append(x)
        ...     return x * x
        >>> async def main():
        ...     cached = make_cached(square, ResultCache("1MB"), namespace="square")
        ...     return [cached(n) for n in (2, 2, 3)]
        >>> trio.run(main), calls
        ([4, 4, 9], [2, 3])
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        cache: ResultCache,
        *,
        namespace: str,
        key: KeyFunction | None = None,
    ) -> None:
        self.wrapped = fn
        self.cache = cache
        self.namespace = namespace
        self.key = key or default_key
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    @property
    def stats(self) -> CacheStats:
        """This function's counters (its namespace in the cache)."""
        return self.cache.stats_for(self.namespace)

    def lookup(self, item: Any) -> tuple[bool, Hashable, Any]:
        """``(hit, key, value)`` for ``item``."""
        key = self.key(item)
        hit, value = self.cache.get(key, namespace=self.namespace)
        return hit, key, value

    def store(self, key: Hashable, value: Any) -> None:
        self.cache.put(key, value, namespace=self.namespace)

    def __call__(self, item: Any) -> Any:
        hit, key, value = self.lookup(item)
        if hit:
            return value
        value = self.wrapped(item)
        self.store(key, value)
        return value


class AsyncCachedFunction(CachedFunction):
    """The async version; concurrent misses of one key wait for the first computation.

    Example::

        >>> async def double(x):
        ...     return 2 * x
        >>> async def main():
        ...     cached = make_cached(double, ResultCache("1MB"), namespace="double")
        ...     return [await cached(1), await cached(1)], cached.stats.hits
        >>> trio.run(main)
        ([2, 2], 1)
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        cache: ResultCache,
        *,
        namespace: str,
        key: KeyFunction | None = None,
    ) -> None:
        super().__init__(fn, cache, namespace=namespace, key=key)
        self._in_flight: dict[Hashable, trio.Event] = {}

    async def __call__(self, item: Any) -> Any:
        while True:
            hit, key, value = self.lookup(item)
            if hit:
                return value
            running = self._in_flight.get(key)
            if running is None:
                break
            await running.wait()  # then look again: stored, or failed and we compute
        done = self._in_flight[key] = trio.Event()
        try:
            value = await self.wrapped(item)
            self.store(key, value)
            return value
        finally:
            del self._in_flight[key]
            done.set()


def make_cached(
    fn: Callable[[Any], Any],
    cache: ResultCache,
    *,
    namespace: str,
    key: KeyFunction | None = None,
) -> CachedFunction:
    """Wrap ``fn`` (sync or async; an existing wrapper is replaced, not stacked)."""
    fn, _ = unwrap_cached(fn)
    cls = AsyncCachedFunction if is_async_callable(fn) else CachedFunction
    return cls(fn, cache, namespace=namespace, key=key)


def unwrap_cached(fn: Callable[[Any], Any]) -> tuple[Callable[[Any], Any], CachedFunction | None]:
    """``(original function, wrapper)``, or ``(fn, None)`` if ``fn`` is not cached.

    Example::

        >>> unwrap_cached(abs)
        (<built-in function abs>, None)
    """
    if isinstance(fn, CachedFunction):
        return fn.wrapped, fn
    return fn, None


_CACHEABLE_ATTRIBUTE: dict[type[Node], str] = {
    TransformNode: "transform_fn",
    FilterNode: "filter_fn",
    StreamProcessor: "process",
}


def _attribute_of(node: Node) -> str | None:
    for cls, attribute in _CACHEABLE_ATTRIBUTE.items():
        if isinstance(node, cls):
            return attribute
    return None


def enable_node_caching(
    node: Node, cache: ResultCache, *, key: KeyFunction | None = None
) -> CachedFunction:
    """Cache ``node``'s per-item results in ``cache`` (namespace: the node's name).

    Example::

        >>> node = TransformNode(name="inc", transform_fn=lambda x: x + 1)
        >>> cached = enable_node_caching(node, ResultCache("1MB"))
        >>> from haive.dataflow.runtime.nodes import NodeContext
        >>> async def main():
        ...     await node.process_batch([1, 1, 2], NodeContext("inc"))
        ...     return cached.stats.hits, cached.stats.misses
        >>> trio.run(main)
        (1, 2)
    """
    attribute = _attribute_of(node)
    if attribute is None:
        raise ConfigError(
            f"node {node.name!r} ({type(node).__name__}) cannot be cached: only TransformNode, "
            "FilterNode and StreamProcessor nodes compute one output per input"
        )
    wrapper = make_cached(getattr(node, attribute), cache, namespace=node.name, key=key)
    setattr(node, attribute, wrapper)
    return wrapper


@attrs.frozen
class CacheSettings:
    """What ``enable_caching(cache_size, ttl, nodes=, key=)`` asked for.

    ``nodes=None`` caches every cacheable node; ``key`` is one function for all nodes or a
    mapping from node name to function.

    Example::

        >>> CacheSettings(cache_size="500MB", ttl=300).make_cache().max_bytes
        500000000
    """

    cache_size: int | str = "500MB"
    ttl: Duration | None = 300
    nodes: tuple[str, ...] | None = None
    key: KeyFunction | Mapping[str, KeyFunction] | None = None

    def make_cache(self, name: str = "cache") -> ResultCache:
        return ResultCache(self.cache_size, self.ttl, name=name)


def apply_caching(
    nodes: Sequence[Node],
    cache: ResultCache,
    *,
    names: Iterable[str] | None = None,
    key: KeyFunction | Mapping[str, KeyFunction] | None = None,
) -> list[str]:
    """Cache the named nodes (default: every cacheable one); returns the names cached.

    Example::

        >>> nodes = [TransformNode(name="a", transform_fn=abs)]
        >>> apply_caching(nodes, ResultCache("1MB"), names=["b"])
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: enable_caching: unknown node(s) b; nodes are: a
    """
    by_name = {node.name: node for node in nodes}
    if names is not None:
        wanted = list(names)
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise ConfigError(
                f"enable_caching: unknown node(s) {', '.join(unknown)}; "
                f"nodes are: {', '.join(by_name) or '(none)'}"
            )
        selected = [by_name[name] for name in wanted]
    else:
        selected = [node for node in nodes if _attribute_of(node) is not None]
    if isinstance(key, Mapping):
        stray = [name for name in key if name not in by_name]
        if stray:
            raise ConfigError(f"enable_caching: key= names unknown node(s) {', '.join(stray)}")
    cached: list[str] = []
    for node in selected:
        node_key = key.get(node.name) if isinstance(key, Mapping) else key
        enable_node_caching(node, cache, key=node_key)
        cached.append(node.name)
    return cached


__all__ = [
    "AsyncCachedFunction",
    "CacheSettings",
    "CacheStats",
    "CachedFunction",
    "ResultCache",
    "apply_caching",
    "default_key",
    "enable_node_caching",
    "make_cached",
    "unwrap_cached",
]
