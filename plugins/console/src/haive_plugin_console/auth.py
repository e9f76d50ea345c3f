"""Token authentication for the console: on by default when it listens beyond loopback."""

from __future__ import annotations

import hmac
import ipaddress
import secrets

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths served without a token: the page itself (it holds no data; it asks for the token
#: and sends it with every API call) and the health check.
PUBLIC_PATHS = frozenset({"/", "/healthz", "/console.js"})


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach.

    Example::

        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_for(host: str, token: str | None) -> str | None:
    """The token to require: ``token`` if given, else a fresh one when ``host`` is not
    loopback, else ``None`` (no authentication on loopback unless asked).

    Example::

        >>> token_for("127.0.0.1", None) is None, token_for("0.0.0.0", "s3cret")
        (True, 's3cret')
        >>> len(token_for("0.0.0.0", None)) > 20
        True
    """
    if token is not None:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


class TokenAuth:
    """ASGI middleware: requests need ``Authorization: Bearer <token>`` (compared in
    constant time), except :data:`PUBLIC_PATHS`; others get 401 with a JSON error.

    Example::

        >>> from starlette.applications import Starlette
        >>> app = TokenAuth(Starlette(), "s3cret")
        >>> app.token
        's3cret'
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (
            scope["type"] == "http" and scope["path"] in PUBLIC_PATHS
        ):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake completes
            await send({"type": "websocket.close", "code": 1008})
            return
        body = orjson.dumps({"error": "a valid 'Authorization: Bearer <token>' header is required"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="haive console"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
