"""Turning pipeline items into table rows: dicts by key, attrs instances by attribute, or a
function per column."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from haive.dataflow.errors import ConfigError

#: Column -> how to get its value from an item: a field name, or a function of the item.
Getter = str | Callable[[Any], Any]


def check_columns_setting(owner: str, columns: object) -> dict[str, Getter] | None:
    """``columns`` as a column -> getter mapping (``None``: the table's columns, each read
    from the field of the same name)."""
    if columns is None:
        return None
    allowed = ("a sequence of column names, or a mapping of column name to a field name or "
               "a function of the item")
    if isinstance(columns, Mapping):
        mapping: dict[str, Getter] = {}
        for column, getter in columns.items():
            if not isinstance(column, str) or not column:
                raise ConfigError(f"{owner}(columns={columns!r}): columns must be {allowed}, "
                                  f"got the column {column!r}")
            if not (isinstance(getter, str) and getter) and not callable(getter):
                raise ConfigError(f"{owner}(columns={columns!r}): columns must be {allowed}, "
                                  f"got {getter!r} for column {column!r}")
            mapping[column] = getter
    elif isinstance(columns, Sequence) and not isinstance(columns, str):
        if not all(isinstance(c, str) and c for c in columns):
            raise ConfigError(f"{owner}(columns={columns!r}): columns must be {allowed}, "
                              f"got {columns!r}")
        mapping = {column: column for column in columns}
    else:
        raise ConfigError(f"{owner}(columns={columns!r}): columns must be {allowed}, "
                          f"got {columns!r}")
    if not mapping:
        raise ConfigError(f"{owner}(columns={columns!r}): columns must name at least one "
                          "column, got none")
    return mapping


class RowMaker:
    """Makes the row (a tuple in column order) of an item.

    A dict (any mapping) gives ``item.get(field)``: a missing key is NULL. An attrs
    instance, or any object, gives ``getattr(item, field)``: a missing attribute is an
    error for that item. A function getter is called with the item.

    Example::

        >>> import attrs
        >>> @attrs.frozen
        ... class Reading:
        ...     sensor: str
        ...     value: float
        >>> maker = RowMaker({"sensor": "sensor", "value": "value", "doubled": lambda r: 2 * r["value"] if isinstance(r, dict) else 2 * r.value})
        >>> maker.row({"sensor": "s1", "value": 1.5}), maker.row(Reading("s2", 2.0))
        (('s1', 1.5, 3.0), ('s2', 2.0, 4.0))
    """

    def __init__(self, getters: Mapping[str, Getter]) -> None:
        self.columns = tuple(getters)
        self._getters = tuple(getters.values())
        self._plain = all(isinstance(g, str) for g in self._getters)
        self._fields: tuple[str, ...] = tuple(g for g in self._getters if isinstance(g, str))
        # itemgetter reads a dict's fields in C; it gives a bare value for one field.
        getter = operator.itemgetter(*self._fields) if self._plain else None
        self._from_dict: Callable[[Any], tuple[Any, ...]] | None = (
            None if getter is None
            else getter if len(self._fields) > 1
            else (lambda item: (getter(item),))
        )

    def row(self, item: Any) -> tuple[Any, ...]:
        if self._from_dict is not None:
            if type(item) is dict:
                try:
                    return self._from_dict(item)
                except KeyError:  # a missing field is NULL
                    get = item.get
                    return tuple([get(field) for field in self._fields])
            if isinstance(item, Mapping):
                return tuple([item.get(field) for field in self._fields])
            if attrs.has(type(item)) or hasattr(item, "__dict__") or hasattr(item, "__slots__"):
                return tuple([getattr(item, field) for field in self._fields])
            raise TypeError(
                f"cannot make a row of {type(item).__name__} {item!r}: items must be dicts, "
                "attrs instances or objects with the columns as attributes (or give "
                "columns={column: function})"
            )
        values = []
        for getter in self._getters:
            if callable(getter):
                values.append(getter(item))
            elif isinstance(item, Mapping):
                values.append(item.get(getter))
            else:
                values.append(getattr(item, getter))
        return tuple(values)
