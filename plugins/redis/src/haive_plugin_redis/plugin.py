"""haive-dataflow hook implementations of haive-plugin-redis.

What it provides is also declared, for tools that do not import it, in ``pyproject.toml``
(``haive.dataflow.provides`` and ``.exports`` entry points).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from haive.dataflow import hookimpl


@hookimpl
def haive_register_state_backends() -> Iterable[type[Any]]:
    from .backend import RedisStateBackend

    return [RedisStateBackend]


@hookimpl
def haive_register_sources() -> Iterable[type[Any]]:
    from .partitioned import PartitionedStreamSource
    from .replay import StreamRangeSource
    from .streams import RedisStreamSource

    return [RedisStreamSource, StreamRangeSource, PartitionedStreamSource]


@hookimpl
def haive_register_sinks() -> Iterable[type[Any]]:
    from .partitioned_sink import PartitionedStreamSink
    from .streams import RedisStreamSink

    return [RedisStreamSink, PartitionedStreamSink]


@hookimpl
def haive_register_cli_commands() -> Iterable[type[Any]]:
    from .replay import ReplayCommand

    return [ReplayCommand]
