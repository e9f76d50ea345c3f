"""Serving the console: Hypercorn's trio worker in the caller's nursery (no thread, no
event loop of its own), and the ``haive run`` service."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from haive.dataflow.errors import ConfigError, HaiveError

from .app import build_app
from .auth import token_for
from .console import Console

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

log = logging.getLogger("haive.console")


class ConsoleServerError(HaiveError):
    """The console could not listen (address in use, permission denied...)."""


@attrs.frozen
class ConsoleAddress:
    """Where a serving console listens and the token it requires (``None``: none).

    Example::

        >>> ConsoleAddress("http://127.0.0.1:8080/", "t").page_url
        'http://127.0.0.1:8080/#token=t'
    """

    url: str
    token: str | None

    @property
    def page_url(self) -> str:
        """The page's address, with the token in the fragment (never sent to servers)."""
        return self.url if self.token is None else f"{self.url}#token={self.token}"


def _check(host: object, port: object) -> None:
    if not isinstance(host, str) or not host:
        raise ConfigError(f"console(host={host!r}): host must be an address or host name")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(
            f"console(port={port!r}): port must be an integer in 0..65535, got {port!r}"
        )


@asynccontextmanager
async def serving(
    console: Console, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> AsyncIterator[ConsoleAddress]:
    """Serve ``console`` for the duration of the block; yields its :class:`ConsoleAddress`.

    Beyond loopback a token is always required (a fresh one unless ``token`` is given).

    Example::

        >>> import httpx, trio
        >>> async def main():
        ...     async with serving(Console()) as address:
        ...         async with httpx.AsyncClient() as client:
        ...             return (await client.get(address.url + "api/pipelines")).json()
        >>> trio.run(main)
        []
    """
    _check(host, port)
    token = token_for(host, token)
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("haive.console.server")
    config.graceful_timeout = 1.0
    app = cast("ASGIFramework", build_app(console, token=token))
    stopping = trio.Event()
    started = False
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(
                    app, config, shutdown_trigger=stopping.wait, task_status=task_status
                )
            )
            started = True
            bound = str(binds[0])
            address = ConsoleAddress(bound.rstrip("/") + "/", token)
            log.info(
                "console listening on %s (token %s)",
                address.url,
                "required" if token else "not required",
            )
            try:
                yield address
            finally:
                stopping.set()
    except BaseExceptionGroup as group:
        refused = group.subgroup(OSError)
        if started or refused is None:
            raise
        raise ConsoleServerError(
            f"the console cannot listen on {host}:{port}: {refused.exceptions[0]}"
        ) from group


@asynccontextmanager
async def console_service(pipeline: Any) -> AsyncIterator[str | None]:
    """The console beside a pipeline ``haive run`` starts. ``HAIVE_CONSOLE_HOST`` /
    ``HAIVE_CONSOLE_PORT`` / ``HAIVE_CONSOLE_TOKEN`` choose address and token (default
    127.0.0.1, any free port, none on loopback)."""
    from haive.dataflow import StreamingPipeline

    if not isinstance(pipeline, StreamingPipeline):
        yield None
        return
    # The observability plugin's dashboard service logs the same alerts beside it.
    console = Console(alert_notifiers=())
    console.watch(pipeline)
    host = os.environ.get("HAIVE_CONSOLE_HOST", "127.0.0.1")
    raw_port = os.environ.get("HAIVE_CONSOLE_PORT", "0")
    try:
        port = int(raw_port)
    except ValueError:
        raise ConfigError(f"HAIVE_CONSOLE_PORT must be an integer, got {raw_port!r}") from None
    async with serving(
        console, host=host, port=port, token=os.environ.get("HAIVE_CONSOLE_TOKEN")
    ) as address:
        print(f"console: {address.page_url}", file=sys.stderr, flush=True)
        yield None  # printed above, with its token: `haive run` would call it a dashboard
