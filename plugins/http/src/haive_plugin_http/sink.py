"""HTTP sink: the pipeline's outputs POSTed in batches (a JSON array per request) with httpx.

httpx's :class:`~httpx.AsyncClient` runs on trio natively: its transport (httpcore) does its
I/O through AnyIO, which detects the running trio loop. So the sink needs no bridge: its
requests are ordinary trio checkpoints, cancelled by the pipeline's cancel scopes.

**Delivery.** ``write_batch`` returns only when every request was answered 2xx, so an
acknowledging source acknowledges nothing the receiver did not take. A request that fails
with a connection error, a timeout, 408, 429 or 5xx is sent again after a pause (``retry``,
a :class:`~haive.dataflow.runtime.retry.RetryPolicy`: exponential backoff with jitter;
a 429 or 503 with ``Retry-After`` waits at least that long, up to ``max_retry_after``).
After ``retry.attempts`` tries, or at once for any other status (a 4xx says retrying cannot
help), its items are given up: the sink raises
:class:`~haive.dataflow.io.sinks.RejectedItems` for them, with an error naming the status
and the start of the response body, so the pipeline sends them to its dead-letter sink (or
the acknowledging source's ``reject``) and goes on with the rest. Items that do not encode
as JSON are rejected the same way.

A retried request may have been received the first time (the answer was lost): the
receiver sees it twice. Each request carries an ``Idempotency-Key`` header, the same on
every retry, so a receiver can drop the copies.
"""

from __future__ import annotations

import email.utils
import secrets
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import attrs
import httpx
import orjson
import trio

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.io.serializers import typed_event_fields
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.io.trace_headers import outgoing_trace_headers
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.units import Duration
from haive.dataflow.runtime.validation import BOOL, POSITIVE_INT, duration, one_of

DEFAULT_RETRY = RetryPolicy(attempts=6, backoff=0.2, max_backoff=10.0, jitter=0.5)
OWNER = "HttpSink"
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class HttpDeliveryError(HaiveError):
    """A request of the :class:`HttpSink` failed for good (its items are rejected).

    Example::

        >>> str(HttpDeliveryError("POST http://h/x failed after 6 attempt(s): ConnectError"))
        'POST http://h/x failed after 6 attempt(s): ConnectError'
    """


class HttpStatusError(HttpDeliveryError):
    """The receiver answered a status that is not 2xx (the start of its body included).

    Example::

        >>> error = HttpStatusError("POST", "http://h/x", 422, "Unprocessable Entity",
        ...                         '{"detail": "bad"}', attempts=1)
        >>> error.status
        422
        >>> print(error)
        POST http://h/x answered 422 Unprocessable Entity: '{"detail": "bad"}'
    """

    def __init__(self, method: str, url: str, status: int, reason: str, excerpt: str,
                 attempts: int) -> None:
        self.status = status
        self.excerpt = excerpt
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{method} {url} answered {status} {reason}{tried}: {excerpt!r}")


