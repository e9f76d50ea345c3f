"""haive-dataflow: real-time AI data streams on trio.

The names most programs need are importable from here; :mod:`haive.dataflow.streaming`
adds every plugin's public names (resolved lazily).
"""

from __future__ import annotations

from .errors import (
    ConfigError,
    GraphError,
    HaiveError,
    NodeError,
    PluginError,
    UnknownPluginError,
)
from .io.serializers import JsonSerializer, MessagePackSerializer, Serializer
from .io.sinks import StreamSink
from .io.sources import DataSource
from .parallel import ProcessPoolNode
from .pipelines.event_pipeline import EventPipeline, SendResult
from .pipelines.routing import EventRouter, RouterNode
from .pipelines.streaming_pipeline import RunReport, StreamingPipeline
from .plugins.hookspecs import hookimpl
from .plugins.registry import get_registry
from .runtime.adaptive import AdaptiveConcurrency
from .runtime.backpressure import (
    BackpressureManager,
    BackpressureStrategy,
    BoundedBuffer,
    BufferStrategy,
    DropStrategy,
    FlowController,
)
from .runtime.caching import ResultCache
from .runtime.config import StreamConfig
from .runtime.events import Event
from .runtime.nodes import AggregateNode, FilterNode, Node, StreamProcessor, TransformNode
from .runtime.results import Result
from .runtime.retry import RetryPolicy

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
