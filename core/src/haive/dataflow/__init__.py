"""haive-dataflow: real-time AI data streams on trio.

The names most programs need are importable from here; :mod:`haive.dataflow.streaming`
adds the rest and every plugin's public names. Each name is imported on first use, from a
static table (PEP 562): ``import haive.dataflow`` loads nothing else, and
``from haive.dataflow import EventPipeline`` loads the runtime and the pipelines, not
reactive streams or state.

Example::

    >>> import haive.dataflow
    >>> haive.dataflow.EventPipeline.__module__
    'haive.dataflow.pipelines.event_pipeline'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Every public name -> the module (under haive.dataflow) that defines it.
NAMES: dict[str, str] = {
    "AdaptiveConcurrency": "runtime.adaptive",
    "AggregateNode": "runtime.nodes",
    "AsyncioBridge": "runtime.bridge",
    "BackpressureManager": "runtime.backpressure",
    "BackpressureStrategy": "runtime.backpressure",
    "BoundedBuffer": "runtime.backpressure",
    "BridgeClosedError": "errors",
    "BufferStrategy": "runtime.backpressure",
    "ConfigError": "errors",
    "DataSource": "io.sources",
    "DropStrategy": "runtime.backpressure",
    "Event": "runtime.events",
    "EventPipeline": "pipelines.event_pipeline",
    "EventRouter": "pipelines.routing",
    "FilterNode": "runtime.nodes",
    "FlowController": "runtime.backpressure",
    "GraphError": "errors",
    "HaiveError": "errors",
    "JsonSerializer": "io.serializers",
    "MessagePackSerializer": "io.serializers",
    "Node": "runtime.nodes",
    "NodeError": "errors",
    "PluginError": "errors",
    "ProcessPoolNode": "parallel.runner",
    "Result": "runtime.results",
    "ResultCache": "runtime.caching",
    "RetryPolicy": "runtime.retry",
    "RouterNode": "pipelines.routing",
    "RunReport": "pipelines.streaming_pipeline",
    "SendResult": "pipelines.event_pipeline",
    "Serializer": "io.serializers",
    "StreamConfig": "runtime.config",
    "StreamProcessor": "runtime.nodes",
    "StreamSink": "io.sinks",
    "StreamingPipeline": "pipelines.streaming_pipeline",
    "ThreadBridge": "runtime.bridge",
    "TransformNode": "runtime.nodes",
    "UnknownPluginError": "errors",
    "get_registry": "plugins.registry",
    "hookimpl": "plugins.hookspecs",
    "open_asyncio_bridge": "runtime.bridge",
    "open_thread_bridge": "runtime.bridge",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'haive.dataflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *NAMES})


if TYPE_CHECKING:  # the same names, for type checkers (a test keeps both in step)
    from .errors import BridgeClosedError as BridgeClosedError
    from .errors import ConfigError as ConfigError
    from .errors import GraphError as GraphError
    from .errors import HaiveError as HaiveError
    from .errors import NodeError as NodeError
    from .errors import PluginError as PluginError
    from .errors import UnknownPluginError as UnknownPluginError
    from .io.serializers import JsonSerializer as JsonSerializer
    from .io.serializers import MessagePackSerializer as MessagePackSerializer
    from .io.serializers import Serializer as Serializer
    from .io.sinks import StreamSink as StreamSink
    from .io.sources import DataSource as DataSource
    from .parallel.runner import ProcessPoolNode as ProcessPoolNode
    from .pipelines.event_pipeline import EventPipeline as EventPipeline
    from .pipelines.event_pipeline import SendResult as SendResult
    from .pipelines.routing import EventRouter as EventRouter
    from .pipelines.routing import RouterNode as RouterNode
    from .pipelines.streaming_pipeline import RunReport as RunReport
    from .pipelines.streaming_pipeline import StreamingPipeline as StreamingPipeline
    from .plugins.hookspecs import hookimpl as hookimpl
    from .plugins.registry import get_registry as get_registry
    from .runtime.adaptive import AdaptiveConcurrency as AdaptiveConcurrency
    from .runtime.backpressure import BackpressureManager as BackpressureManager
    from .runtime.backpressure import BackpressureStrategy as BackpressureStrategy
    from .runtime.backpressure import BoundedBuffer as BoundedBuffer
    from .runtime.backpressure import BufferStrategy as BufferStrategy
    from .runtime.backpressure import DropStrategy as DropStrategy
    from .runtime.backpressure import FlowController as FlowController
    from .runtime.bridge import AsyncioBridge as AsyncioBridge
    from .runtime.bridge import ThreadBridge as ThreadBridge
    from .runtime.bridge import open_asyncio_bridge as open_asyncio_bridge
    from .runtime.bridge import open_thread_bridge as open_thread_bridge
    from .runtime.caching import ResultCache as ResultCache
    from .runtime.config import StreamConfig as StreamConfig
    from .runtime.events import Event as Event
    from .runtime.nodes import AggregateNode as AggregateNode
    from .runtime.nodes import FilterNode as FilterNode
    from .runtime.nodes import Node as Node
    from .runtime.nodes import StreamProcessor as StreamProcessor
    from .runtime.nodes import TransformNode as TransformNode
    from .runtime.results import Result as Result
    from .runtime.retry import RetryPolicy as RetryPolicy
