"""Reusable checks for settings, so every constructor rejects bad values the same way.

Each check names the class (or operator) being built, the parameter, the value and what is
allowed, and raises :class:`~haive.dataflow.errors.ConfigError` (a ``ValueError``) at
construction, before anything runs::

    EventPipeline(chunk_size=0): chunk_size must be an integer >= 1, got 0

A :class:`Rule` is an attrs validator (the owner named in the message is the class being
built, or its ``config_owner`` attribute when it has one) and can be applied from a plain
``__init__`` with :meth:`Rule.check`. Settings that are converted (durations such as
``"5m"``, sizes such as ``"500MB"``) go through :func:`duration` and :func:`size`, which
raise in the same format.

Example::

    >>> import attrs
    >>> @attrs.frozen
    ... class Poller:
    ...     batch: int = attrs.field(default=10, validator=POSITIVE_INT)
    >>> Poller(batch=0)
    Traceback (most recent call last):
    ...
    haive.dataflow.errors.ConfigError: Poller(batch=0): batch must be an integer >= 1, got 0
    >>> POSITIVE_NUMBER.check("poll", "timeout", 2.5)
    2.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ..errors import ConfigError
from .units import parse_duration, parse_size

T = TypeVar("T")


def invalid(owner: str, parameter: str, value: object, allowed: str) -> str:
    """The message every check uses: ``Owner(param=value): param must be <allowed>, got value``.

    Example::

        >>> invalid("Cache", "ttl", -1, "a number > 0")
        'Cache(ttl=-1): ttl must be a number > 0, got -1'
    """
    return f"{owner}({parameter}={value!r}): {parameter} must be {allowed}, got {value!r}"


def owner_of(instance: object) -> str:
    """The name a message gives to ``instance``: its ``config_owner`` or its class name."""
    owner = getattr(instance, "config_owner", None)
    return owner if isinstance(owner, str) else type(instance).__name__


@attrs.frozen
class Rule:
    """A condition a setting must meet, and how to say what is allowed.

    Use it as an attrs ``validator=`` or call :meth:`check` (which returns the value).

    Example::

        >>> EVEN = Rule("an even integer", lambda v: isinstance(v, int) and v % 2 == 0)
        >>> EVEN.check("Pairs", "size", 4)
        4
        >>> EVEN.optional().check("Pairs", "size", None) is None
        True
        >>> EVEN.check("Pairs", "size", 3)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: Pairs(size=3): size must be an even integer, got 3
    """

    allowed: str
    test: Callable[[Any], bool]

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        self.check(owner_of(instance), attribute.alias or attribute.name, value)

    def check(self, owner: str, parameter: str, value: T) -> T:
        """Return ``value`` if it meets the rule, else raise ConfigError naming everything."""
        if not self.test(value):
            raise ConfigError(invalid(owner, parameter, value, self.allowed))
        return value

    def optional(self) -> Rule:
        """The same rule, also accepting ``None``."""
        test = self.test
        return Rule(f"{self.allowed}, or None", lambda value: value is None or test(value))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def integer(minimum: int | None = None, maximum: int | None = None) -> Rule:
    """Integers (not bools) within ``[minimum, maximum]``.

    Example::

        >>> integer(1, 10).check("Pool", "workers", 11)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: Pool(workers=11): workers must be an integer between 1 and 10, got 11
    """
    if minimum is not None and maximum is not None:
        allowed = f"an integer between {minimum} and {maximum}"
    elif minimum is not None:
        allowed = f"an integer >= {minimum}"
    elif maximum is not None:
        allowed = f"an integer <= {maximum}"
    else:
        allowed = "an integer"

    def test(value: object) -> bool:
        return (
            _is_int(value)
            and (minimum is None or value >= minimum)  # type: ignore[operator]
            and (maximum is None or value <= maximum)  # type: ignore[operator]
        )

    return Rule(allowed, test)


def number(
    minimum: float | None = None, *, above: float | None = None, maximum: float | None = None
) -> Rule:
    """Finite ints or floats (not bools, NaN or infinities): ``>= minimum`` or ``> above``,
    and ``<= maximum``.

    Example::

        >>> number(above=0).check("Strategy", "window", 0.0)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: Strategy(window=0.0): window must be a number > 0, got 0.0
    """
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if above is not None:
        bounds.append(f"> {above:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    allowed = "a number" + (f" {' and '.join(bounds)}" if bounds else "")

    def test(value: object) -> bool:
        return (
            _is_number(value)
            and (minimum is None or value >= minimum)  # type: ignore[operator]
            and (above is None or value > above)  # type: ignore[operator]
            and (maximum is None or value <= maximum)  # type: ignore[operator]
        )

    return Rule(allowed, test)


def one_of(*choices: object) -> Rule:
    """One of ``choices`` exactly.

    Example::

        >>> one_of("first", "all").check("EventRouter", "mode", "any")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: EventRouter(mode='any'): mode must be one of 'first', 'all', got 'any'
    """
    allowed = "one of " + ", ".join(repr(choice) for choice in choices)
    options = tuple(choices)

    def test(value: object) -> bool:
        try:
            return value in options
        except TypeError:  # an unhashable or uncomparable value is not a choice
            return False

    return Rule(allowed, test)


def instance_of(cls: type[Any] | tuple[type[Any], ...], description: str) -> Rule:
    """Instances of ``cls``, described as ``description`` in messages.

    Example::

        >>> instance_of(str, "a string").check("Node", "name", "n")
        'n'
    """
    return Rule(description, lambda value: isinstance(value, cls))


POSITIVE_INT = integer(1)
NON_NEGATIVE_INT = integer(0)
POSITIVE_NUMBER = number(above=0)
NON_NEGATIVE_NUMBER = number(0)
FRACTION = number(0, maximum=1)
BOOL = Rule("True or False", lambda value: isinstance(value, bool))
CALLABLE = Rule("callable (a function)", callable)
NON_EMPTY_STR = Rule("a non-empty string", lambda value: isinstance(value, str) and bool(value))

_DURATION = "a duration (seconds, a timedelta, or a string like '250ms', '30s', '5m')"
_SIZE = "a size (bytes, or a string like '64KB', '500MB', '2GiB')"


def duration(owner: str, parameter: str, value: object, *, positive: bool = True) -> float:
    """Seconds from ``value`` (a number or a string like ``"5m"``), ``> 0`` unless
    ``positive=False`` (then ``>= 0``).

    Example::

        >>> duration("SessionState", "timeout", "30m")
        1800.0
        >>> duration("SessionState", "timeout", "0s")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: SessionState(timeout='0s'): timeout must be a duration (seconds, a timedelta, or a string like '250ms', '30s', '5m') > 0, got '0s'
    """
    allowed = f"{_DURATION} {'> 0' if positive else '>= 0'}"
    try:
        seconds = parse_duration(value, what=parameter)  # type: ignore[arg-type]
    except (ConfigError, TypeError):
        raise ConfigError(invalid(owner, parameter, value, allowed)) from None
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise ConfigError(invalid(owner, parameter, value, allowed))
    return seconds


def optional_duration(
    owner: str, parameter: str, value: object, *, positive: bool = True
) -> float | None:
    """:func:`duration`, with ``None`` (no limit) passed through."""
    return None if value is None else duration(owner, parameter, value, positive=positive)


def size(owner: str, parameter: str, value: object, *, minimum: int = 1) -> int:
    """Bytes from ``value`` (an int or a string like ``"500MB"``), at least ``minimum``.

    Example::

        >>> size("ResultCache", "max_bytes", "1KB")
        1000
    """
    allowed = f"{_SIZE} of at least {minimum} byte{'' if minimum == 1 else 's'}"
    try:
        result = parse_size(value, what=parameter)  # type: ignore[arg-type]
    except (ConfigError, TypeError, OverflowError, ValueError):
        raise ConfigError(invalid(owner, parameter, value, allowed)) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(invalid(owner, parameter, value, allowed))
    if result < minimum:
        raise ConfigError(invalid(owner, parameter, value, allowed))
    return result


def registered(owner: str, parameter: str, kind: str, name: str) -> type[Any]:
    """The class an installed plugin registered as ``name`` for ``kind``.

    An unknown name raises :class:`~haive.dataflow.errors.UnknownSettingError` (both an
    ``UnknownPluginError`` and a ``ConfigError``) with the registry's message: what is
    installed, the closest name, and which package provides it.

    Example::

        >>> registered("Demo", "serializer", "serializer", "json").__name__
        'JsonSerializer'
        >>> registered("Demo", "serializer", "serializer", "jsn")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.UnknownSettingError: Demo(serializer='jsn'): no serializer named 'jsn' is installed. ... Did you mean 'json'?
    """
    from ..errors import UnknownPluginError, UnknownSettingError
    from ..plugins.registry import get_registry

    try:
        cls: type[Any] = get_registry().get(kind, name)
    except UnknownPluginError as exc:
        raise UnknownSettingError(f"{owner}({parameter}={name!r}): {exc}") from None
    return cls
