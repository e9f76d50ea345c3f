"""haive-dataflow hook implementations of haive-plugin-tracing.

Loading this module (plugin discovery) imports no OpenTelemetry: the hook asks
:func:`~haive_plugin_tracing.control.active_tracing`, which answers ``None`` while tracing
is off.
"""

from __future__ import annotations

from typing import Any

from haive.dataflow import hookimpl
from haive.dataflow.runtime.instrumentation import RunInstrumentation

from .control import active_tracing


@hookimpl
def haive_pipeline_instrumentation(pipeline: Any) -> RunInstrumentation | None:
    tracing = active_tracing()
    if tracing is None:
        return None
    return tracing.instrumentation(pipeline)
