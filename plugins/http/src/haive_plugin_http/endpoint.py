"""The webhook endpoint: one Starlette route per path, turning POSTs into accepted events.

Each request goes through, in order (the first failing check answers):

=====================================================  ======================================
check                                                  answer
=====================================================  ======================================
the source is stopping                                 503, ``Retry-After``
``Content-Type`` not one of ``content_types``          415, naming the accepted types
bearer token (from the headers, before the body)       401 missing, 403 wrong
``Content-Length`` over ``max_body_size``              413 (before reading)
the buffer is full                                     429, ``Retry-After`` (before reading)
the body, read up to ``max_body_size``                 413 as soon as it goes over
HMAC signature over the raw body                       401 missing, 403 wrong or stale
JSON decoding                                          400 with the decoder's reason
more events than the whole buffer holds                413
the events do not fit in the buffer now                429, ``Retry-After``
=====================================================  ======================================

Then the request is accepted: 202 ``{"accepted": n}`` (``ack="accepted"``), or, with
``ack="written"``, the answer waits until the pipeline wrote them: 200 ``{"written": n}``;
422 listing the events that failed in the pipeline (the others were written); 503 if the
source stopped first, 504 after ``ack_timeout`` (the events may still be written later).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import trio
from starlette.requests import Request
from starlette.responses import Response

from .auth import AuthFailure, BearerToken, HmacSignature
from .event import WebhookEvent
from .intake import Ticket

if TYPE_CHECKING:
    from .source import WebhookSource


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _refuse(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return _answer(status, {"error": reason}, headers)


def is_json(content_type: str) -> bool:
    """``application/json`` and the ``+json`` types (``application/cloudevents+json``)."""
    return content_type == "application/json" or content_type.endswith("+json")


class Endpoint:
    """The Starlette endpoint (:meth:`handle`) of a
    :class:`~haive_plugin_http.source.WebhookSource`.

    Example::

        >>> from haive_plugin_http import WebhookSource
        >>> Endpoint(WebhookSource(port=0, retry_after="2.5s")).retry_after
        {'Retry-After': '3'}
    """

    def __init__(self, source: WebhookSource) -> None:
        self.source = source
        self.retry_after = {"Retry-After": str(max(1, math.ceil(source.retry_after)))}

    async def handle(self, request: Request) -> Response:
        source = self.source
        stats = source.stats
        stats.requests += 1
        intake = source.intake
        if intake is None or intake.closed:
            stats.refused_stopping += 1
            return _refuse(503, "the webhook source is stopping", self.retry_after)
        scope = request.scope
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in source.content_types:
            stats.refused_content_type += 1
            return _refuse(
                415,
                f"Content-Type {content_type or '(none)'!r} is not accepted; send one of "
                f"{', '.join(source.content_types)}",
            )
        auth = source.auth
        try:
            if isinstance(auth, BearerToken):
                auth.verify_headers(headers)
        except AuthFailure as failure:
            stats.refused_auth += 1
            return _refuse(failure.status, failure.reason)
        limit = source.max_body_size
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            stats.refused_too_large += 1
            return _refuse(413, f"the body has {declared} bytes; max_body_size is {limit}")
        if not intake.free:
            stats.refused_full += 1
            return _refuse(429, "the webhook buffer is full; retry later", self.retry_after)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                stats.refused_too_large += 1
                return _refuse(413, f"the body is over max_body_size ({limit} bytes)")
        received = time.time()
        if isinstance(auth, HmacSignature):
            try:
                auth.verify(headers, bytes(body), now=received)
            except AuthFailure as failure:
                stats.refused_auth += 1
                return _refuse(failure.status, failure.reason)
        try:
            events = self._events(request, headers, content_type, bytes(body), received)
        except orjson.JSONDecodeError as error:
            stats.refused_malformed += 1
            return _refuse(400, f"malformed JSON: {error}")
        if len(events) > intake.capacity:
            stats.refused_too_large += 1
            return _refuse(
                413,
                f"the request has {len(events)} events; the webhook buffer holds "
                f"{intake.capacity} (buffer_size): send smaller batches",
            )
        ticket = Ticket(len(events), len(events)) if source.ack == "written" and events else None
        if not intake.offer(events, ticket):
            if intake.closed:
                stats.refused_stopping += 1
                return _refuse(503, "the webhook source is stopping", self.retry_after)
            stats.refused_full += 1
            return _refuse(429, "the webhook buffer is full; retry later", self.retry_after)
        stats.accepted += len(events)
        if ticket is None:
            return _answer(202 if source.ack == "accepted" else 200,
                           {"accepted" if source.ack == "accepted" else "written": len(events)})
        return await self._answer_when_written(ticket)

    def _events(
        self,
        request: Request,
        headers: dict[str, str],
        content_type: str,
        body: bytes,
        received: float,
    ) -> list[WebhookEvent]:
        scope = request.scope
        client = scope.get("client")
        raw_query = scope["query_string"].decode("latin-1")
        query = dict(request.query_params) if raw_query else {}
        path: str = scope["path"]
        remote = (str(client[0]), int(client[1])) if client else None
        make: Callable[[Any, int], WebhookEvent] = lambda data, index: WebhookEvent(  # noqa: E731
            data, path, headers, query, raw_query, remote, received, content_type, index
        )
        if not is_json(content_type):
            return [make(body, 0)]
        data = orjson.loads(body)
        if isinstance(data, list) and self.source.split_arrays:
            return [make(item, index) for index, item in enumerate(data)]
        return [make(data, 0)]

    async def _answer_when_written(self, ticket: Ticket) -> Response:
        stats = self.source.stats
        with trio.move_on_after(self.source.ack_timeout):
            await ticket.done.wait()
        if not ticket.done.is_set():
            stats.answered_timeout += 1
            return _refuse(
                504,
                f"accepted, but not written within ack_timeout "
                f"({self.source.ack_timeout:g}s); the events may still be written",
            )
        if ticket.error is not None:
            stats.answered_not_written += 1
            return _refuse(503, ticket.error, self.retry_after)
        if ticket.failures:
            stats.answered_failed += 1
            failed = [{"index": index, "error": reason} for index, reason in ticket.failures]
            return _answer(422, {"written": ticket.size - len(failed), "failed": failed})
        stats.answered_written += 1
        return _answer(200, {"written": ticket.size})
