"""Keyed state: backends (memory, SQLite, Redis via plugin), the typed StateStore, windows,
stateful processors, stream-stream and stream-table joins, multi-input watermarks and the
session/window helpers of the product description."""

from .aggregators import Aggregator, Collect, Count, Fold, Max, Mean, Min, Sum
from .backend import StateBackend, StateWrite
from .join_node import JoinNode
from .join_specs import IntervalJoin, JoinResult
from .memory import MemoryStateBackend
from .processor import KeyedState, StatefulProcessor
from .session import Session, SessionState, WindowState
from .sqlite import SQLiteStateBackend
from .store import (
    CorruptStateError,
    StateDeadLetter,
    StateStore,
    StateStoreStats,
    resolve_backend,
    state_backend_classes,
)
from .table_join import TableJoinNode
from .watermarks import LateEventError, WatermarkTracker
from .window_node import WindowedAggregateNode, WindowNode
from .window_specs import SessionWindow, SlidingWindow, TumblingWindow, WindowResult

__all__ = [
    "Aggregator",
    "Collect",
    "CorruptStateError",
    "Count",
    "Fold",
    "IntervalJoin",
    "JoinNode",
    "JoinResult",
    "KeyedState",
    "LateEventError",
    "Max",
    "Mean",
    "MemoryStateBackend",
    "Min",
    "SQLiteStateBackend",
    "Session",
    "SessionState",
    "SessionWindow",
    "SlidingWindow",
    "StateBackend",
    "StateDeadLetter",
    "StateStore",
    "StateStoreStats",
    "StateWrite",
    "StatefulProcessor",
    "Sum",
    "TableJoinNode",
    "TumblingWindow",
    "WatermarkTracker",
    "WindowNode",
    "WindowResult",
    "WindowState",
    "WindowedAggregateNode",
    "resolve_backend",
    "state_backend_classes",
]
