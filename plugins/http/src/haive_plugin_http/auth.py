"""Who may post to a webhook: a bearer token, or an HMAC signature over the raw body.

Both compare in constant time (:func:`hmac.compare_digest`), so the time an answer takes
says nothing about how much of a guess was right. A request without credentials is
answered 401, one with wrong credentials 403 (:class:`AuthFailure` carries the status and
a reason that names the header, never the secret).

Example::

    >>> import hashlib, hmac
    >>> github = HmacSignature("s3cret")          # GitHub's X-Hub-Signature-256 by default
    >>> body = b'{"zen": "Keep it logically awesome."}'
    >>> good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    >>> github.verify({"x-hub-signature-256": good}, body, now=0.0)
    >>> github.verify({"x-hub-signature-256": "sha256=00"}, body, now=0.0)
    Traceback (most recent call last):
    ...
    haive_plugin_http.auth.AuthFailure: 403: the X-Hub-Signature-256 signature does not match the body
    >>> BearerToken("t0ken").verify_headers({"authorization": "Bearer t0ken"})
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import duration, one_of


class AuthFailure(HaiveError):
    """A request's credentials are missing (``status`` 401) or wrong (403).

    Example::

        >>> failure = AuthFailure(401, "missing X-Signature signature header")
        >>> failure.status, str(failure)
        (401, '401: missing X-Signature signature header')
    """

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


def _secret(owner: str, name: str, value: object) -> bytes:
    if isinstance(value, str) and value:
        return value.encode()
    if isinstance(value, bytes) and value:
        return value
    raise ConfigError(f"{owner}({name}=...): {name} must be a non-empty str or bytes")


class BearerToken:
    """Accepts requests with ``Authorization: Bearer <token>`` for one of ``tokens``.

    Several tokens allow a rotation without downtime (the old and the new one both pass
    while callers switch). Checked from the headers alone, before the body is read.

    Example::

        >>> auth = BearerToken("new-token", "old-token")
        >>> auth.verify_headers({"authorization": "Bearer old-token"})
        >>> auth.verify_headers({})
        Traceback (most recent call last):
        ...
        haive_plugin_http.auth.AuthFailure: 401: missing Authorization: Bearer <token> header
    """

    def __init__(self, *tokens: str) -> None:
        if not tokens:
            raise ConfigError("BearerToken(): give at least one token")
        self._tokens = [_secret("BearerToken", "token", token) for token in tokens]

    def __repr__(self) -> str:
        return f"BearerToken(<{len(self._tokens)} token(s)>)"

    def verify_headers(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthFailure` unless the request carries one of the tokens."""
        value = headers.get("authorization")
        if value is None:
            raise AuthFailure(401, "missing Authorization: Bearer <token> header")
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise AuthFailure(401, "the Authorization header is not 'Bearer <token>'")
        candidate = given.strip().encode()
        matched = False
        for token in self._tokens:  # every token compared: no early exit to time
            matched |= hmac.compare_digest(candidate, token)
        if not matched:
            raise AuthFailure(403, "the bearer token is not accepted")


