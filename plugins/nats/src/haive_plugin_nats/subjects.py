"""NATS subjects: checking them, and wildcard matching (``*`` one token, ``>`` the rest)."""

from __future__ import annotations

from haive.dataflow.errors import ConfigError


def check_subject(owner: str, name: str, subject: object, *, wildcards: bool) -> str:
    """``subject`` if it is a valid NATS subject (with wildcards only where allowed).

    Example::

        >>> check_subject("S", "subject", "orders.*", wildcards=True)
        'orders.*'
        >>> check_subject("S", "subject", "orders..eu", wildcards=True)
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: S: subject must be dot-separated non-empty tokens without whitespace, got 'orders..eu'
    """
    if not isinstance(subject, str) or not subject:
        raise ConfigError(f"{owner}: {name} must be a non-empty string, got {subject!r}")
    tokens = subject.split(".")
    if any(not token or any(c.isspace() for c in token) for token in tokens):
        raise ConfigError(
            f"{owner}: {name} must be dot-separated non-empty tokens without whitespace, "
            f"got {subject!r}"
        )
    for index, token in enumerate(tokens):
        wild = token in ("*", ">")
        if ("*" in token or ">" in token) and not wild:
            raise ConfigError(f"{owner}: {name} {subject!r}: a wildcard must be a whole token")
        if wild and not wildcards:
            raise ConfigError(f"{owner}: {name} {subject!r} must not contain wildcards")
        if token == ">" and index != len(tokens) - 1:
            raise ConfigError(f"{owner}: {name} {subject!r}: '>' must be the last token")
    return subject


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (no wildcards) is matched by ``pattern``.

    Example::

        >>> matches("orders.>", "orders.eu.dead"), matches("orders.*", "orders.eu.dead")
        (True, False)
    """
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)
