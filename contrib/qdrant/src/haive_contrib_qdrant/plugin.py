"""Hook implementations: the ``vector_store`` sink.

Its public name and what it provides are declared in ``pyproject.toml`` (the
``haive.dataflow.exports`` and ``haive.dataflow.provides`` entry points).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from haive.dataflow import hookimpl

if TYPE_CHECKING:
    from haive.dataflow.io.sinks import StreamSink


@hookimpl
def haive_register_sinks() -> list[type[StreamSink]]:
    from .sink import VectorStoreSink

    return [VectorStoreSink]
