"""Hook implementations: what this plugin adds to haive-dataflow.

Its public names in ``haive.dataflow.streaming``, its capabilities and the kinds it adds are
also declared in ``pyproject.toml`` (``haive.dataflow.exports``, ``.provides``, ``.kinds``),
read without importing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from haive.dataflow import hookimpl

from . import hookspecs

if TYPE_CHECKING:
    from haive.dataflow.cli import Command
    from haive.dataflow.plugins import CapabilityKind

    from .alerts import AlertRule
    from .notifiers import AlertNotifier


@hookimpl
def haive_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def haive_register_capability_kinds() -> Iterable[CapabilityKind[Any]]:
    from haive.dataflow.plugins import CapabilityKind

    from .alerts import AlertRule
    from .notifiers import AlertNotifier

    return [
        CapabilityKind("alert_rule", AlertRule, hookspecs.haive_register_alert_rules),
        CapabilityKind("alert_notifier", AlertNotifier, hookspecs.haive_register_alert_notifiers),
    ]


@hookimpl
def haive_register_alert_rules() -> Iterable[type[AlertRule]]:
    from .alerts import BUILTIN_RULES

    return BUILTIN_RULES


@hookimpl
def haive_register_alert_notifiers() -> Iterable[type[AlertNotifier]]:
    from .notifiers import BUILTIN_NOTIFIERS

    return BUILTIN_NOTIFIERS


@hookimpl
def haive_register_cli_commands() -> Iterable[type[Command]]:
    from .top import TopCommand

    return [TopCommand]


@hookimpl
def haive_run_services(pipeline: Any) -> Any:
    from .analytics import dashboard_service

    return dashboard_service(pipeline)
