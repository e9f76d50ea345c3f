"""StateStore: typed keyed state over any registered backend (memory, SQLite, Redis...)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

import attrs
import orjson
import trio

from ..errors import ConfigError, PluginError, SerializationError, UnknownPluginError
from ..io._resource import AsyncResource
from ..io.sinks import StreamSink
from ..runtime.convert import get_converter
from ..runtime.units import Duration
from ..runtime.validation import duration, one_of, optional_duration
from .backend import StateBackend, StateWrite

T = TypeVar("T")

#: Backend keys of quarantined records start with this (never inside a store's namespace).
DEAD_LETTER_PREFIX = "__dead_letter__:"
ON_CORRUPT = ("dead_letter", "raise")


class CorruptStateError(SerializationError):
    """A stored record cannot be decoded into the type asked for.

    Example::

        >>> str(CorruptStateError("user:1", "invalid JSON"))
        "corrupt state record 'user:1': invalid JSON"
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt state record {key!r}: {reason}")
        self.key = key
        self.reason = reason


@attrs.frozen
class StateDeadLetter:
    """A quarantined state record: where it was, why it was rejected, and its raw bytes.

    Example::

        >>> letter = StateDeadLetter("app", "user:1", "invalid JSON", b"{oops", 0.0)
        >>> StateDeadLetter.from_json(letter.to_json()) == letter
        True
    """

    namespace: str
    key: str
    reason: str
    raw: bytes
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "key": self.key,
            "reason": self.reason,
            "raw_base64": base64.b64encode(self.raw).decode("ascii"),
            "at": self.at,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> StateDeadLetter:
        record = orjson.loads(data)
        return cls(
            record["namespace"],
            record["key"],
            record["reason"],
            base64.b64decode(record["raw_base64"]),
            record["at"],
        )


@attrs.define
class StateStoreStats:
    """Counters of one :class:`StateStore`.

    Example::

        >>> StateStoreStats().corrupt
        0
    """

    reads: int = 0
    writes: int = 0
    corrupt: int = 0


def state_backend_classes() -> dict[str, type[StateBackend]]:
    """URL scheme -> registered backend class; two backends claiming a scheme is an error."""
    from ..plugins.registry import get_registry

    by_scheme: dict[str, type[StateBackend]] = {}
    for provided in get_registry().provided():
        if provided.kind != "state_backend":
            continue
        for scheme in getattr(provided.cls, "URL_SCHEMES", ()):
            other = by_scheme.get(scheme)
            if other is not None and other is not provided.cls:
                raise PluginError(
                    f"URL scheme {scheme!r} is served by two state backends: "
                    f"{other.__qualname__} and {provided.cls.__qualname__}; uninstall one"
                )
            by_scheme[scheme] = provided.cls
    return by_scheme


def resolve_backend(
    spec: StateBackend | str | os.PathLike[str] | None, **options: Any
) -> StateBackend:
    """The backend for ``spec``: a backend, a URL (by scheme), a file path (SQLite) or None.

    Example::

        >>> type(resolve_backend(None)).__name__, type(resolve_backend("memory://")).__name__
        ('MemoryStateBackend', 'MemoryStateBackend')
        >>> type(resolve_backend("/tmp/state.db")).__name__
        'SQLiteStateBackend'
    """
    if isinstance(spec, StateBackend):
        if options:
            raise ConfigError(f"StateStore: options {sorted(options)} need a URL, not a backend")
        return spec
    if spec is None:
        spec = "memory://"
    if not isinstance(spec, str | os.PathLike):
        raise ConfigError(
            f"StateStore: expected a URL, a path or a StateBackend, got {type(spec).__name__} {spec!r}"
        )
    text = os.fspath(spec)
    if "://" not in text:
        from .sqlite import SQLiteStateBackend

        return SQLiteStateBackend(text, **options)
    scheme = text.split("://", 1)[0].lower()
    backends = state_backend_classes()
    cls = backends.get(scheme)
    if cls is None:
        from ..plugins.catalogue import provider_of

        # Plugins declare their backends by name; a URL scheme is that name, its TLS form
        # (rediss://) or a variant of it (redis+cluster://).
        base = scheme.split("+", 1)[0]
        candidates = (scheme, base, base.removesuffix("s"))
        package = next(filter(None, (provider_of("state_backend", c) for c in candidates)), None)
        known = ", ".join(f"{s}://" for s in sorted(backends)) or "(none)"
        hint = (
            f" {scheme}:// state is provided by {package}: pip install {package}"
            if package is not None
            else ""
        )
        raise UnknownPluginError(
            f"StateStore: no state backend serves {scheme}:// URLs.{hint} "
            f"Installed schemes: {known}."
        )
    return cls.from_url(text, **options)


