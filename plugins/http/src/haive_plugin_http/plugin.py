"""haive-dataflow hook implementations of haive-plugin-http.

What it provides is also declared, for tools that do not import it, in ``pyproject.toml``
(``haive.dataflow.provides`` and ``.exports`` entry points).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from haive.dataflow import hookimpl


@hookimpl
def haive_register_sources() -> Iterable[type[Any]]:
    from .source import WebhookSource

    return [WebhookSource]


@hookimpl
def haive_register_sinks() -> Iterable[type[Any]]:
    from .sink import HttpSink

    return [HttpSink]


@hookimpl
def haive_run_services(pipeline: Any) -> Any:
    """Serve a :class:`~haive_plugin_http.source.WebhookSource` pipeline's endpoint while
    ``haive run`` runs it (imports nothing of the plugin for other pipelines)."""
    source = getattr(pipeline, "source", None)
    if source is None or not type(source).__module__.startswith("haive_plugin_http."):
        return None
    from .source import WebhookSource

    if not isinstance(source, WebhookSource):
        return None
    return _serving(source)


@asynccontextmanager
async def _serving(source: Any) -> AsyncIterator[None]:
    async with source.serving() as url:
        print(f"webhook: {url}", file=sys.stderr, flush=True)
        yield None  # None: `haive run` would print an address as its "dashboard"
