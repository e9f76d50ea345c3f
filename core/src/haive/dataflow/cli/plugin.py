"""The cli layer's built-in plugin: the ``cli_command`` kind and the built-in commands
(plugins, run, worker, demo, new-plugin)."""

from __future__ import annotations

from typing import Any

from ..plugins import hookspecs
from ..plugins.hookspecs import hookimpl
from ..plugins.registry import CapabilityKind
from .main import BUILTIN_COMMANDS, Command

CLI_COMMAND = CapabilityKind("cli_command", Command, hookspecs.haive_register_cli_commands)


@hookimpl
def haive_register_capability_kinds() -> list[CapabilityKind[Any]]:
    return [CLI_COMMAND]


@hookimpl
def haive_register_cli_commands() -> list[type[Any]]:
    # Imported here, when the commands are asked for: `haive worker` needs the pipelines,
    # which loading the registry alone must not import.
    from .worker import WorkerCommand

    return [*BUILTIN_COMMANDS, WorkerCommand]
