"""The item a :class:`~haive_plugin_postgres.source.PostgresCdcSource` yields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs


def lsn_to_int(lsn: str) -> int:
    """A PostgreSQL LSN (``"16/B374D848"``) as an integer, to compare positions.

    Example::

        >>> lsn_to_int("0/1541F10"), lsn_to_int("1/0")
        (22290192, 4294967296)
    """
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(position: int) -> str:
    """The inverse of :func:`lsn_to_int`.

    Example::

        >>> int_to_lsn(22290192)
        '0/1541F10'
    """
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@attrs.frozen(eq=False)
class ChangeEvent:
    """One row change committed in PostgreSQL, as logical replication decoded it.

    ``kind`` is ``"insert"``, ``"update"``, ``"delete"`` (or ``"truncate"`` when asked
    for). ``after`` is the new row (``None`` for a delete); ``before`` the old one (``None``
    for an insert): the whole old row when the table has ``REPLICA IDENTITY FULL``, else
    only its primary key columns (PostgreSQL logs no more). Column values are what wal2json
    gives: JSON numbers, strings (text, timestamps, numeric beyond float range keep their
    text form), booleans, nulls.

    ``timestamp`` is the commit time of the transaction (seconds since the epoch): the event
    time window nodes read by default. ``xid`` is the transaction id, ``lsn`` the change's
    position in the WAL and ``commit_lsn`` the end of its transaction's commit record (the
    position the slot is advanced to once the transaction is written). Events compare by
    identity: the pipeline traces a failed item to its change that way.

    Example::

        >>> event = ChangeEvent(kind="update", schema="public", table="users",
        ...                     before={"id": 1, "name": "ada"}, after={"id": 1, "name": "ada l."},
        ...                     xid=731, lsn="0/1542098", commit_lsn="0/1542208",
        ...                     timestamp=1733548800.5)
        >>> event.qualified_table, event.row["name"], event.commit_time.isoformat()
        ('public.users', 'ada l.', '2024-12-07T05:20:00.500000+00:00')
    """

    kind: str
    schema: str
    table: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    xid: int
    lsn: str
    commit_lsn: str
    timestamp: float

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def row(self) -> dict[str, Any] | None:
        """The row as it is now: ``after``, or ``before`` for a delete."""
        return self.after if self.after is not None else self.before

    @property
    def commit_time(self) -> datetime:
        """``timestamp`` as an aware datetime (UTC)."""
        return datetime.fromtimestamp(self.timestamp, UTC)


def _slot_setters() -> tuple[Any, ...]:
    # Each field's slot descriptor: setting through it is what attrs' frozen __init__ does
    # (object.__setattr__), without a method lookup and a bound call per field.
    return tuple(getattr(ChangeEvent, field.name).__set__ for field in attrs.fields(ChangeEvent))


SETTERS = _slot_setters()
_new = object.__new__


def new_change_event(
    kind: str,
    schema: str,
    table: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    xid: int,
    lsn: str,
    commit_lsn: str,
    timestamp: float,
) -> ChangeEvent:
    """``ChangeEvent(...)`` with the same positional arguments, about a third cheaper: the
    CDC source makes one per change, and its frozen ``__init__`` was a quarter of the
    source's work per change (the fields carry no validators or converters to skip).

    Example::

        >>> event = new_change_event("insert", "public", "t", None, {"id": 1}, 7, "0/1",
        ...                          "0/2", 1.5)
        >>> event
        ChangeEvent(kind='insert', schema='public', table='t', before=None, after={'id': 1}, xid=7, lsn='0/1', commit_lsn='0/2', timestamp=1.5)
    """
    event: ChangeEvent = _new(ChangeEvent)
    s_kind, s_schema, s_table, s_before, s_after, s_xid, s_lsn, s_commit, s_time = SETTERS
    s_kind(event, kind)
    s_schema(event, schema)
    s_table(event, table)
    s_before(event, before)
    s_after(event, after)
    s_xid(event, xid)
    s_lsn(event, lsn)
    s_commit(event, commit_lsn)
    s_time(event, timestamp)
    return event
