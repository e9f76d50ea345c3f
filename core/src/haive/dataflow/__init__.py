"""haive-dataflow: real-time AI data streams on trio.

The names most programs need are importable from here; :mod:`haive.dataflow.streaming`
adds every plugin's public names (resolved lazily).
"""

from __future__ import annotations

from .backpressure import (
    BackpressureManager,
    BackpressureStrategy,
    BoundedBuffer,
    BufferStrategy,
    DropStrategy,
    FlowController,
)
from .config import StreamConfig
from .errors import (
    ConfigError,
    GraphError,
    HaiveError,
    NodeError,
    PluginError,
    UnknownPluginError,
)
from .event_pipeline import EventPipeline, SendResult
from .events import Event
from .hookspecs import hookimpl
from .nodes import AggregateNode, FilterNode, Node, StreamProcessor, TransformNode
from .plugins import get_registry
from .results import Result
from .retry import RetryPolicy
from .serializers import JsonSerializer, MessagePackSerializer, Serializer
from .sinks import StreamSink
from .sources import DataSource
from .streaming_pipeline import RunReport, StreamingPipeline

__version__ = "0.1.0"

__all__ = [
    "AggregateNode",
    "BackpressureManager",
    "BackpressureStrategy",
    "BoundedBuffer",
    "BufferStrategy",
    "ConfigError",
    "DataSource",
    "DropStrategy",
    "Event",
    "EventPipeline",
    "FilterNode",
    "FlowController",
    "GraphError",
    "HaiveError",
    "JsonSerializer",
    "MessagePackSerializer",
    "Node",
    "NodeError",
    "PluginError",
    "Result",
    "RetryPolicy",
    "RunReport",
    "SendResult",
    "Serializer",
    "StreamConfig",
    "StreamProcessor",
    "StreamSink",
    "StreamingPipeline",
    "TransformNode",
    "UnknownPluginError",
    "get_registry",
    "hookimpl",
]
