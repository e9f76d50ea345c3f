"""The services plugins run beside a pipeline that ``haive run`` or ``haive demo`` starts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from ..plugins.registry import get_registry


@asynccontextmanager
async def run_services(pipeline: Any) -> AsyncIterator[list[str]]:
    """Enter every plugin's ``haive_run_services`` for ``pipeline``; yields their addresses."""
    async with AsyncExitStack() as stack:
        addresses: list[str] = []
        if not os.environ.get("HAIVE_NO_SERVICES"):
            for service in get_registry().run_services(pipeline):
                address = await stack.enter_async_context(service)
                if address:
                    addresses.append(address)
        yield addresses
