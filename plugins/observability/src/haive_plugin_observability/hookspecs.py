"""The capability kinds this plugin owns, added to haive-dataflow in ``haive_addhooks``.

* ``alert_rule``: reusable :class:`~haive_plugin_observability.alerts.AlertRule` classes,
  evaluated against a metrics snapshot;
* ``alert_notifier``: :class:`~haive_plugin_observability.notifiers.AlertNotifier` classes,
  where fired and resolved alerts are delivered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from haive.dataflow.plugins.hookspecs import hookspec

if TYPE_CHECKING:
    from .alerts import AlertRule
    from .notifiers import AlertNotifier


@hookspec
def haive_register_alert_rules() -> Iterable[type[AlertRule]]:
    """Return reusable alert rule classes (evaluated against a metrics snapshot).

    Called once when the registry is built; ``registry.get("alert_rule", name)`` returns one.
    """
    raise NotImplementedError


@hookspec
def haive_register_alert_notifiers() -> Iterable[type[AlertNotifier]]:
    """Return alert notifier classes: where fired and resolved alerts are delivered.

    Called once when the registry is built (log, webhook, stream sink, ...);
    ``registry.get("alert_notifier", name)`` returns one.
    """
    raise NotImplementedError