class HmacSignature:
    """Accepts requests whose ``header`` carries the HMAC of the raw body under ``secret``.

    The header's value is ``prefix`` followed by the digest (``encoding`` ``"hex"`` or
    ``"base64"``); the defaults are GitHub's (``X-Hub-Signature-256: sha256=<hex>``).
    Shopify's would be ``HmacSignature(secret, header="X-Shopify-Hmac-Sha256", prefix="",
    encoding="base64")``.

    With ``timestamp_header``, the signed message is ``<timestamp>.<body>`` (the sender's
    Unix time in seconds, as Stripe signs) and, with ``tolerance`` too, a timestamp further
    than that from the receiver's clock is refused: a captured request cannot be replayed
    later.

    Example::

        >>> signed = HmacSignature(b"k", header="X-Signature", prefix="", algorithm="sha1",
        ...                        timestamp_header="X-Timestamp", tolerance="5m")
        >>> body = b"[]"
        >>> digest = hmac.new(b"k", b"1000." + body, "sha1").hexdigest()
        >>> signed.verify({"x-signature": digest, "x-timestamp": "1000"}, body, now=1100.0)
        >>> signed.verify({"x-signature": digest, "x-timestamp": "1000"}, body, now=2000.0)
        Traceback (most recent call last):
        ...
        haive_plugin_http.auth.AuthFailure: 403: the X-Timestamp timestamp is 1000s away from now (tolerance 300s)
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        header: str = "X-Hub-Signature-256",
        algorithm: str = "sha256",
        prefix: str = "sha256=",
        encoding: str = "hex",
        timestamp_header: str | None = None,
        tolerance: Duration | None = None,
    ) -> None:
        owner = "HmacSignature"
        self._secret = _secret(owner, "secret", secret)
        if not isinstance(header, str) or not header.strip():
            raise ConfigError(f"{owner}(header={header!r}): header must be a header name")
        self.header = header
        if algorithm not in hashlib.algorithms_guaranteed or algorithm.startswith("shake"):
            allowed = sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake"))
            raise ConfigError(
                f"{owner}(algorithm={algorithm!r}): algorithm must be one of {allowed}, "
                f"got {algorithm!r}"
            )
        self.algorithm = algorithm
        if not isinstance(prefix, str):
            raise ConfigError(f"{owner}(prefix={prefix!r}): prefix must be a string")
        self.prefix = prefix
        self.encoding = one_of("hex", "base64").check(owner, "encoding", encoding)
        if timestamp_header is not None and (
            not isinstance(timestamp_header, str) or not timestamp_header.strip()
        ):
            raise ConfigError(
                f"{owner}(timestamp_header={timestamp_header!r}): timestamp_header must be "
                "a header name or None"
            )
        self.timestamp_header = timestamp_header
        if tolerance is not None and timestamp_header is None:
            raise ConfigError(
                f"{owner}(tolerance={tolerance!r}): tolerance needs timestamp_header (the "
                "header carrying the sender's time)"
            )
        self.tolerance = None if tolerance is None else duration(owner, "tolerance", tolerance)

    def __repr__(self) -> str:
        return f"HmacSignature(header={self.header!r}, algorithm={self.algorithm!r})"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise :class:`AuthFailure` unless ``body`` is signed (``headers`` lower-case)."""
        given = headers.get(self.header.lower())
        if given is None:
            raise AuthFailure(401, f"missing {self.header} signature header")
        if not given.startswith(self.prefix):
            raise AuthFailure(403, f"the {self.header} signature does not start with "
                                   f"{self.prefix!r}")
        try:
            if self.encoding == "hex":
                signature = bytes.fromhex(given[len(self.prefix):])
            else:
                signature = base64.b64decode(given[len(self.prefix):], validate=True)
        except (ValueError, binascii.Error):
            raise AuthFailure(403, f"the {self.header} signature is not {self.encoding}") from None
        message = body
        if self.timestamp_header is not None:
            stamp = headers.get(self.timestamp_header.lower())
            if stamp is None:
                raise AuthFailure(401, f"missing {self.timestamp_header} timestamp header")
            try:
                sent = float(stamp)
            except ValueError:
                raise AuthFailure(
                    403, f"the {self.timestamp_header} timestamp is not a number"
                ) from None
            if self.tolerance is not None and abs(now - sent) > self.tolerance:
                raise AuthFailure(
                    403,
                    f"the {self.timestamp_header} timestamp is {abs(now - sent):.0f}s away "
                    f"from now (tolerance {self.tolerance:g}s)",
                )
            message = stamp.encode() + b"." + body
        expected = hmac.new(self._secret, message, self.algorithm).digest()
        if not hmac.compare_digest(signature, expected):
            raise AuthFailure(403, f"the {self.header} signature does not match the body")


Authenticator = BearerToken | HmacSignature


def check_auth(owner: str, auth: object) -> Authenticator | None:
    """``auth`` if it is None, a :class:`BearerToken` or an :class:`HmacSignature`."""
    if auth is None or isinstance(auth, BearerToken | HmacSignature):
        return auth
    raise ConfigError(
        f"{owner}(auth={auth!r}): auth must be BearerToken(...), HmacSignature(...) or None"
    )

