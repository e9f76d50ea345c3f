"""Parsing of human-friendly sizes ("500MB") and durations ("5m").

Every duration the API takes is in **seconds**, as in trio (``trio.sleep(0.25)``), never in
milliseconds: ``debounce(1.0)`` waits one second, where the product description's
``debounce(1000)`` means milliseconds. Wherever a duration is taken, a
:class:`datetime.timedelta` or a string such as ``"250ms"`` is accepted as well
(:func:`parse_duration` converts all of them).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import TypeAlias

from ..errors import ConfigError

#: What a duration parameter accepts: seconds as a number, a ``timedelta``, or ``"250ms"``.
Duration: TypeAlias = int | float | str | timedelta

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_size(value: int | float | str, *, what: str = "size") -> int:
    """Bytes from an int or a string like ``"500MB"``, ``"2GiB"``, ``"64k"``.

    Example::

        >>> parse_size("500MB"), parse_size("2GiB"), parse_size(4096)
        (500000000, 2147483648, 4096)
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a size like '500MB', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}: a size cannot be negative, got {value!r}")
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{what}: expected a size like '500MB' or '2GiB', got {value!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    binary = "i" in unit
    prefix = unit[:1] if unit[:1] in "kmgt" else ""
    # Binary prefixes (KiB, MiB...) are successive powers of 2**10.
    factor = 2 ** (10 * " kmgt".index(prefix)) if binary and prefix else _SIZE_FACTORS[prefix]
    return int(number * factor)


def parse_duration(value: Duration, *, what: str = "duration") -> float:
    """Seconds (a float) from a number of seconds, a :class:`datetime.timedelta` or a string
    like ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``. Negative, NaN and infinite durations are
    a :class:`~haive.dataflow.errors.ConfigError` naming ``what``.

    Example::

        >>> from datetime import timedelta
        >>> parse_duration(2), parse_duration(timedelta(milliseconds=250)), parse_duration("5m")
        (2.0, 0.25, 300.0)
        >>> parse_duration(-1, what="debounce: period")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: debounce: period: a duration cannot be negative, got -1
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration like '5m', got {value!r}")
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, int | float):
        if math.isnan(number) or math.isinf(number):
            raise ConfigError(
                f"{what}: a duration must be a finite number of seconds, got {value!r}"
            )
        if number < 0:
            raise ConfigError(f"{what}: a duration cannot be negative, got {value!r}")
        return float(number)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{what}: expected seconds, a timedelta or a duration like '30s', '5m' or '1h', "
            f"got {value!r}"
        )
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _DURATION_FACTORS[unit]
