"""AsyncResource: the ``open`` / ``aclose`` / ``async with`` lifetime shared by sources,
sinks and state stores."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class AsyncResource(abc.ABC):
    """Something with a lifetime: ``open()`` before use, ``aclose()`` after.

    ``async with resource:`` opens it on entry and closes it on exit, also on error or
    cancellation. Subclasses implement :meth:`aclose` and override :meth:`open` when there
    is something to acquire.

    Example::

        >>> import trio
        >>> class Door(AsyncResource):
        ...     async def open(self):
        ...         print("open")
        ...     async def aclose(self):
        ...         print("closed")
        >>> async def main():
        ...     async with Door() as door:
        ...         print(type(door).__name__)
        >>> trio.run(main)
        open
        Door
        closed
    """

    __slots__ = ()

    async def open(self) -> None:
        """Acquire resources before use (nothing by default)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release resources."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
