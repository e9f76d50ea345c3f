"""What a recorded event reports: its latency (:func:`latency_of`) and whether it is a
failure (:func:`is_error`). The metrics read events passed to
:meth:`~haive_plugin_observability.MetricsCollector.record` through these two functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from haive.dataflow.runtime.results import Result


def _field(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def latency_of(event: Any, *, wall_now: float | None = None) -> float | None:
    """The latency an event reports, in seconds, or None.

    Looks for ``latency_ms`` (milliseconds) or ``latency`` / ``latency_s`` (seconds) as a key
    or attribute, then in ``metadata``; failing that, an event with an epoch ``timestamp``
    (:class:`haive.dataflow.Event`) is as old as the wall clock says.

    Example::

        >>> latency_of({"latency_ms": 250}), latency_of({"latency": 0.5}), latency_of(3)
        (0.25, 0.5, None)
    """
    if isinstance(event, bool | int | float | str | bytes) or event is None:
        return None
    for source in (event, _field(event, "metadata")):
        if source is None:
            continue
        value = _field(source, "latency_ms")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) / 1000.0
        for name in ("latency_s", "latency"):
            value = _field(source, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    stamp = _field(event, "timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 1e9:
        return max(0.0, (time.time() if wall_now is None else wall_now) - float(stamp))
    return None


def is_error(event: Any) -> bool:
    """Whether an event stands for a failure.

    A failed :class:`~haive.dataflow.runtime.results.Result`, an exception, or anything with
    ``success`` false, a truthy ``error`` or ``status == "error"``.

    Example::

        >>> is_error(Result.failed(1, ValueError())), is_error({"status": "error"}), is_error({"x": 1})
        (True, True, False)
    """
    if isinstance(event, Result):
        return not event.success
    if isinstance(event, BaseException):
        return True
    if isinstance(event, bool | int | float | str | bytes) or event is None:
        return False
    if _field(event, "success") is False:
        return True
    if _field(event, "error"):
        return True
    return bool(_field(event, "status") == "error")