@attrs.define
class HttpSinkStats:
    """What an :class:`HttpSink` did.

    Example::

        >>> HttpSinkStats().retries
        0
    """

    requests: int = 0  # requests answered 2xx
    items: int = 0  # items in them
    retries: int = 0  # requests sent again
    rejected: int = 0  # items given up (dead-lettered)
    waited_retry_after: float = 0.0  # seconds waited because a Retry-After asked for it


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date).

    Example::

        >>> retry_after_seconds("3"), retry_after_seconds(None), retry_after_seconds("soon")
        (3.0, None, None)
        >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
        10.0
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _json_default(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return typed_event_fields(value)  # attrs, msgspec and pydantic events; else TypeError


def _request_trace(
    trace: Sequence[Mapping[str, str] | None] | None, indexes: list[int]
) -> Mapping[str, str] | None:
    """The trace headers of one request: its first traced item's (a request has one
    ``traceparent``; the items of a batch request usually share their batch's span)."""
    if trace is None:
        return None
    for index in indexes:
        if (headers := trace[index]) is not None:
            return headers
    return None


class HttpSink(StreamSink):
    """POSTs items to ``url``: a JSON array of up to ``batch_size`` items per request, or
    one request per item (``per_item=True``, the item itself as the body).

    ``headers`` are sent with every request; ``bearer_token`` adds
    ``Authorization: Bearer ...``; ``auth`` is any httpx auth (a ``(user, password)``
    tuple for Basic). Items are encoded with orjson (attrs classes and objects with a
    ``to_dict`` too); ``encode`` turns each item into what is sent first. Timeouts are
    durations; ``max_connections`` bounds the connection pool; ``concurrency`` requests of
    one ``write_batch`` are in flight at once (1 keeps the receiver's order);
    ``http2=True`` speaks HTTP/2 where the server offers it (over TLS, by ALPN);
    ``verify`` is False, True (the system's CAs), a CA bundle's path or an SSL context.

    Example::

        >>> import trio
        >>> from haive.dataflow.errors import ConfigError
        >>> HttpSink("ftp://example.org/")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: HttpSink(url='ftp://example.org/'): url must be an http:// or https:// URL, got 'ftp://example.org/'
        >>> sink = HttpSink("http://127.0.0.1:9/ingest", retry=RetryPolicy(attempts=1),
        ...                 timeout="1s")
        >>> async def main():
        ...     async with sink:
        ...         try:
        ...             await sink.write_batch([{"n": 1}])
        ...         except RejectedItems as error:
        ...             return type(error.errors[0]).__name__, sink.stats.rejected
        >>> trio.run(main)
        ('HttpDeliveryError', 1)
    """

    PLUGIN_NAME = "http"

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        batch_size: int = 500,
        per_item: bool = False,
        encode: Callable[[Any], Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_retry_after: Duration = "60s",
        timeout: Duration = "10s",
        connect_timeout: Duration | None = None,
        max_connections: int = 10,
        concurrency: int = 1,
        http2: bool = False,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{OWNER}(url={url!r}): url must be an http:// or https:// URL, got {url!r}"
            )
        try:
            httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as error:
            raise ConfigError(f"{OWNER}(url={url!r}): {error}") from None
        self.url = url
        self.method = one_of("POST", "PUT", "PATCH").check(OWNER, "method", method)
        if headers is not None and (
            not isinstance(headers, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise ConfigError(f"{OWNER}(headers={headers!r}): headers must map str to str")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if bearer_token is not None:
            if not isinstance(bearer_token, str) or not bearer_token:
                raise ConfigError(f"{OWNER}(bearer_token=...): bearer_token must be a string")
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        if auth is not None and not isinstance(auth, httpx.Auth | tuple):
            raise ConfigError(
                f"{OWNER}(auth={auth!r}): auth must be an httpx.Auth or a (user, password) tuple"
            )
        self.auth = auth
        self.batch_size = POSITIVE_INT.check(OWNER, "batch_size", batch_size)
        self.per_item = BOOL.check(OWNER, "per_item", per_item)
        if encode is not None and not callable(encode):
            raise ConfigError(f"{OWNER}(encode={encode!r}): encode must be a function")
        self.encode = encode
        if not isinstance(retry, RetryPolicy):
            raise ConfigError(f"{OWNER}(retry={retry!r}): retry must be a RetryPolicy")
        self.retry = retry
        self.max_retry_after = duration(OWNER, "max_retry_after", max_retry_after,
                                        positive=False)
        self.timeout = duration(OWNER, "timeout", timeout)
        self.connect_timeout = (
            self.timeout if connect_timeout is None
            else duration(OWNER, "connect_timeout", connect_timeout)
        )
        self.max_connections = POSITIVE_INT.check(OWNER, "max_connections", max_connections)
        self.concurrency = POSITIVE_INT.check(OWNER, "concurrency", concurrency)
        if self.concurrency > self.max_connections:
            raise ConfigError(
                f"{OWNER}(concurrency={concurrency!r}): concurrency must be at most "
                f"max_connections ({max_connections}), got {concurrency!r}"
            )
        self.http2 = BOOL.check(OWNER, "http2", http2)
        if isinstance(verify, str):
            try:
                verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(
                    f"{OWNER}(verify={verify!r}): cannot load the CA bundle: {error}"
                ) from None
        if not isinstance(verify, bool | ssl.SSLContext):
            raise ConfigError(
                f"{OWNER}(verify={verify!r}): verify must be True, False, a CA bundle path "
                "or an ssl.SSLContext"
            )
        self.verify: bool | ssl.SSLContext = verify
        self.stats = HttpSinkStats()
        self._client: httpx.AsyncClient | None = None
        self._key_prefix = secrets.token_hex(8)
        self._requests_made = 0

    def __repr__(self) -> str:
        return f"HttpSink({self.url!r}, per_item={self.per_item!r})"

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = httpx.AsyncClient(
            headers=self.headers,
            auth=self.auth,
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=self.max_connections,
                                max_keepalive_connections=self.max_connections),
            http2=self.http2,
            verify=self.verify,
        )
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- writing ------------------------------------------------------------------------
    async def write_batch(self, items: list[Any]) -> None:
        if self._client is None:
            await self.open()
        rejected: dict[int, BaseException] = {}
        requests: list[tuple[list[int], bytes]] = []
        trace = outgoing_trace_headers()
        if self.per_item:
            for index, item in enumerate(items):
                body = self._encode_one(index, item, rejected)
                if body is not None:
                    requests.append(([index], body))
        else:
            size = self.batch_size
            for start in range(0, len(items), size):
                part = items[start : start + size]
                try:  # the whole array at once: the common case, one orjson call
                    values = part if self.encode is None else [self.encode(v) for v in part]
                    body = orjson.dumps(values, default=_json_default)
                    requests.append((list(range(start, start + len(part))), body))
                    continue
                except Exception:
                    pass
                # Something in it does not encode: find which, send the rest.
                good = [
                    (index, encoded)
                    for index, item in enumerate(part, start)
                    if (encoded := self._encode_one(index, item, rejected)) is not None
                ]
                if good:
                    requests.append(([index for index, _ in good],
                                     b"[" + b",".join(e for _, e in good) + b"]"))
        if self.concurrency == 1 or len(requests) == 1:
            for indexes, body in requests:
                await self._deliver(indexes, body, rejected, _request_trace(trace, indexes))
        else:
            limiter = trio.Semaphore(self.concurrency)
            async with trio.open_nursery() as nursery:
                for indexes, body in requests:
                    await limiter.acquire()
                    nursery.start_soon(
                        self._deliver_released,
                        limiter,
                        indexes,
                        body,
                        rejected,
                        _request_trace(trace, indexes),
                    )
        if rejected:
            self.stats.rejected += len(rejected)
            raise RejectedItems(rejected)

    def _encode_one(self, index: int, item: Any, rejected: dict[int, BaseException]
                    ) -> bytes | None:
        try:
            value = self.encode(item) if self.encode is not None else item
            return orjson.dumps(value, default=_json_default)
        except Exception as error:
            rejected[index] = error
            return None

    async def _deliver_released(
        self, limiter: trio.Semaphore, indexes: list[int], body: bytes,
        rejected: dict[int, BaseException], trace: Mapping[str, str] | None = None,
    ) -> None:
        try:
            await self._deliver(indexes, body, rejected, trace)
        finally:
            limiter.release()

    async def _deliver(
        self, indexes: list[int], body: bytes, rejected: dict[int, BaseException],
        trace: Mapping[str, str] | None = None,
    ) -> None:
        error = await self._send(body, trace)
        if error is None:
            self.stats.requests += 1
            self.stats.items += len(indexes)
        else:
            for index in indexes:
                rejected[index] = error

    async def _send(
        self, body: bytes, trace: Mapping[str, str] | None = None
    ) -> HttpDeliveryError | None:
        """Send one request until it is answered 2xx (None) or given up (the error);
        ``trace``: the request's ``traceparent``/``tracestate`` headers (tracing on)."""
        client = self._client
        assert client is not None
        self._requests_made += 1
        headers = {"Idempotency-Key": f"{self._key_prefix}-{self._requests_made}"}
        if trace is not None:
            headers.update(trace)
        retry = self.retry
        attempt = 1
        while True:
            asked: float | None = None
            try:
                response = await client.request(self.method, self.url, content=body,
                                                headers=headers)
            except httpx.TransportError as error:  # connection refused/reset, timeouts
                failure = HttpDeliveryError(
                    f"{self.method} {self.url} failed after {attempt} attempt(s): "
                    f"{type(error).__name__}: {error or 'no detail'}"
                )
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return None
                phrase = response.reason_phrase or _phrase(status)  # HTTP/2 sends none
                failure = HttpStatusError(self.method, self.url, status, phrase,
                                          response.text[:200], attempt)
                if status not in RETRIED_STATUSES:
                    return failure  # a 4xx: the same request would fail the same way
                if status in (429, 503):
                    asked = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= retry.attempts:
                return failure
            pause = retry.delay(attempt)
            if asked is not None:  # the receiver said when: wait at least that (capped)
                pause = max(pause, min(asked, self.max_retry_after))
                self.stats.waited_retry_after += pause
            self.stats.retries += 1
            attempt += 1
            await trio.sleep(pause)
