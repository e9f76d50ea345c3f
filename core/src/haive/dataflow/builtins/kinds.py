"""The core's capability kinds, registered through the hook plugins use for theirs.

Each kind pairs a name with the core base class its members subclass and the register hook
spec (in :mod:`haive.dataflow.plugins.hookspecs`) whose implementations return them. The
``cli_command`` kind is added by :mod:`haive.dataflow.cli.plugin`, in the layer that
defines its base class.
"""

from __future__ import annotations

from typing import Any

from ..io.serializers import Serializer
from ..io.sinks import StreamSink
from ..io.sources import DataSource
from ..plugins import hookspecs
from ..plugins.hookspecs import hookimpl
from ..plugins.registry import CapabilityKind
from ..runtime.backpressure import BackpressureStrategy
from ..runtime.nodes import Node
from ..state.backend import StateBackend

SOURCE = CapabilityKind("source", DataSource, hookspecs.haive_register_sources)
SINK = CapabilityKind("sink", StreamSink, hookspecs.haive_register_sinks)
PROCESSOR = CapabilityKind("processor", Node, hookspecs.haive_register_processors)
BACKPRESSURE = CapabilityKind(
    "backpressure", BackpressureStrategy, hookspecs.haive_register_backpressure_strategies
)
STATE_BACKEND = CapabilityKind(
    "state_backend", StateBackend, hookspecs.haive_register_state_backends
)
SERIALIZER = CapabilityKind("serializer", Serializer, hookspecs.haive_register_serializers)

CORE_KINDS: tuple[CapabilityKind[Any], ...] = (
    SOURCE,
    SINK,
    PROCESSOR,
    BACKPRESSURE,
    STATE_BACKEND,
    SERIALIZER,
)


@hookimpl
def haive_register_capability_kinds() -> tuple[CapabilityKind[Any], ...]:
    return CORE_KINDS
