"""The console API fuzzed from its own OpenAPI document with schemathesis: no 500s, and
every response conforms to the document (status codes, content type, body schema).

The server is real (Hypercorn on trio, run in a thread of this test since schemathesis
calls it synchronously); a pipeline runs behind it, so the actions hit a live run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import hypothesis
import schemathesis
import trio
from hypothesis import HealthCheck, Phase

TOKEN = "fuzz-token"


def test_api_fuzzed_from_its_openapi_document(serve: Any) -> None:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run_server() -> None:
        box["stop"] = trio.Event()
        box["trio_token"] = trio.lowlevel.current_trio_token()
        async with serve(token=TOKEN) as (address, _pipeline, _flaky, _sink):
            box["url"] = address.url
            ready.set()
            await box["stop"].wait()

    def server_thread() -> None:
        try:
            trio.run(run_server)
        except BaseException as exc:  # reported by the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=server_thread, name="console-under-fuzz")
    thread.start()
    started = time.monotonic()
    try:
        assert ready.wait(30) and "error" not in box, box.get("error")
        schema = schemathesis.openapi.from_url(
            box["url"] + "openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 14
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for operation in operations:

            @hypothesis.given(case=operation.as_strategy())
            @hypothesis.settings(
                max_examples=20,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(headers=auth)

            check()
    finally:
        if "trio_token" in box:
            trio.from_thread.run_sync(box["stop"].set, trio_token=box["trio_token"])
        thread.join(30)
    assert time.monotonic() - started < 60
