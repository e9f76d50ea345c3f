"""Whether a function can be sent to another process, checked where a setting asks for it.

``TransformNode(executor="process")`` checks its function here when it is built, so a lambda
fails at construction, not when the pipeline starts its worker processes
(:mod:`haive.dataflow.parallel` runs them and sends the same pickle).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, NotPicklableError

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


def describe_callable(fn: object) -> str:
    """A short human name for ``fn`` (``module.qualname`` when it has one)."""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def check_picklable(fn: Callable[..., Any], where: str) -> bytes:
    """Pickle ``fn`` for worker processes, or raise :class:`NotPicklableError` naming ``where``.

    Example (doctest ELLIPSIS is on)::

        >>> len(check_picklable(abs, "node 'a'")) > 0
        True
        >>> check_picklable(lambda x: x, "TransformNode 'hash'")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.NotPicklableError: TransformNode 'hash': the function ... cannot be sent to worker processes ...
    """
    if not callable(fn):
        raise ConfigError(f"{where}: expected a callable, got {fn!r}")
    try:
        return pickle.dumps(fn, PICKLE_PROTOCOL)
    except Exception as exc:
        raise NotPicklableError(
            f"{where}: the function {describe_callable(fn)} cannot be sent to worker processes "
            f"({type(exc).__name__}: {exc}). A process executor needs a function defined at "
            "the top level of an importable module or script: not a lambda, a nested function "
            "or an object holding locks, sockets or open files"
        ) from exc
