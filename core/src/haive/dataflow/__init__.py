"""haive-dataflow: real-time AI data streams on trio.

The names most programs need are importable from here; :mod:`haive.dataflow.streaming`
adds every plugin's public names (resolved lazily).
"""

from __future__ import annotations

from .adaptive import AdaptiveConcurrency
from .backpressure import (
    BackpressureManager,
    BackpressureStrategy,
    BoundedBuffer,
    BufferStrategy,
    DropStrategy,
    FlowController,
)
from .caching import ResultCache
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
from .parallel import ProcessPoolNode
from .plugins import get_registry
from .results import Result
from .retry import RetryPolicy
from .routing import EventRouter, RouterNode
from .serializers import JsonSerializer, MessagePackSerializer, Serializer
from .sinks import StreamSink
from .sources import DataSource
from .streaming_pipeline import RunReport, StreamingPipeline

__version__ = "0.1.0"

__all__ = [
    "AdaptiveConcurrency",
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
    "EventRouter",
    "FilterNode",
    "FlowController",
    "GraphError",
    "HaiveError",
    "JsonSerializer",
    "MessagePackSerializer",
    "Node",
    "NodeError",
    "PluginError",
    "ProcessPoolNode",
    "Result",
    "ResultCache",
    "RetryPolicy",
    "RouterNode",
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
