"""The import path of the product description: ``from haive.dataflow.streaming import ...``.

Every name resolves on first use (PEP 562), so ``import haive.dataflow.streaming`` loads
nothing else. The core's names come from a static table: those of :mod:`haive.dataflow`
plus the ones below. Names that plugins add resolve from what each installed plugin
declares in its metadata (its ``haive.dataflow.exports`` entry points): only the module
defining the name is imported, and the registry is not built. A name whose plugin is not
installed raises an error that names the distribution to install (from the first-party
plugin directory, see :mod:`haive.dataflow.plugins.catalogue`).

Example::

    >>> from haive.dataflow.streaming import EventPipeline, FilterNode
    >>> EventPipeline.__name__
    'EventPipeline'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import NAMES as _PACKAGE_NAMES
from .errors import MissingPluginError

#: The core's names this module adds to those of haive.dataflow (in ``__all__``).
_LOCAL: dict[str, str] = {
    "AsyncIterableSource": "builtins.sources",
    "CallbackSink": "builtins.sinks",
    "ChainResult": "pipelines.chain",
    "ChainStepError": "pipelines.chain",
    "EmptyStreamError": "reactive",
    "IterableSource": "builtins.sources",
    "JsonLinesSink": "builtins.sinks",
    "JsonLinesSource": "builtins.sources",
    "MemorySink": "builtins.sinks",
    "MemorySource": "builtins.sources",
    "Observable": "reactive",
    "ObservableSource": "reactive",
    "Operators": "reactive",
    "PipelineHandle": "pipelines.event_pipeline",
    "PipelineRun": "pipelines.streaming_pipeline",
    "ReactiveStream": "reactive",
    "ResultStream": "pipelines.streaming_pipeline",
    "SharedObservable": "reactive",
    "SlidingWindowStrategy": "runtime.backpressure",
    "StdoutSink": "builtins.sinks",
    "StreamIterator": "reactive",
    "Subscriber": "reactive",
    "Subscription": "reactive",
    "TransformationChain": "pipelines.chain",
    "Window": "reactive",
}

#: The core's state stores, windows and checkpoints (not in ``__all__``).
_LAZY_CORE: dict[str, str] = {
    "Aggregator": "state.windows",
    "CheckpointableSink": "state.checkpoint",
    "CheckpointableSource": "state.checkpoint",
    "Checkpointer": "state.checkpoint",
    "CorruptStateError": "state.store",
    "IntervalJoin": "state.join_specs",
    "JoinNode": "state.join_node",
    "JoinResult": "state.join_specs",
    "KeyedState": "state.processor",
    "MemoryStateBackend": "state.memory",
    "SQLiteStateBackend": "state.sqlite",
    "Session": "state.session",
    "SessionState": "state.session",
    "SessionWindow": "state.windows",
    "SlidingWindow": "state.windows",
    "StateBackend": "state.backend",
    "StateStore": "state.store",
    "StatefulProcessor": "state.processor",
    "TableJoinNode": "state.table_join",
    "TumblingWindow": "state.windows",
    "WindowNode": "state.windows",
    "WindowResult": "state.windows",
    "WatermarkTracker": "state.watermarks",
    "WindowState": "state.session",
    "WindowedAggregateNode": "state.windows",
}

#: Every core name -> its module under haive.dataflow.
CORE_NAMES: dict[str, str] = {**_PACKAGE_NAMES, **_LOCAL, **_LAZY_CORE}

__all__ = sorted({*_PACKAGE_NAMES, *_LOCAL})


def _plugin_exports() -> dict[str, str]:
    """Public name -> ``"module:attr"`` of every installed, unblocked plugin."""
    from .plugins import catalogue

    return catalogue.loaded_exports()


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = CORE_NAMES.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"haive.dataflow.{module}"), name)
    else:
        target = _plugin_exports().get(name)
        if target is None:
            raise _missing(name)
        module_name, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # resolved once
    return value


def _missing(name: str) -> Exception:
    """The error for a name no installed plugin exports: which plugin would, if any."""
    from .plugins import catalogue

    manifest = catalogue.exporter_of(name)
    if manifest is not None:
        package = manifest.distribution
        return MissingPluginError(
            f"haive.dataflow.streaming.{name} is provided by the plugin {package}; "
            f"{catalogue.install_hint(package)}",
            name=__name__,
        )
    return AttributeError(f"module 'haive.dataflow.streaming' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *CORE_NAMES, *_plugin_exports()})


if TYPE_CHECKING:  # the same names, for type checkers (a test keeps both in step)
    from .builtins.sinks import CallbackSink as CallbackSink
    from .builtins.sinks import JsonLinesSink as JsonLinesSink
    from .builtins.sinks import MemorySink as MemorySink
    from .builtins.sinks import StdoutSink as StdoutSink
    from .builtins.sources import AsyncIterableSource as AsyncIterableSource
    from .builtins.sources import IterableSource as IterableSource
    from .builtins.sources import JsonLinesSource as JsonLinesSource
    from .builtins.sources import MemorySource as MemorySource
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
    from .pipelines.chain import ChainResult as ChainResult
    from .pipelines.chain import ChainStepError as ChainStepError
    from .pipelines.chain import TransformationChain as TransformationChain
    from .pipelines.event_pipeline import EventPipeline as EventPipeline
    from .pipelines.event_pipeline import PipelineHandle as PipelineHandle
    from .pipelines.event_pipeline import SendResult as SendResult
    from .pipelines.routing import EventRouter as EventRouter
    from .pipelines.routing import RouterNode as RouterNode
    from .pipelines.streaming_pipeline import PipelineRun as PipelineRun
    from .pipelines.streaming_pipeline import ResultStream as ResultStream
    from .pipelines.streaming_pipeline import RunReport as RunReport
    from .pipelines.streaming_pipeline import StreamingPipeline as StreamingPipeline
    from .plugins.hookspecs import hookimpl as hookimpl
    from .plugins.registry import get_registry as get_registry
    from .reactive import EmptyStreamError as EmptyStreamError
    from .reactive import Observable as Observable
    from .reactive import ObservableSource as ObservableSource
    from .reactive import Operators as Operators
    from .reactive import ReactiveStream as ReactiveStream
    from .reactive import SharedObservable as SharedObservable
    from .reactive import StreamIterator as StreamIterator
    from .reactive import Subscriber as Subscriber
    from .reactive import Subscription as Subscription
    from .reactive import Window as Window
    from .runtime.adaptive import AdaptiveConcurrency as AdaptiveConcurrency
    from .runtime.backpressure import BackpressureManager as BackpressureManager
    from .runtime.backpressure import BackpressureStrategy as BackpressureStrategy
    from .runtime.backpressure import BoundedBuffer as BoundedBuffer
    from .runtime.backpressure import BufferStrategy as BufferStrategy
    from .runtime.backpressure import DropStrategy as DropStrategy
    from .runtime.backpressure import FlowController as FlowController
    from .runtime.backpressure import SlidingWindowStrategy as SlidingWindowStrategy
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
    from .state.backend import StateBackend as StateBackend
    from .state.checkpoint import CheckpointableSink as CheckpointableSink
    from .state.checkpoint import CheckpointableSource as CheckpointableSource
    from .state.checkpoint import Checkpointer as Checkpointer
    from .state.join_node import JoinNode as JoinNode
    from .state.join_specs import IntervalJoin as IntervalJoin
    from .state.join_specs import JoinResult as JoinResult
    from .state.memory import MemoryStateBackend as MemoryStateBackend
    from .state.processor import KeyedState as KeyedState
    from .state.processor import StatefulProcessor as StatefulProcessor
    from .state.session import Session as Session
    from .state.session import SessionState as SessionState
    from .state.session import WindowState as WindowState
    from .state.sqlite import SQLiteStateBackend as SQLiteStateBackend
    from .state.store import CorruptStateError as CorruptStateError
    from .state.store import StateStore as StateStore
    from .state.table_join import TableJoinNode as TableJoinNode
    from .state.watermarks import WatermarkTracker as WatermarkTracker
    from .state.windows import Aggregator as Aggregator
    from .state.windows import SessionWindow as SessionWindow
    from .state.windows import SlidingWindow as SlidingWindow
    from .state.windows import TumblingWindow as TumblingWindow
    from .state.windows import WindowedAggregateNode as WindowedAggregateNode
    from .state.windows import WindowNode as WindowNode
    from .state.windows import WindowResult as WindowResult
