"""haive-plugin-console: an operations console for haive-dataflow pipelines.

A REST API (with its OpenAPI document) and a page: topology, per-node rates, latency,
errors and backpressure, alerts, dead letters with replay, pause and resume. Starlette on
Hypercorn's trio worker.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .app import build_app
from .console import Console
from .dead_letters import DeadLetter, DeadLetterStore
from .fleet import FleetPublisher, FleetView
from .server import ConsoleAddress, ConsoleServerError, serving

__all__ = [
    "Console",
    "ConsoleAddress",
    "ConsoleServerError",
    "DeadLetter",
    "DeadLetterStore",
    "FleetPublisher",
    "FleetView",
    "build_app",
    "serving",
]
