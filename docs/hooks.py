"""mkdocs hooks for the documentation site (mkdocs.yml ``hooks:``).

* ``{{ readme "plugins/redis/README.md" }}`` on a line of its own includes a plugin's
  README, so the README stays the one source; its links to the repository's README and to
  files under docs/ (the scaling guide, screenshots) are pointed at the site's instead.
* Docstrings are written for Sphinx-style readers as well (``:class:`~a.B```,
  ``Example::``); the rendered API pages show those roles as plain code names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_README = re.compile(r'^\{\{ readme "(?P<path>[^"]+)" \}\}$', re.MULTILINE)
_LINKS = {"../../README.md": "../index.md", "../../docs/scaling.md": "../scaling.md"}
_SIBLING_README = re.compile(r"\]\(\.\./(?P<name>[a-z0-9_-]+)/README\.md\)")
_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj|const):<code>(?P<tilde>~?)(?P<name>[^<]+)</code>"
)
_DOUBLE_COLON = re.compile(r"::</p>")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root = Path(config.config_file_path).parent

    def include(match: re.Match[str]) -> str:
        text = (root / match["path"]).read_text(encoding="utf-8")
        for old, new in _LINKS.items():
            text = text.replace(f"]({old})", f"]({new})")
        # Another distribution's README is its page beside this one.
        text = _SIBLING_README.sub(r"](\g<name>.md)", text)
        # Images and pages under docs/ (a README's screenshot): the site has them one up.
        return text.replace("](../../docs/", "](../")

    return _README.sub(include, markdown)


def _role(match: re.Match[str]) -> str:
    name = match["name"]
    if match["tilde"]:
        name = name.rsplit(".", 1)[-1]
    return f"<code>{name}</code>"


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return _DOUBLE_COLON.sub(":</p>", _ROLE.sub(_role, html))
