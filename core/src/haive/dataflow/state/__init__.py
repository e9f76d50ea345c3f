"""Keyed state: backends (memory, SQLite, Redis via plugin) and the typed StateStore."""

from .backend import StateBackend, StateWrite
from .memory import MemoryStateBackend
from .sqlite import SQLiteStateBackend
from .store import (
    CorruptStateError,
    StateDeadLetter,
    StateStore,
    StateStoreStats,
    resolve_backend,
    state_backend_classes,
)

__all__ = [
    "CorruptStateError",
    "MemoryStateBackend",
    "SQLiteStateBackend",
    "StateBackend",
    "StateDeadLetter",
    "StateStore",
    "StateStoreStats",
    "StateWrite",
    "resolve_backend",
    "state_backend_classes",
]
