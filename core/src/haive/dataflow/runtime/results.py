"""What a pipeline hands back per item."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(slots=True)
class Result:
    """The outcome of one item: ``success`` with ``data``, or a failure with ``error``.

    For a failure ``data`` is the item as it entered ``node``, the node that failed, so a
    dead-letter consumer can replay it.

    Example::

        >>> ok = Result.ok({"n": 1})
        >>> ok.success, ok.data
        (True, {'n': 1})
        >>> bad = Result.failed("x", ValueError("bad"), node="parse")
        >>> bad.success, bad.node, str(bad.error)
        (False, 'parse', 'bad')
    """

    success: bool
    data: Any
    error: BaseException | None = None
    node: str | None = None
    attempts: int = 1

    @classmethod
    def ok(cls, data: Any) -> Result:
        return cls(True, data)

    @classmethod
    def failed(
        cls, data: Any, error: BaseException, *, node: str | None = None, attempts: int = 1
    ) -> Result:
        return cls(False, data, error, node, attempts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record of this result (the error as type and message)."""
        record: dict[str, Any] = {"success": self.success, "data": self.data}
        if not self.success:
            record["error"] = {
                "type": type(self.error).__name__,
                "message": str(self.error),
                "node": self.node,
                "attempts": self.attempts,
            }
        return record
