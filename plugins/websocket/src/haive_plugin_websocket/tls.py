"""TLS (``wss://``) for the WebSocket server and client: contexts from files, clear errors.

The server takes an :class:`ssl.SSLContext` (``ServerConfig(ssl=...)``) or the paths of a
PEM certificate chain and its key (``ServerConfig(certfile=..., keyfile=...)``); the client
takes a context (``ConnectionConfig(ssl=...)``) or the CA file to trust
(``ConnectionConfig(ca_file=...)``), and otherwise verifies the server against the system's
CA store. A server whose certificate the client does not trust makes the client give up at
once with :class:`~haive_plugin_websocket.errors.TLSVerificationError` (retrying cannot
help), naming the reason OpenSSL gave.

Example::

    >>> import ssl
    >>> context = client_ssl_context()
    >>> context.verify_mode == ssl.CERT_REQUIRED, context.check_hostname
    (True, True)
    >>> server_ssl_context("/nonexistent/cert.pem")
    Traceback (most recent call last):
    ...
    haive.dataflow.errors.ConfigError: certfile: no such file '/nonexistent/cert.pem'
"""

from __future__ import annotations

import os
import ssl

from haive.dataflow.errors import ConfigError


def _existing(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ConfigError(f"{what}: no such file {text!r}")
    return text


def server_ssl_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str] | None = None,
    *,
    password: str | None = None,
) -> ssl.SSLContext:
    """A server-side context serving the PEM chain ``certfile`` with its private key.

    ``keyfile`` defaults to the key inside ``certfile``. TLS 1.2 is the minimum version.
    A missing file, or a key that does not match the certificate, raises ConfigError.
    """
    cert = _existing(certfile, "certfile")
    key = _existing(keyfile, "keyfile") if keyfile is not None else None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"certfile/keyfile: cannot load the certificate chain {cert!r}"
            f"{f' with key {key!r}' if key else ''}: {exc}"
        ) from exc
    return context


def client_ssl_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A client-side context that verifies the server's certificate and host name.

    With ``ca_file`` only that CA bundle is trusted (a private CA); without it, the system's
    CA store.
    """
    cafile = _existing(ca_file, "ca_file") if ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_failure(error: BaseException | None) -> ssl.SSLError | None:
    """The TLS error that ended a connection attempt, looking through ``__cause__`` chains.

    trio reports a failed handshake as :class:`trio.BrokenResourceError` caused by the
    :class:`ssl.SSLError`. End-of-stream errors (the peer hung up mid-handshake) are not
    reported: those can be transient.

    Example::

        >>> import trio
        >>> try:
        ...     raise trio.BrokenResourceError() from ssl.SSLCertVerificationError(1, "bad")
        ... except trio.BrokenResourceError as exc:
        ...     type(tls_failure(exc)).__name__
        'SSLCertVerificationError'
    """
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, ssl.SSLError) and not isinstance(
            error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
        ):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def describe_tls_failure(error: ssl.SSLError, url: str) -> str:
    """A message saying why the handshake with ``url`` failed and what to do about it.

    Example::

        >>> err = ssl.SSLCertVerificationError(1, "x")
        >>> err.verify_message = "self-signed certificate in certificate chain"
        >>> describe_tls_failure(err, "wss://h/")  # doctest: +ELLIPSIS
        'TLS: the certificate of wss://h/ is not trusted: self-signed certificate in ...'
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        return (
            f"TLS: the certificate of {url} is not trusted: {reason}; trust its CA with "
            "ConnectionConfig(ca_file=...) or pass ssl=ssl.create_default_context(cafile=...)"
        )
    reason = error.reason or str(error)
    return (
        f"TLS handshake with {url} failed: {reason} "
        "(is the server serving TLS on this port, with a protocol version both sides allow?)"
    )
