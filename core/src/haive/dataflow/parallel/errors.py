"""Errors of the parallel executors."""

from __future__ import annotations

from typing import Any

from ..errors import HaiveError, NotPicklableError

__all__ = ["NotPicklableError", "RemoteError", "WorkerError"]


class WorkerError(HaiveError):
    """A worker process could not start, load the function, or died while working."""


class RemoteError(Exception):
    """Stands for an exception raised in a worker process that could not be pickled back.

    ``type_name`` is the original exception's class name and ``traceback_text`` its
    formatted traceback in the worker.

    Example::

        >>> err = RemoteError("LockError", "cannot pickle '_thread.lock'", "Traceback ...")
        >>> str(err), err.type_name
        ("LockError: cannot pickle '_thread.lock'", 'LockError')
    """

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(
            message if message.startswith(f"{type_name}: ") else f"{type_name}: {message}"
        )
        self.type_name = type_name
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, str(self), self.traceback_text))
