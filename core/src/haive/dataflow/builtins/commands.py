"""Built-in ``haive`` commands: plugins, run, demo, new-plugin."""

from __future__ import annotations

from typing import Any

from ..cli import BUILTIN_COMMANDS
from ..hookspecs import hookimpl


@hookimpl
def haive_register_cli_commands() -> list[type[Any]]:
    return list(BUILTIN_COMMANDS)
