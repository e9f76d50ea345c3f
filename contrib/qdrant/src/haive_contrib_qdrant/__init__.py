"""haive-contrib-qdrant: a Qdrant vector-store sink for haive-dataflow (embedded or server).

Names are imported on first use (PEP 562), so plugin discovery, which imports
``haive_contrib_qdrant.plugin``, loads neither numpy nor the Qdrant client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sink import Hit, VectorStoreError, VectorStoreSink, jsonable, point_id

__all__ = ["Hit", "VectorStoreError", "VectorStoreSink", "jsonable", "point_id"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".sink", __name__), name)
    globals()[name] = value
    return value
