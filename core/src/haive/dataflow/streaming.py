"""The import path of the product description: ``from haive.dataflow.streaming import ...``.

Core names are here directly. Names that plugins provide (``WebSocketManager``,
``StateStore``, ``AlertManager``...) resolve on first use through the
``haive_streaming_exports`` hook; a name whose plugin is not installed raises an error that
names the package to install.

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
from ._catalogue import EXPORTS, install_hint
from .backpressure import SlidingWindowStrategy as SlidingWindowStrategy
from .builtins.sinks import CallbackSink as CallbackSink
from .builtins.sinks import JsonLinesSink as JsonLinesSink
from .builtins.sinks import MemorySink as MemorySink
from .builtins.sinks import StdoutSink as StdoutSink
from .builtins.sources import AsyncIterableSource as AsyncIterableSource
from .builtins.sources import IterableSource as IterableSource
from .builtins.sources import JsonLinesSource as JsonLinesSource
from .builtins.sources import MemorySource as MemorySource
from .chain import ChainResult as ChainResult
from .chain import ChainStepError as ChainStepError
from .chain import TransformationChain as TransformationChain
from .errors import MissingPluginError
from .event_pipeline import PipelineHandle as PipelineHandle
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
from .streaming_pipeline import PipelineRun as PipelineRun
from .streaming_pipeline import ResultStream as ResultStream

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

_plugin_exports: dict[str, str] | None = None


def _exports() -> dict[str, str]:
    global _plugin_exports
    if _plugin_exports is None:
        from .plugins import get_registry

        merged: dict[str, str] = {}
        hook = get_registry().plugin_manager.hook.haive_streaming_exports
        for mapping in hook():
            merged.update(mapping)
        _plugin_exports = merged
    return _plugin_exports


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    target = _exports().get(name)
    if target is not None:
        module_name, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    package = _catalogue_exports().get(name)
    if package is not None:
        raise MissingPluginError(
            f"haive.dataflow.streaming.{name} is provided by the plugin {package}; "
            f"{install_hint(package)}",
            name=__name__,
        )
    raise AttributeError(f"module 'haive.dataflow.streaming' has no attribute {name!r}")


def _catalogue_exports() -> dict[str, str]:
    return EXPORTS


def __dir__() -> list[str]:
    return sorted({*__all__, *_exports()})
