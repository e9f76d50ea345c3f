"""Built-in ``haive`` commands: plugins, run, demo, new-plugin."""

from __future__ import annotations

from typing import Any

from ..plugins.hookspecs import hookimpl
from .main import BUILTIN_COMMANDS


@hookimpl
def haive_register_cli_commands() -> list[type[Any]]:
    return list(BUILTIN_COMMANDS)
