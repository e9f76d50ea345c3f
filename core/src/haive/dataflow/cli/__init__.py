"""The ``haive`` command line: the top layer, above every other.

What plugin commands import: :class:`Command` (the base class of the ``cli_command``
capability kind), :func:`find_runnable` and :func:`load_config_file` (how ``haive run``
reads a pipeline file), and :func:`main` (the ``haive`` script).
"""

from __future__ import annotations

from .main import (
    BUILTIN_COMMANDS,
    Command,
    find_runnable,
    load_config_file,
    main,
    render_plugin_template,
    run_object,
    template_dir,
)

__all__ = [
    "BUILTIN_COMMANDS",
    "Command",
    "find_runnable",
    "load_config_file",
    "main",
    "render_plugin_template",
    "run_object",
    "template_dir",
]
