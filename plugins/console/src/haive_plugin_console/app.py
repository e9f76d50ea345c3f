"""The console's ASGI application: the REST API, its OpenAPI document and the page.

Starlette (on AnyIO, so it runs on trio) served by Hypercorn's trio worker: the stack
``haive-plugin-http`` already uses, so the console adds no second HTTP stack.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from .auth import TokenAuth
from .console import Conflict, Console, NotFound
from .openapi import openapi_document


class JSON(Response):
    """orjson-encoded JSON (dead-letter payloads may hold any JSON the pipeline carried)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=repr)


class BadRequest(ValueError):
    """A parameter or body the API cannot use (answered 400)."""


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _replay_ids(body: Any) -> list[str]:
    """The ids of a replay request ``{"ids": [...]}``: strings as the listing gives them."""
    usage = 'the body must be {"ids": [dead letter ids (strings), at most 1000]}'
    if not isinstance(body, dict) or set(body) != {"ids"} or not isinstance(body["ids"], list):
        raise BadRequest(usage)
    ids = body["ids"]
    if len(ids) > 1000 or not all(isinstance(i, str) and 0 < len(i) <= 48 for i in ids):
        raise BadRequest(usage)
    return list(ids)


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def _page(name: str, media_type: str) -> Response:
    text = resources.files("haive_plugin_console").joinpath("static", name).read_bytes()
    return Response(text, media_type=media_type, headers={"cache-control": "no-store"})


def build_app(console: Console, *, token: str | None = None) -> ASGIApp:
    """The ASGI app serving ``console``; with ``token``, API calls need it (Bearer).

    Example::

        >>> app = build_app(Console(), token="s3cret")
        >>> type(app).__name__
        'TokenAuth'
    """

    async def page(request: Request) -> Response:
        return _page("console.html", "text/html; charset=utf-8")

    async def script(request: Request) -> Response:
        return _page("console.js", "text/javascript; charset=utf-8")

    async def health(request: Request) -> Response:
        return JSON({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return JSON(openapi_document())

    async def pipelines(request: Request) -> Response:
        return JSON(await console.pipelines())

    async def workers(request: Request) -> Response:
        return JSON(await console.workers())

    async def partitions(request: Request) -> Response:
        return JSON(await console.partitions())

    async def pipeline(request: Request) -> Response:
        return JSON(await console.pipeline(request.path_params["pipeline"]))

    async def topology(request: Request) -> Response:
        return JSON(console.topology(request.path_params["pipeline"]))

    async def metrics(request: Request) -> Response:
        return JSON(console.metrics(request.path_params["pipeline"]))

    async def history(request: Request) -> Response:
        p = request.path_params
        return JSON(console.node_history(p["pipeline"], p["node"]))

    async def pause(request: Request) -> Response:
        return JSON(await console.pause(request.path_params["pipeline"], client=_client(request)))

    async def resume(request: Request) -> Response:
        return JSON(await console.resume(request.path_params["pipeline"], client=_client(request)))

    async def dead_letters(request: Request) -> Response:
        return JSON(
            await console.dead_letters(
                request.path_params["pipeline"],
                node=request.query_params.get("node"),
                error=request.query_params.get("error"),
                offset=_int_param(request, "offset", 0, 0, 1_000_000),
                limit=_int_param(request, "limit", 100, 1, 1000),
            )
        )

    async def dead_letter(request: Request) -> Response:
        letter = await console.dead_letter(
            request.path_params["pipeline"], request.path_params["id"]
        )
        return JSON(letter)

    async def replay(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body must be JSON: {exc}") from None
        ids = _replay_ids(body)
        name = request.path_params["pipeline"]
        return JSON(await console.replay(name, ids, client=_client(request)))

    async def alerts(request: Request) -> Response:
        return JSON(console.alerts())

    async def acknowledge(request: Request) -> Response:
        p = request.path_params
        return JSON(console.acknowledge(p["pipeline"], p["rule"], client=_client(request)))

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSON({"error": str(exc)}, status_code=404)

    async def conflict(request: Request, exc: Exception) -> Response:
        return JSON({"error": str(exc)}, status_code=409)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSON({"error": str(exc)}, status_code=400)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return JSON({"error": str(getattr(exc, "detail", exc))}, status_code=status)

    base = "/api/pipelines/{pipeline}"
    routes = [
        Route("/", page),
        Route("/console.js", script),
        Route("/healthz", health),
        Route("/openapi.json", openapi),
        Route("/api/pipelines", pipelines),
        Route("/api/workers", workers),
        Route("/api/partitions", partitions),
        Route("/api/alerts", alerts),
        Route(base, pipeline),
        Route(base + "/topology", topology),
        Route(base + "/metrics", metrics),
        Route(base + "/nodes/{node}/history", history),
        Route(base + "/pause", pause, methods=["POST"]),
        Route(base + "/resume", resume, methods=["POST"]),
        Route(base + "/dead-letters", dead_letters),
        Route(base + "/dead-letters/replay", replay, methods=["POST"]),
        Route(base + "/dead-letters/{id}", dead_letter),
        Route(base + "/alerts/{rule}/acknowledge", acknowledge, methods=["POST"]),
    ]
    from starlette.exceptions import HTTPException

    app = Starlette(
        routes=routes,
        exception_handlers={
            NotFound: not_found,
            Conflict: conflict,
            BadRequest: bad_request,
            HTTPException: http_error,
        },
    )
    return TokenAuth(app, token) if token is not None else app
