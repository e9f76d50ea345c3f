"""haive-plugin-http: a webhook source (a trio HTTP server) and a batched HTTP sink (httpx).

The names are imported on first use (PEP 562), so plugin discovery loads neither Hypercorn,
Starlette nor httpx.

Example::

    >>> from haive.dataflow.plugins import get_registry
    >>> get_registry().source("webhook").__name__, get_registry().sink("http").__name__
    ('WebhookSource', 'HttpSink')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Every public name -> the module of this package defining it.
NAMES: dict[str, str] = {
    "AuthFailure": "auth",
    "BearerToken": "auth",
    "HmacSignature": "auth",
    "HttpDeliveryError": "sink",
    "HttpSink": "sink",
    "HttpSinkStats": "sink",
    "HttpStatusError": "sink",
    "WebhookEvent": "event",
    "WebhookServerError": "source",
    "WebhookSource": "source",
    "WebhookSourceStats": "source",
    "retry_after_seconds": "sink",
}

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    module = NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'haive_plugin_http' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .auth import AuthFailure as AuthFailure
    from .auth import BearerToken as BearerToken
    from .auth import HmacSignature as HmacSignature
    from .event import WebhookEvent as WebhookEvent
    from .sink import HttpDeliveryError as HttpDeliveryError
    from .sink import HttpSink as HttpSink
    from .sink import HttpSinkStats as HttpSinkStats
    from .sink import HttpStatusError as HttpStatusError
    from .sink import retry_after_seconds as retry_after_seconds
    from .source import WebhookServerError as WebhookServerError
    from .source import WebhookSource as WebhookSource
    from .source import WebhookSourceStats as WebhookSourceStats
