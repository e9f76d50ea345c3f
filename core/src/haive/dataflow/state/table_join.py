"""TableJoinNode: a stream-table join, the table built from a changelog stream.

The *table* side is a changelog: each of its items sets the latest value of its key (a
value of None deletes the key). The *stream* side is looked up in the table as it arrives
and emitted as a :class:`~haive.dataflow.state.JoinResult` ``(key, stream item, table
value)``. The table is kept in a :class:`~haive.dataflow.state.StateStore` (in memory unless
given; a SQLite or Redis store keeps it over a restart: the node reads it back when it
opens), with an in-memory copy for the lookups. The two sides reach the node as those of a
:class:`~haive.dataflow.state.JoinNode` do: by predecessor or by a ``side`` field.

This is processing-order semantics, as Kafka Streams' KStream-KTable join: a stream item
sees the table as the changelog items that arrived before it left it.

Example::

    >>> import trio
    >>> from haive.dataflow.runtime.nodes import NodeContext
    >>> join = TableJoinNode(name="enrich", key="user", side="kind", left="click",
    ...                      right="profile", table_value="country")
    >>> events = [
    ...     {"kind": "profile", "user": "ada", "country": "UK"},
    ...     {"kind": "click", "user": "ada", "page": "/"},
    ...     {"kind": "click", "user": "bob", "page": "/x"},
    ... ]
    >>> async def main():
    ...     async with join.store:
    ...         await join.open()
    ...         return await join.process_batch(events, NodeContext("enrich"))
    >>> [(r.key, r.left["page"], r.right) for r in trio.run(main)]
    [('ada', '/', 'UK')]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Self

import attrs

from ..errors import ConfigError, GraphError
from ..runtime.nodes import NODE_ON_ERROR, NODE_RETRY, Node, NodeContext
from ..runtime.retry import RetryPolicy
from ..runtime.validation import NON_EMPTY_STR, one_of
from .backend import StateBackend, StateWrite
from .fields import FieldGetter
from .join_specs import JoinResult
from .store import StateStore

Field = str | Callable[[Any], Any]
StoreSpec = StateStore | StateBackend | str | os.PathLike[str] | None


def _store(value: StoreSpec) -> StateStore:
    return value if isinstance(value, StateStore) else StateStore(value)


def table_key(key: Any) -> str:
    """The store key of a table key: strings as they are, anything else as ``str(key)``."""
    return key if isinstance(key, str) else str(key)


@attrs.define(eq=False)
class TableJoinNode(Node):
    """Joins a stream (``left``) with the latest value per key of a changelog (``right``).

    ``key`` reads the key of both sides (``table_key`` when the changelog names it
    differently); ``table_value`` the value a changelog item sets (None: the item itself; a
    value of None deletes the key). ``how="inner"`` drops stream items whose key is not in
    the table, ``how="left"`` emits them with ``right=None``. Changelog items are not
    emitted. ``store`` (a StateStore, a backend, a path or URL; in memory by default) keeps
    the table under ``prefix`` (default ``"table:<name>:"``); values are stored as JSON, read
    back as ``value_type`` when given. Keys are strings in the store (``str(key)``).

    Example: see :mod:`haive.dataflow.state.table_join`.
    """

    PLUGIN_NAME: ClassVar[str] = "table_join"
    name: str = attrs.field(validator=NON_EMPTY_STR)
    key: Field | None = None
    how: str = attrs.field(default="inner", validator=one_of("inner", "left"))
    left: Hashable = "stream"
    right: Hashable = "table"
    side: Field | None = None
    table_key: Field | None = None
    table_value: Field | None = None
    store: StateStore = attrs.field(default=None, converter=_store)
    prefix: str | None = None
    value_type: type[Any] | None = None
    on_error: str | None = attrs.field(default=None, validator=NODE_ON_ERROR)
    retry: RetryPolicy | None = attrs.field(default=None, validator=NODE_RETRY)
    updates: int = attrs.field(init=False, default=0)
    misses: int = attrs.field(init=False, default=0)
    _table: dict[str, Any] = attrs.field(init=False, factory=dict)
    _keys: tuple[FieldGetter, FieldGetter] = attrs.field(init=False)
    _value: FieldGetter = attrs.field(init=False)
    _side: FieldGetter | None = attrs.field(init=False, default=None)
    _loaded: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        if self.left == self.right:
            raise ConfigError(
                f"TableJoinNode {self.name!r}: left and right must differ, both are {self.left!r}"
            )
        if self.prefix is None:
            self.prefix = f"table:{self.name}:"
        NON_EMPTY_STR.check("TableJoinNode", "prefix", self.prefix)
        self._keys = (
            FieldGetter(self.key),
            FieldGetter(self.table_key if self.table_key is not None else self.key),
        )
        self._value = FieldGetter(self.table_value)
        self._side = None if self.side is None else FieldGetter(self.side)

    def fresh(self) -> Self:
        """A node with the same settings and no state (each run of a reactive join gets one)."""
        return attrs.evolve(self)

    @property
    def tags_inputs(self) -> bool:
        """True when the run should tag each item with its predecessor (``side=None``)."""
        return self.side is None

    def check_predecessors(self, names: list[str]) -> None:
        """Graph validation: by predecessor, the two predecessors are ``left`` and ``right``."""
        if self.side is None and set(names) != {self.left, self.right}:
            raise GraphError(
                f"TableJoinNode {self.name!r}: its inputs are {sorted(map(str, names))}, but it "
                f"joins left={self.left!r} (stream) and right={self.right!r} (changelog): "
                "connect exactly those two nodes into it (or give side=)"
            )

    @property
    def table(self) -> dict[str, Any]:
        """The table now: latest value per (string) key. A copy."""
        return dict(self._table)

    async def open(self) -> None:
        """Read the table back from the store (what an earlier run left there)."""
        if self._loaded:
            return
        prefix = self.prefix
        assert prefix is not None
        rows = await self.store.scan(prefix, self.value_type)
        self._table = {key[len(prefix) :]: value for key, value in rows}
        self._loaded = True

    async def aclose(self) -> None:
        await self.store.aclose()
        self._loaded = False

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        if not self._loaded:
            await self.open()
        out: list[Any] = []
        writes: dict[str, StateWrite] = {}
        table = self._table
        left, right = self.left, self.right
        side_of, keyfs, valuef = self._side, self._keys, self._value
        store = self.store
        prefix = self.prefix
        assert prefix is not None
        inner = self.how == "inner"
        for entry in batch:
            if side_of is None:
                name, item = entry
            else:
                name, item = None, entry
            try:
                if side_of is not None:
                    name = side_of(item)
                if name == left:
                    k = keyfs[0](item)
                    value = table.get(table_key(k))
                    if value is None:
                        self.misses += 1
                        if not inner:
                            out.append(JoinResult(k, item, None))
                    else:
                        out.append(JoinResult(k, item, value))
                elif name == right:
                    k = table_key(keyfs[1](item))
                    value = valuef(item)
                    full = store.full_key(prefix + k)
                    if value is None:
                        table.pop(k, None)
                        writes[full] = (full, None, None)
                    else:
                        # Encoded now, so a value the store cannot hold fails this item
                        # and leaves the table as it was.
                        writes[full] = (full, store.encode(value), None)
                        table[k] = value
                    self.updates += 1
                else:
                    raise ValueError(f"side {name!r} is neither left={left!r} nor right={right!r}")
            except Exception as exc:
                await ctx.fail(item, exc)
        if writes:
            # The table is in the store before any result of this batch goes downstream.
            await store.write_raw(list(writes.values()))
        return out
