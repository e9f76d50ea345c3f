"""Hook implementations: the ``vector_store`` sink and its public name."""

from __future__ import annotations

from typing import Any

from haive.dataflow import hookimpl


@hookimpl
def haive_register_sinks() -> list[type[Any]]:
    from .sink import VectorStoreSink

    return [VectorStoreSink]


@hookimpl
def haive_streaming_exports() -> dict[str, str]:
    return {"VectorStoreSink": "haive_contrib_qdrant.sink:VectorStoreSink"}
