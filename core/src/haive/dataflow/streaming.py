"""The import path of the product description: ``from haive.dataflow.streaming import ...``.

Core names are here directly; the core's state and checkpoint names are imported on first
use (a static table). Names that plugins add resolve on first use from what each installed
plugin declares in its metadata (its ``haive.dataflow.exports`` entry points: no plugin is
imported, and the registry is not built, to find one). A name whose plugin is not installed
raises an error that names the distribution to install (from the first-party plugin
directory, see :mod:`haive.dataflow.plugins.catalogue`).

Example::

    >>> from haive.dataflow.streaming import EventPipeline, FilterNode
    >>> EventPipeline.__name__
    'EventPipeline'
"""

from __future__ import annotations

import importlib
from typing import Any

from . import *  # noqa: F403
from . import __all__ as _core_names
from .builtins.sinks import CallbackSink as CallbackSink
from .builtins.sinks import JsonLinesSink as JsonLinesSink
from .builtins.sinks import MemorySink as MemorySink
from .builtins.sinks import StdoutSink as StdoutSink
from .builtins.sources import AsyncIterableSource as AsyncIterableSource
from .builtins.sources import IterableSource as IterableSource
from .builtins.sources import JsonLinesSource as JsonLinesSource
from .builtins.sources import MemorySource as MemorySource
from .errors import MissingPluginError
from .pipelines.chain import ChainResult as ChainResult
from .pipelines.chain import ChainStepError as ChainStepError
from .pipelines.chain import TransformationChain as TransformationChain
from .pipelines.event_pipeline import PipelineHandle as PipelineHandle
from .pipelines.streaming_pipeline import PipelineRun as PipelineRun
from .pipelines.streaming_pipeline import ResultStream as ResultStream
from .plugins import catalogue as _catalogue
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
from .runtime.backpressure import SlidingWindowStrategy as SlidingWindowStrategy

_LOCAL = [
    "AsyncIterableSource",
    "CallbackSink",
    "ChainResult",
    "ChainStepError",
    "EmptyStreamError",
    "IterableSource",
    "JsonLinesSink",
    "JsonLinesSource",
    "MemorySink",
    "MemorySource",
    "Observable",
    "ObservableSource",
    "Operators",
    "PipelineHandle",
    "PipelineRun",
    "ReactiveStream",
    "ResultStream",
    "SharedObservable",
    "SlidingWindowStrategy",
    "StdoutSink",
    "StreamIterator",
    "Subscriber",
    "Subscription",
    "TransformationChain",
    "Window",
]

__all__ = [*_core_names, *_LOCAL]

_STATE = "haive.dataflow.state"

#: The core's names imported on first use: state stores, windows and checkpoints.
_LAZY_CORE: dict[str, str] = {
    "StateStore": f"{_STATE}.store:StateStore",
    "StateBackend": f"{_STATE}.backend:StateBackend",
    "MemoryStateBackend": f"{_STATE}.memory:MemoryStateBackend",
    "SQLiteStateBackend": f"{_STATE}.sqlite:SQLiteStateBackend",
    "CorruptStateError": f"{_STATE}.store:CorruptStateError",
    "StatefulProcessor": f"{_STATE}.processor:StatefulProcessor",
    "KeyedState": f"{_STATE}.processor:KeyedState",
    "WindowState": f"{_STATE}.session:WindowState",
    "SessionState": f"{_STATE}.session:SessionState",
    "Session": f"{_STATE}.session:Session",
    "WindowedAggregateNode": f"{_STATE}.windows:WindowedAggregateNode",
    "WindowNode": f"{_STATE}.windows:WindowNode",
    "WindowResult": f"{_STATE}.windows:WindowResult",
    "TumblingWindow": f"{_STATE}.windows:TumblingWindow",
    "SlidingWindow": f"{_STATE}.windows:SlidingWindow",
    "SessionWindow": f"{_STATE}.windows:SessionWindow",
    "Aggregator": f"{_STATE}.windows:Aggregator",
    "Checkpointer": "haive.dataflow.state.checkpoint:Checkpointer",
    "CheckpointableSource": "haive.dataflow.state.checkpoint:CheckpointableSource",
    "CheckpointableSink": "haive.dataflow.state.checkpoint:CheckpointableSink",
}


def _exports() -> dict[str, str]:
    """Every lazily imported name: the core's, then those of installed, unblocked plugins."""
    return {**_catalogue.loaded_exports(), **_LAZY_CORE}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    target = _exports().get(name)
    if target is not None:
        module_name, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    manifest = _catalogue.exporter_of(name)
    if manifest is not None:
        package = manifest.distribution
        raise MissingPluginError(
            f"haive.dataflow.streaming.{name} is provided by the plugin {package}; "
            f"{_catalogue.install_hint(package)}",
            name=__name__,
        )
    raise AttributeError(f"module 'haive.dataflow.streaming' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_exports()})
