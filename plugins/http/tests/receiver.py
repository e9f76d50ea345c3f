"""A real HTTP receiver for the sink's tests: a Starlette app served by Hypercorn's trio
worker on 127.0.0.1, recording what it receives, failing on demand.

``plan`` holds the answers to give before accepting again (a status and headers each);
``crash_at=K`` makes it record its K-th request and then die before answering it (the
sink then retries something that was received: an exact duplicate); ``run`` serves
until its cancel scope is cancelled (``kill``), so a test can stop and restart it on the
same port.
"""

from __future__ import annotations

import logging
from collections import deque
from functools import partial
from typing import Any

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Receiver:
    def __init__(self, certfile: str | None = None, keyfile: str | None = None) -> None:
        self.certfile, self.keyfile = certfile, keyfile
        self.http_versions: list[str] = []
        self.items: list[Any] = []
        self.bodies: list[bytes] = []
        self.keys: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.requests = 0
        self.plan: deque[tuple[int, dict[str, str]]] = deque()
        #: Seconds to stall before answering 503 (never recorded), one per request.
        self.stalls: deque[float] = deque()
        self.crash_at: int | None = None
        self.crashed_items = 0
        self.crashed = trio.Event()
        self.port = 0
        self._scope: trio.CancelScope | None = None
        self.app = Starlette(routes=[Route("/ingest", self.ingest, methods=["POST", "PUT"])])

    @property
    def url(self) -> str:
        scheme = "https" if self.certfile else "http"
        return f"{scheme}://127.0.0.1:{self.port}/ingest"

    async def ingest(self, request: Request) -> Response:
        body = await request.body()
        self.requests += 1
        self.http_versions.append(request.scope["http_version"])
        self.headers.append(dict(request.headers))
        if self.stalls:
            await trio.sleep(self.stalls.popleft())
            return Response(b"too late", 503)
        if self.plan:
            status, headers = self.plan.popleft()
            return Response(f"planned failure {status}".encode(), status, headers)
        data = orjson.loads(body)
        self.items.extend(data if isinstance(data, list) else [data])
        self.bodies.append(body)
        self.keys.append(request.headers.get("idempotency-key", ""))
        if self.crash_at is not None and len(self.bodies) == self.crash_at:
            self.crash_at = None
            self.crashed_items = len(data) if isinstance(data, list) else 1
            self.kill()  # recorded, never answered
            self.crashed.set()
            await trio.sleep_forever()
        return Response(b"ok", 200)

    def kill(self) -> None:
        """Stop at once: listener and connections closed, nothing answered."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("tests.receiver")
        config.graceful_timeout = 0
        if self.certfile:
            config.certfile, config.keyfile = self.certfile, self.keyfile
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(partial(serve, self.app, config))
                self.port = int(str(binds[0]).rsplit(":", 1)[1])
                task_status.started()
