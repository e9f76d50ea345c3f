"""The core's private cattrs converter (never cattrs' global one).

Plugins extend it through the ``haive_configure_converter`` hook. Structuring errors are
turned into :class:`~haive.dataflow.errors.ConfigError` messages that name the fields.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from ..errors import ConfigError

T = TypeVar("T")

_lock = threading.Lock()
_converter: cattrs.Converter | None = None


def _strict(kind: type[Any], accepted: tuple[type[Any], ...]) -> Any:
    # cattrs' default for scalars is to coerce (3 -> "3"); wire data must have the right type.
    def hook(value: Any, _: type[Any]) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got bool {value!r}")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value)

    return hook


def _new_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict(str, (str,)))
    converter.register_structure_hook(int, _strict(int, (int,)))
    converter.register_structure_hook(float, _strict(float, (int, float)))
    converter.register_structure_hook(bool, _strict(bool, (bool,)))
    return converter


def get_converter() -> cattrs.Converter:
    """The process-wide converter, configured by every installed plugin on first use."""
    global _converter
    with _lock:
        if _converter is None:
            converter = _new_converter()
            from ..plugins.registry import get_registry

            get_registry().configure_converter(converter)
            _converter = converter
        return _converter


def describe_structure_error(exc: BaseException, cls: type[Any]) -> str:
    """One readable line per problem, e.g. ``buffer_size: expected int, got 'big'``."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown key(s) for {cls.__name__}: {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, ClassValidationError):
        notes = cattrs.transform_error(exc)
        return "; ".join(notes)
    return f"{type(exc).__name__}: {exc}"


def structure(data: Any, cls: type[T]) -> T:
    """Structure ``data`` into ``cls``; raises ConfigError naming every bad field."""
    try:
        return get_converter().structure(data, cls)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"invalid {cls.__name__}: {describe_structure_error(exc, cls)}") from exc


def unstructure(value: Any) -> Any:
    """Plain dicts/lists/scalars for ``value``."""
    return get_converter().unstructure(value)
