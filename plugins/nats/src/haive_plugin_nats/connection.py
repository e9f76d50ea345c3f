"""Connecting to NATS through the core's asyncio bridge, stream look-ups, and the errors.

nats-py is asyncio-only, so every call goes through one
:class:`~haive.dataflow.runtime.bridge.AsyncioBridge` per source or sink (its loop runs in
the bridge's thread; the plugin starts no thread or loop of its own). Connection failures
are turned into errors that say what to do: refused credentials (:class:`NatsAuthError`),
nothing answering (:class:`NatsConnectError`), no JetStream stream storing a subject
(:class:`UnknownStreamError`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from haive.dataflow.errors import ConfigError, HaiveError
from haive.dataflow.runtime.bridge import AsyncioBridge, open_asyncio_bridge

DEFAULT_URL = "nats://127.0.0.1:4222"

#: nats.connect options the plugin sets itself (the rest of ``connect_options`` passes through).
_OWN_OPTIONS = frozenset({"servers", "error_cb", "name"})


class NatsError(HaiveError):
    """NATS or JetStream refused or failed an operation of this plugin."""


class NatsConnectError(NatsError, ConnectionError):
    """No NATS server answered at the URL."""


class NatsAuthError(NatsConnectError):
    """The NATS server refused the credentials (user/password, token, nkey or creds)."""


class UnknownStreamError(NatsError, LookupError):
    """No JetStream stream stores the subject (or the named stream does not exist)."""


def redacted(url: str) -> str:
    """``url`` without its password or token, for messages.

    Example::

        >>> redacted("nats://app:s3cret@10.0.0.5:4222")
        'nats://app:***@10.0.0.5:4222'
        >>> redacted("nats://tok@host:4222")
        'nats://***@host:4222'
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url
    user = f"{parts.username}:***" if parts.password is not None else "***"
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(owner: str, url: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("nats", "tls", "ws", "wss"):
        raise ConfigError(
            f"{owner}: url must be a nats://, tls://, ws:// or wss:// URL, got {url!r}"
        )
    return url


def check_connect_options(owner: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    clash = sorted(_OWN_OPTIONS & options.keys())
    if clash:
        raise ConfigError(
            f"{owner}: connect_options may not set {clash} (the plugin sets them; give the "
            "server in url)"
        )
    return options


async def connect(
    bridge: AsyncioBridge, url: str, options: Mapping[str, Any], *, name: str
) -> NatsClient:
    """A nats-py client connected in ``bridge``'s loop, or a clear error.

    nats-py reports why a connection attempt failed only to its ``error_cb`` and then
    raises ``NoServersError``; the reasons are kept so that refused credentials say so.
    """
    reasons: list[Exception] = []

    async def keep_reason(error: Exception) -> None:
        if len(reasons) < 20:
            reasons.append(error)

    settings = {"connect_timeout": 5, "max_reconnect_attempts": -1, **options}
    try:
        return await bridge.run(_connect, url, keep_reason, name, settings)
    except (nats.errors.NoServersError, OSError, TimeoutError) as error:
        text = "; ".join(dict.fromkeys(str(reason) for reason in reasons)) or str(error)
        if "authorization" in text.lower() or "authentication" in text.lower():
            raise NatsAuthError(
                f"NATS at {redacted(url)} refused the credentials ({text}); check the user, "
                "password or token in the URL or connect_options"
            ) from error
        raise NatsConnectError(f"no NATS server answered at {redacted(url)}: {text}") from error


async def _connect(
    url: str, error_cb: Any, name: str, settings: dict[str, Any]
) -> NatsClient:  # in the bridge's loop
    # The first connection tries a few times only: a wrong URL or password fails fast.
    first = {
        **settings,
        "allow_reconnect": True,
        "max_reconnect_attempts": 2,
        "reconnect_time_wait": 0.25,
    }
    client = NatsClient()
    await client.connect(servers=[url], error_cb=error_cb, name=name, **first)
    # Once connected, reconnect as configured (forever by default): a broker restart is
    # ridden out, not an error.
    client.options["max_reconnect_attempts"] = settings["max_reconnect_attempts"]
    client.options["reconnect_time_wait"] = settings.get("reconnect_time_wait", 2)
    return client


async def stream_for_subject(
    bridge: AsyncioBridge, client: NatsClient, subject: str, url: str
) -> str:
    """The name of the stream storing ``subject``, or :class:`UnknownStreamError`."""
    try:
        name: str = await bridge.run(client.jetstream().find_stream_name_by_subject, subject)
    except nats.js.errors.NotFoundError as error:
        raise UnknownStreamError(
            f"no JetStream stream on {redacted(url)} stores subject {subject!r}: create one "
            f"(`nats stream add`, or haive_plugin_nats.ensure_stream) whose subjects match it"
        ) from error
    except nats.errors.NoRespondersError as error:
        raise UnknownStreamError(
            f"JetStream is not enabled on {redacted(url)} (start nats-server with -js)"
        ) from error
    return name


async def check_stream(bridge: AsyncioBridge, client: NatsClient, stream: str, url: str) -> None:
    """Raise :class:`UnknownStreamError` unless ``stream`` exists."""
    try:
        await bridge.run(client.jetstream().stream_info, stream)
    except nats.js.errors.NotFoundError as error:
        raise UnknownStreamError(f"no JetStream stream {stream!r} on {redacted(url)}") from error


async def ensure_stream(
    name: str,
    subjects: Sequence[str],
    *,
    url: str = DEFAULT_URL,
    storage: str = "file",
    connect_options: Mapping[str, Any] | None = None,
) -> None:
    """Create the JetStream stream ``name`` storing ``subjects`` (or add them if it exists).

    For examples, tests and small deployments; production streams are usually managed with
    the ``nats`` CLI or infrastructure code.

    Example::

        >>> import trio, uuid
        >>> name = f"DOC-{uuid.uuid4().hex[:8]}"
        >>> trio.run(lambda: ensure_stream(name, [f"{name}.>"]))
        >>> trio.run(lambda: delete_stream(name))
        True
    """
    if storage not in ("file", "memory"):
        raise ConfigError(f"ensure_stream: storage must be 'file' or 'memory', got {storage!r}")
    if not subjects:
        raise ConfigError("ensure_stream: subjects must not be empty")
    url = check_url("ensure_stream", url)
    options = check_connect_options("ensure_stream", connect_options)
    async with open_asyncio_bridge(name=f"nats-admin-{name}") as bridge:
        client = await connect(bridge, url, options, name="haive-admin")
        try:
            await bridge.run(_ensure_stream, client, name, list(subjects), storage)
        finally:
            await bridge.run(client.close)


async def _ensure_stream(
    client: NatsClient, name: str, subjects: list[str], storage: str
) -> None:  # in the bridge's loop
    js = client.jetstream()
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(name=name, subjects=subjects, storage=StorageType(storage))
        )
        return
    have = list(info.config.subjects or [])
    missing = [subject for subject in subjects if subject not in have]
    if missing:
        await js.update_stream(info.config.evolve(subjects=have + missing))


async def delete_stream(
    name: str, *, url: str = DEFAULT_URL, connect_options: Mapping[str, Any] | None = None
) -> bool:
    """Delete the JetStream stream ``name``; False if there was none."""
    url = check_url("delete_stream", url)
    options = check_connect_options("delete_stream", connect_options)
    async with open_asyncio_bridge(name=f"nats-admin-{name}") as bridge:
        client = await connect(bridge, url, options, name="haive-admin")
        try:
            return await bridge.run(_delete_stream, client, name)
        finally:
            await bridge.run(client.close)


async def _delete_stream(client: NatsClient, name: str) -> bool:  # in the bridge's loop
    try:
        deleted: bool = await client.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        return False
    return deleted
