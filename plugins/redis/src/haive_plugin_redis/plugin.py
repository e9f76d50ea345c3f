"""haive-dataflow hook implementations of haive-plugin-redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from haive.dataflow import hookimpl


@hookimpl
def haive_register_state_backends() -> Iterable[type[Any]]:
    from .backend import RedisStateBackend

    return [RedisStateBackend]


@hookimpl
def haive_register_sources() -> Iterable[type[Any]]:
    from .replay import StreamRangeSource
    from .streams import RedisStreamSource

    return [RedisStreamSource, StreamRangeSource]


@hookimpl
def haive_register_sinks() -> Iterable[type[Any]]:
    from .streams import RedisStreamSink

    return [RedisStreamSink]


@hookimpl
def haive_register_cli_commands() -> Iterable[type[Any]]:
    from .replay import ReplayCommand
    from .worker import WorkerCommand

    return [WorkerCommand, ReplayCommand]


@hookimpl
def haive_streaming_exports() -> Mapping[str, str]:
    return {
        "RedisStateBackend": "haive_plugin_redis.backend:RedisStateBackend",
        "RedisStreamSource": "haive_plugin_redis.streams:RedisStreamSource",
        "RedisStreamSink": "haive_plugin_redis.streams:RedisStreamSink",
        "StreamEntry": "haive_plugin_redis.streams:StreamEntry",
        "StreamRangeSource": "haive_plugin_redis.replay:StreamRangeSource",
        "FailoverClient": "haive_plugin_redis.failover:FailoverClient",
        "Retention": "haive_plugin_redis.retention:Retention",
        "RetainedStreamSink": "haive_plugin_redis.retention:RetainedStreamSink",
        "Erasure": "haive_plugin_redis.retention:Erasure",
    }
