"""StatefulProcessor: user logic that reads and writes the state of each item's key."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from ..errors import ConfigError
from ..runtime.nodes import NODE_ON_ERROR, NODE_RETRY, Node, NodeContext, is_async_callable
from ..runtime.retry import RetryPolicy
from ..runtime.units import Duration, parse_duration
from ..runtime.validation import NON_EMPTY_STR, optional_duration
from .backend import StateBackend, StateWrite
from .fields import FieldGetter
from .store import StateStore

S = TypeVar("S")

_Pending = tuple[bytes | None, float | None]


@attrs.define(eq=False)
class KeyedState(Generic[S]):
    """The state of one key, handed to :meth:`StatefulProcessor.process`.

    Read or assign ``value`` (mutating it in place is fine too: it is written back after the
    batch); ``clear()`` deletes it; ``set(value, ttl=...)`` gives it an expiry (seconds, not
    milliseconds: a number, a :class:`~datetime.timedelta` or a string such as ``"30m"``).

    Example::

        >>> state = KeyedState("ada", 1)
        >>> state.value += 1
        >>> state.value, state.exists
        (2, True)
        >>> state.clear(); state.value, state.exists
        (None, False)
    """

    key: str
    value: S | None = None
    ttl: float | None = None
    cleared: bool = False

    @property
    def exists(self) -> bool:
        return self.value is not None

    def get(self, default: S | None = None) -> S | None:
        return default if self.value is None else self.value

    def set(self, value: S, *, ttl: Duration | None = None) -> None:
        self.value = value
        self.cleared = False
        if ttl is not None:
            self.ttl = parse_duration(ttl, what=f"state of {self.key!r}: ttl")

    def clear(self) -> None:
        self.value = None
        self.cleared = True


class StatefulProcessor(Node, Generic[S]):
    """A node whose ``process(item, state)`` reads and writes the state of the item's key.

    ``key`` names the field (or gives a function) that partitions items; each key's state is
    stored in ``store`` (a :class:`StateStore`, URL or path; in memory by default) under
    ``"<node name>:<key>"``, typed as ``state_type`` when given. Override
    :meth:`initial_state` to start keys with a value; return ``None`` from :meth:`process`
    to emit nothing. Per batch, the states of all its keys are read in one round trip and
    written back in one. Items of one key are processed in order.

    In a checkpointed pipeline the writes are held back and saved together with the
    checkpoint, so that after a crash the state matches the replayed input exactly.

    Example: a running count per user::

        >>> import trio
        >>> class CountPerUser(StatefulProcessor):
        ...     def initial_state(self, key):
        ...         return 0
        ...     def process(self, item, state):
        ...         state.value += 1
        ...         return {"user": item["user"], "seen": state.value}
        >>> counter = CountPerUser(key="user")
        >>> batch = [{"user": "ada"}, {"user": "bob"}, {"user": "ada"}]
        >>> trio.run(counter.process_batch, batch, NodeContext("count"))
        [{'user': 'ada', 'seen': 1}, {'user': 'bob', 'seen': 1}, {'user': 'ada', 'seen': 2}]
    """

    #: The type states are read as (None: plain JSON values).
    state_type: ClassVar[type[Any] | None] = None

    def __init__(
        self,
        name: str | None = None,
        *,
        store: StateStore | StateBackend | str | os.PathLike[str] | None = None,
        key: str | Callable[[Any], Hashable] = "key",
        state_type: type[S] | None = None,
        ttl: Duration | None = None,
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name or type(self).__name__
        owner = type(self).__name__
        NON_EMPTY_STR.check(owner, "name", self.name)
        self.on_error = NODE_ON_ERROR.check(owner, "on_error", on_error)
        self.retry = NODE_RETRY.check(owner, "retry", retry)
        self._owns_store = not isinstance(store, StateStore)
        self.store = store if isinstance(store, StateStore) else StateStore(store)
        self.key_field = FieldGetter(key)
        self.type: type[Any] | None = state_type if state_type is not None else self.state_type
        self.ttl = optional_duration(owner, "ttl", ttl)
        self._deferred = False
        self._pending: dict[str, _Pending] = {}
        if type(self).process is StatefulProcessor.process:
            raise ConfigError(f"{type(self).__name__} must implement process(item, state)")
        self._async = is_async_callable(self.process)

    # -- user hooks -----------------------------------------------------------------------
    def initial_state(self, key: str) -> S | None:
        """The value of a key that has no state yet (default None)."""
        return None

    def process(self, item: Any, state: KeyedState[S]) -> Any:
        """Handle one item with its key's state; return the output or None (sync or async)."""
        raise NotImplementedError

    def state_key(self, key: str) -> str:
        """Where the state of ``key`` lives in the store."""
        return f"{self.name}:{key}"

    # -- running --------------------------------------------------------------------------
    async def open(self) -> None:
        await self.store.open()

    async def aclose(self) -> None:
        if self._owns_store:
            await self.store.aclose()

    async def read_states(self, keys: list[str]) -> dict[str, Any]:
        """The current states of ``keys`` (including writes not yet checkpointed)."""
        store = self.store
        found: dict[str, Any] = {}
        missing: list[str] = []
        for key in keys:
            pending = self._pending.get(self.state_key(key))
            if pending is None:
                missing.append(key)
            elif pending[0] is not None:
                found[key] = store.decode_raw(self.state_key(key), pending[0], self.type)
        if missing:
            raws = await store.backend.get_many(
                [store.full_key(self.state_key(k)) for k in missing]
            )
            for key, raw in zip(missing, raws, strict=True):
                if raw is not None:
                    value = await store.decode(self.state_key(key), raw, self.type)
                    if value is not None:
                        found[key] = value
        return found

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        items: list[Any] = []
        keys: list[str] = []
        for item in batch:
            try:
                keys.append(str(self.key_field(item)))
            except Exception as exc:
                await ctx.fail(item, exc)
                continue
            items.append(item)
        if not items:
            return []
        await self.store.open()
        distinct = list(dict.fromkeys(keys))
        states = await self.read_states(distinct)
        handles: dict[str, KeyedState[S]] = {}
        for key in distinct:
            value = states[key] if key in states else self.initial_state(key)
            handles[key] = KeyedState(key, value, self.ttl)
        out: list[Any] = []
        process = self.process
        is_async = self._async
        for item, key in zip(items, keys, strict=True):
            handle = handles[key]
            try:
                result = await process(item, handle) if is_async else process(item, handle)
            except Exception as exc:

                def again(it: Any, handle: KeyedState[S] = handle) -> Any:
                    return process(it, handle)

                ok, result = await ctx.recover(again, item, exc, is_async=is_async)
                if not ok:
                    continue
            if result is not None:
                out.append(result)
        await self._write_back(handles.values())
        return out

    async def _write_back(self, handles: Any) -> None:
        store = self.store
        writes: list[StateWrite] = []
        for handle in handles:
            full = store.full_key(self.state_key(handle.key))
            if handle.value is not None:
                writes.append((full, store.encode(handle.value), handle.ttl))
            elif handle.cleared:
                writes.append((full, None, None))
        if self._deferred:
            cut = len(store.full_key(""))
            for full, value, ttl in writes:
                self._pending[full[cut:]] = (value, ttl)
        else:
            await store.write_raw(writes)

    # -- checkpoints ----------------------------------------------------------------------
    def begin_checkpointing(self) -> None:
        """Hold writes back until a checkpoint saves them together with the source position."""
        self._deferred = True

    def snapshot(self) -> dict[str, _Pending]:
        """The writes since the last checkpoint (they are applied once it is saved)."""
        return dict(self._pending)

    async def checkpoint_committed(self, snapshot: dict[str, _Pending]) -> None:
        await self._apply(snapshot)
        for key, pending in snapshot.items():
            if self._pending.get(key) is pending:
                del self._pending[key]

    async def restore(self, snapshot: dict[str, _Pending]) -> None:
        # The checkpoint was saved but the crash may have come before these reached the
        # store: applying them again is idempotent.
        self._pending.clear()
        await self._apply(snapshot)

    async def _apply(self, pending: dict[str, _Pending]) -> None:
        store = self.store
        await store.write_raw(
            [(store.full_key(key), value, ttl) for key, (value, ttl) in pending.items()]
        )
