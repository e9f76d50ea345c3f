"""The API reference page (docs/api/websocket.md) names every public module of the plugin.

The page lists the modules one by one, grouped as server parts, client parts and shared
modules; a module added without a line there would be missing from the site silently.
"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import haive_plugin_websocket

PAGE = Path(__file__).resolve().parents[3] / "docs" / "api" / "websocket.md"


def test_every_public_module_is_on_the_api_reference_page() -> None:
    modules = {
        info.name
        for info in pkgutil.iter_modules(haive_plugin_websocket.__path__)
        if not info.name.startswith("_")
    }
    listed = re.findall(r"^::: haive_plugin_websocket\.(\w+)$", PAGE.read_text(), re.MULTILINE)
    assert sorted(modules - set(listed)) == [], f"add them to {PAGE}"
    assert sorted(set(listed) - modules) == [], f"no such modules; remove them from {PAGE}"
    assert len(listed) == len(set(listed)), "a module is listed twice"