def _plain(value: Any) -> Any:
    """orjson's fallback for values it cannot encode itself (attrs classes, sets...)."""
    plain = get_converter().unstructure(value)
    if isinstance(plain, set | frozenset):
        return list(plain)
    if plain is value:
        raise TypeError(f"cannot store a {type(value).__name__} as state")
    return plain


class StateStore(AsyncResource):
    """Typed keyed state: get/put/delete/scan by prefix, TTLs and atomic updates.

    ``StateStore()`` keeps state in memory; ``StateStore("state.db")`` or
    ``StateStore("sqlite:///state.db")`` in SQLite; ``StateStore("redis://127.0.0.1:6379")``
    in whichever installed backend serves the URL's scheme (Redis: install the Redis plugin).
    Values are stored as JSON after the core's cattrs converter unstructures them (attrs
    classes, datetimes...); pass ``cls`` to read them back as that type. Keys live under
    ``namespace``; TTLs are in seconds (not milliseconds): a number, a
    :class:`~datetime.timedelta` or a string like ``"30m"``.

    A stored record that cannot be decoded is a *corrupt* record: by default it is moved to
    the dead-letter place with the reason (``on_corrupt="dead_letter"``; the ``dead_letter``
    sink if one is given, else the same backend, see :meth:`dead_letters`) and reads as
    absent, so processing continues; ``on_corrupt="raise"`` raises
    :class:`CorruptStateError` instead.

    Example::

        >>> import attrs
        >>> @attrs.define
        ... class Visits:
        ...     user: str
        ...     count: int = 0
        >>> async def main():
        ...     async with StateStore(namespace="demo") as store:
        ...         await store.put("visits:ada", Visits("ada", 1), ttl="1h")
        ...         def bump(v):
        ...             v.count += 1
        ...             return v
        ...         await store.update("visits:ada", bump, Visits)
        ...         return await store.get("visits:ada", Visits), await store.scan("visits:")
        >>> trio.run(main)
        (Visits(user='ada', count=2), [('visits:ada', {'user': 'ada', 'count': 2})])
    """

    def __init__(
        self,
        url_or_backend: StateBackend | str | os.PathLike[str] | None = None,
        *,
        namespace: str = "haive",
        default_ttl: Duration | None = None,
        on_corrupt: str = "dead_letter",
        dead_letter: StreamSink | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(namespace, str) or namespace.startswith(DEAD_LETTER_PREFIX.rstrip(":")):
            raise ConfigError(f"StateStore: invalid namespace {namespace!r}")
        one_of(*ON_CORRUPT).check("StateStore", "on_corrupt", on_corrupt)
        if dead_letter is not None and not isinstance(dead_letter, StreamSink):
            raise ConfigError(f"StateStore: dead_letter must be a StreamSink, got {dead_letter!r}")
        self._owns_backend = not isinstance(url_or_backend, StateBackend)
        self.backend = resolve_backend(url_or_backend, **options)
        self.namespace = namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self.default_ttl = optional_duration("StateStore", "default_ttl", default_ttl)
        self.on_corrupt = on_corrupt
        self.dead_letter = dead_letter
        self.stats = StateStoreStats()
        self._opened = False
        self._open_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"StateStore({type(self.backend).__name__}, namespace={self.namespace!r})"

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect the backend (done on first use if not called)."""
        async with self._open_lock:
            if not self._opened:
                await self.backend.open()
                self._opened = True

    async def aclose(self) -> None:
        """Close the backend if this store created it."""
        if self._opened and self._owns_backend:
            self._opened = False
            await self.backend.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled ``async with`` block still closes the backend.
        with trio.CancelScope(shield=True):
            await self.aclose()

    async def _backend(self) -> StateBackend:
        if not self._opened:
            await self.open()
        return self.backend

    # -- encoding -------------------------------------------------------------------------
    def full_key(self, key: str) -> str:
        """The backend key of ``key`` (``namespace:key``)."""
        if not isinstance(key, str):
            raise ConfigError(f"state keys are strings, got {type(key).__name__} {key!r}")
        return self._prefix + key

    def _ttl(self, ttl: Duration | None, default: float | None) -> float | None:
        if ttl is None:
            return default
        return duration("StateStore", "ttl", ttl)

    def encode(self, value: Any) -> bytes:
        """The bytes stored for ``value`` (JSON of its unstructured form)."""
        try:
            return orjson.dumps(value, default=_plain)
        except TypeError as exc:
            raise SerializationError(
                f"StateStore: cannot encode {type(value).__name__}: {exc}"
            ) from exc

    def decode_raw(self, key: str, raw: bytes, cls: type[Any] | None = None) -> Any:
        """Decode ``raw`` (read under ``key``); :class:`CorruptStateError` when impossible."""
        try:
            plain = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorruptStateError(key, f"invalid JSON: {exc}") from exc
        if cls is None:
            return plain
        try:
            return get_converter().structure(plain, cls)
        except Exception as exc:
            from ..runtime.convert import describe_structure_error

            reason = (
                f"not a valid {getattr(cls, '__name__', cls)}: {describe_structure_error(exc, cls)}"
            )
            raise CorruptStateError(key, reason) from exc

    async def decode(self, key: str, raw: bytes | None, cls: type[Any] | None = None) -> Any:
        """Decode a record read under ``key``; a corrupt one is quarantined (or raises)."""
        if raw is None:
            return None
        try:
            return self.decode_raw(key, raw, cls)
        except CorruptStateError as exc:
            await self.quarantine(key, raw, exc.reason)
            return None

    async def quarantine(self, key: str, raw: bytes, reason: str) -> None:
        """Move the record ``key`` (whose bytes are ``raw``) to the dead-letter place."""
        self.stats.corrupt += 1
        if self.on_corrupt == "raise":
            raise CorruptStateError(key, reason)
        letter = StateDeadLetter(self.namespace, key, reason, raw, time.time())
        backend = await self._backend()
        if self.dead_letter is not None:
            await self.dead_letter.write_batch([letter.to_dict()])
        else:
            await backend.put(f"{DEAD_LETTER_PREFIX}{self._prefix}{key}", letter.to_json())
        # Remove it unless someone rewrote it meanwhile.
        await backend.update(self.full_key(key), lambda old: None if old == raw else old)

    async def dead_letters(self) -> list[StateDeadLetter]:
        """Records of this namespace quarantined in the backend (not those sent to a sink)."""
        backend = await self._backend()
        return [
            StateDeadLetter.from_json(raw)
            for _, raw in await backend.scan(f"{DEAD_LETTER_PREFIX}{self._prefix}")
        ]

    # -- reading --------------------------------------------------------------------------
    @overload
    async def get(self, key: str) -> Any: ...
    @overload
    async def get(self, key: str, cls: type[T], *, default: T | None = None) -> T | None: ...
    async def get(self, key: str, cls: type[Any] | None = None, *, default: Any = None) -> Any:
        """The value of ``key`` (as ``cls`` when given), or ``default`` when absent."""
        backend = await self._backend()
        self.stats.reads += 1
        raw = await backend.get(self._prefix + key if type(key) is str else self.full_key(key))
        if raw is None:
            return default
        value = await self.decode(key, raw, cls)
        return default if value is None else value

    async def get_many(self, keys: Iterable[str], cls: type[Any] | None = None) -> dict[str, Any]:
        """``{key: value}`` for the keys that exist, in one backend round trip."""
        keys = list(keys)
        backend = await self._backend()
        self.stats.reads += len(keys)
        raws = await backend.get_many([self.full_key(k) for k in keys])
        out: dict[str, Any] = {}
        for key, raw in zip(keys, raws, strict=True):
            if raw is not None:
                value = await self.decode(key, raw, cls)
                if value is not None:
                    out[key] = value
        return out

    async def scan(self, prefix: str = "", cls: type[Any] | None = None) -> list[tuple[str, Any]]:
        """``(key, value)`` of every live key starting with ``prefix``, sorted by key."""
        backend = await self._backend()
        cut = len(self._prefix)
        out: list[tuple[str, Any]] = []
        for full, raw in await backend.scan(self.full_key(prefix)):
            key = full[cut:]
            value = await self.decode(key, raw, cls)
            if value is not None:
                out.append((key, value))
        self.stats.reads += len(out)
        return out

    async def keys(self, prefix: str = "") -> list[str]:
        """Every live key starting with ``prefix``, sorted."""
        backend = await self._backend()
        cut = len(self._prefix)
        return [full[cut:] for full, _ in await backend.scan(self.full_key(prefix))]

    # -- writing --------------------------------------------------------------------------
    async def put(self, key: str, value: Any, *, ttl: Duration | None = None) -> None:
        """Store ``value`` under ``key``; with ``ttl`` (or the store's ``default_ttl``) it expires."""
        # Open: no extra coroutine per write (64 writers put 100,000 values a second).
        backend = self.backend if self._opened else await self._backend()
        self.stats.writes += 1
        await backend.put(
            self._prefix + key if type(key) is str else self.full_key(key),
            self.encode(value),
            ttl=self.default_ttl if ttl is None else self._ttl(ttl, None),
        )

    async def put_many(self, values: Mapping[str, Any], *, ttl: Duration | None = None) -> None:
        """Store several values in one backend call (atomically where the backend can)."""
        seconds = self._ttl(ttl, self.default_ttl)
        writes: list[StateWrite] = [
            (self.full_key(k), self.encode(v), seconds) for k, v in values.items()
        ]
        await self.write_raw(writes)

    async def write_raw(self, writes: list[StateWrite]) -> None:
        """Apply already-encoded ``(backend key, bytes or None, ttl)`` writes in one call."""
        if writes:
            backend = await self._backend()
            self.stats.writes += len(writes)
            await backend.write_batch(writes)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        backend = await self._backend()
        self.stats.writes += 1
        return await backend.delete(self.full_key(key))

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        cls: type[Any] | None = None,
        *,
        ttl: Duration | None = None,
    ) -> Any:
        """Atomically replace the value with ``fn(old)`` (``old`` is None when absent).

        ``fn`` returning None deletes the key. ``fn`` must not have side effects: a backend
        may call it again when it retries an optimistic transaction. A corrupt old value is
        quarantined and ``fn`` sees None. Returns the new value.
        """
        backend = await self._backend()
        seconds = self._ttl(ttl, self.default_ttl)
        corrupt: list[tuple[bytes, str]] = []
        result: list[Any] = [None]

        def apply(raw: bytes | None) -> bytes | None:
            old = None
            corrupt.clear()
            if raw is not None:
                try:
                    old = self.decode_raw(key, raw, cls)
                except CorruptStateError as exc:
                    if self.on_corrupt == "raise":
                        raise
                    corrupt.append((raw, exc.reason))
            new = fn(old)
            result[0] = new
            return None if new is None else self.encode(new)

        self.stats.writes += 1
        try:
            await backend.update(self.full_key(key), apply, ttl=seconds)
        except CorruptStateError as exc:
            self.stats.corrupt += 1
            raise CorruptStateError(key, exc.reason) from exc
        for raw, reason in corrupt:
            self.stats.corrupt += 1
            letter = StateDeadLetter(self.namespace, key, reason, raw, time.time())
            if self.dead_letter is not None:
                await self.dead_letter.write_batch([letter.to_dict()])
            else:
                await backend.put(f"{DEAD_LETTER_PREFIX}{self._prefix}{key}", letter.to_json())
        return result[0]

    async def forget(self, key_prefix: str) -> int:
        """Delete every key starting with ``key_prefix`` (e.g. all state of one user)."""
        backend = await self._backend()
        return await backend.delete_prefix(self.full_key(key_prefix))
