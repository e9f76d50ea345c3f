"""haive-contrib-qdrant: a Qdrant vector-store sink for haive-dataflow (embedded or server)."""

from __future__ import annotations

from .sink import Hit, VectorStoreError, VectorStoreSink, jsonable, point_id

__all__ = ["Hit", "VectorStoreError", "VectorStoreSink", "jsonable", "point_id"]
