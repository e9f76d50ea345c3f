"""The item a :class:`~haive_plugin_http.source.WebhookSource` yields: one webhook event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen(eq=False)
class WebhookEvent:
    """One event received by the webhook endpoint, and the request it came in.

    ``data`` is the decoded body (a JSON value; for a JSON array sent as a batch, one of
    its elements; for a non-JSON content type the body's bytes). ``timestamp`` is when the
    request was received (seconds since the epoch): the event time window nodes read by
    default (``item.timestamp``). ``headers`` has lower-case names; ``query`` maps each
    query parameter to its last value (``raw_query`` has them all); ``remote`` is the
    peer's ``(host, port)``; ``index`` is the event's position in its request's batch
    (0 for a single event). Events compare by identity: the source traces a failed item
    to its request that way.

    Example::

        >>> event = WebhookEvent(data={"n": 1}, path="/hooks/github",
        ...                      headers={"x-github-event": "push"}, query={"env": "prod"},
        ...                      raw_query="env=prod", remote=("10.0.0.7", 51234),
        ...                      timestamp=1700000000.5, content_type="application/json")
        >>> event.data["n"], event.headers["x-github-event"], event.query["env"]
        (1, 'push', 'prod')
    """

    data: Any
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    raw_query: str
    remote: tuple[str, int] | None
    timestamp: float
    content_type: str
    index: int = 0
