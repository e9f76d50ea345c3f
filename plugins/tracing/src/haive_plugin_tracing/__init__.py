"""haive-plugin-tracing: OpenTelemetry spans for pipeline runs, trace context in headers.

Off by default: nothing is traced and OpenTelemetry is not imported until
:func:`enable_tracing` (or ``HAIVE_TRACING=1``). The names are imported on first use
(PEP 562), so plugin discovery stays cheap.

Example::

    >>> from haive_plugin_tracing import active_tracing
    >>> active_tracing() is None
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Every public name -> the module of this package defining it.
NAMES: dict[str, str] = {
    "ENV_RATIO": "control",
    "ENV_SWITCH": "control",
    "SpanInstrumentation": "spans",
    "Tracing": "control",
    "TracingConfig": "control",
    "active_tracing": "control",
    "context_from_headers": "propagation",
    "current_trace_headers": "propagation",
    "enable_tracing": "control",
    "inject_trace_headers": "propagation",
    "span_of": "propagation",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(NAMES))


if TYPE_CHECKING:
    from .control import ENV_RATIO as ENV_RATIO
    from .control import ENV_SWITCH as ENV_SWITCH
    from .control import Tracing as Tracing
    from .control import TracingConfig as TracingConfig
    from .control import active_tracing as active_tracing
    from .control import enable_tracing as enable_tracing
    from .propagation import context_from_headers as context_from_headers
    from .propagation import current_trace_headers as current_trace_headers
    from .propagation import inject_trace_headers as inject_trace_headers
    from .propagation import span_of as span_of
    from .spans import SpanInstrumentation as SpanInstrumentation
