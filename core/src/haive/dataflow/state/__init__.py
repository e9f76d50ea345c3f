"""Keyed state: backends (memory, SQLite, Redis via plugin) and the typed StateStore."""

from .backend import StateBackend

__all__ = ["StateBackend"]
