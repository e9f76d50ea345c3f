"""haive-dataflow hook implementations of haive-plugin-console.

What it provides is also declared, for tools that do not import it, in ``pyproject.toml``
(``haive.dataflow.provides`` and ``.exports`` entry points).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from haive.dataflow import hookimpl

if TYPE_CHECKING:
    from haive.dataflow.cli import Command


@hookimpl
def haive_register_cli_commands() -> Iterable[type[Command]]:
    from .cli import ConsoleCommand

    return [ConsoleCommand]


@hookimpl
def haive_run_services(pipeline: Any) -> Any:
    """The console beside every StreamingPipeline ``haive run`` starts (on loopback by
    default; ``HAIVE_NO_SERVICES=1`` skips it like every service)."""
    from .server import console_service

    return console_service(pipeline)
