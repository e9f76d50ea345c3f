"""The webhook source against real requests on 127.0.0.1: authentication, limits, malformed
bodies, backpressure (429), when a 2xx is given, failures, shutdown, TLS."""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import trio
from haive_plugin_http import BearerToken, HmacSignature, WebhookEvent, WebhookSource
from haive_plugin_http.source import WebhookServerError

from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.errors import ConfigError, NodeError
from haive.dataflow.runtime.config import StreamConfig

from .conftest import running


def messages(error: BaseException) -> list[str]:
    """The messages of an exception group's leaves and their causes."""
    if isinstance(error, BaseExceptionGroup):
        return [m for inner in error.exceptions for m in messages(inner)]
    found = [str(error)]
    if error.__cause__ is not None:
        found += messages(error.__cause__)
    return found


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def test_bearer_token_missing_wrong_and_right() -> None:
    source = WebhookSource(port=0, auth=BearerToken("s3cret"))
    async with running(source) as run, httpx.AsyncClient() as client:
        missing = await client.post(source.url, json={"n": 1})
        wrong = await client.post(source.url, json={"n": 2},
                                  headers={"Authorization": "Bearer guess"})
        basic = await client.post(source.url, json={"n": 3},
                                  headers={"Authorization": "Basic czNjcmV0"})
        right = await client.post(source.url, json={"n": 4},
                                  headers={"Authorization": "Bearer s3cret"})
    assert (missing.status_code, wrong.status_code, basic.status_code) == (401, 403, 401)
    assert "Authorization" in missing.json()["error"]
    assert right.status_code == 202 and right.json() == {"accepted": 1}
    assert [event.data for event in run.items] == [{"n": 4}]
    assert source.stats.refused_auth == 3


async def test_hmac_signature_good_bad_missing_and_stale() -> None:
    secret = b"whsec"
    source = WebhookSource(port=0, auth=HmacSignature(secret))
    stamped = WebhookSource(
        port=0,
        auth=HmacSignature(secret, header="X-Signature", prefix="", timestamp_header="X-Time",
                           tolerance="5m"),
    )
    body = orjson.dumps({"action": "opened"})
    async with running(source) as run, httpx.AsyncClient() as client:
        good = await client.post(source.url, content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)})
        tampered = await client.post(source.url, content=body + b" ", headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)})
        wrong_key = await client.post(source.url, content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(b"other", body)})
        missing = await client.post(source.url, content=body,
                                    headers={"Content-Type": "application/json"})
    assert good.status_code == 202
    assert (tampered.status_code, wrong_key.status_code, missing.status_code) == (403, 403, 401)
    assert "does not match" in tampered.json()["error"]
    assert [event.data for event in run.items] == [{"action": "opened"}]

    now = int(time.time())

    def stamped_headers(at: int) -> dict[str, str]:
        digest = hmac.new(secret, f"{at}.".encode() + body, "sha256").hexdigest()
        return {"Content-Type": "application/json", "X-Signature": digest, "X-Time": str(at)}

    async with running(stamped) as run, httpx.AsyncClient() as client:
        fresh = await client.post(stamped.url, content=body, headers=stamped_headers(now))
        stale = await client.post(stamped.url, content=body, headers=stamped_headers(now - 3600))
    assert fresh.status_code == 202
    assert stale.status_code == 403 and "tolerance 300s" in stale.json()["error"]
    assert len(run.items) == 1


async def test_body_size_limit_is_enforced_while_reading() -> None:
    source = WebhookSource(port=0, max_body_size=100)
    fits = orjson.dumps({"pad": "x" * 80})
    assert len(fits) <= 100

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"pad": "'
        for _ in range(50):
            yield b"xxxxxxxxxx"
        yield b'"}'

    async with running(source) as run, httpx.AsyncClient() as client:
        declared = await client.post(source.url, json={"pad": "x" * 500})
        streamed = await client.post(source.url, content=chunked(),
                                     headers={"Content-Type": "application/json"})
        ok = await client.post(source.url, content=fits,
                               headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "max_body_size is 100" in declared.json()["error"]
    assert streamed.status_code == 413 and "over max_body_size" in streamed.json()["error"]
    assert ok.status_code == 202
    assert len(run.items) == 1 and source.stats.refused_too_large == 2


async def test_malformed_json_is_400_with_the_reason_and_wrong_type_415() -> None:
    source = WebhookSource(port=0)
    async with running(source) as run, httpx.AsyncClient() as client:
        broken = await client.post(source.url, content=b'{"n": 1,',
                                   headers={"Content-Type": "application/json"})
        text = await client.post(source.url, content=b"hello",
                                 headers={"Content-Type": "text/plain"})
        get = await client.get(source.url)
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("malformed JSON: ")
    assert text.status_code == 415 and "application/json" in text.json()["error"]
    assert get.status_code == 405
    assert run.items == []


async def test_configured_content_types_json_suffix_and_raw_bytes() -> None:
    source = WebhookSource(port=0, content_types=["application/cloudevents+json", "text/plain"])
    async with running(source) as run, httpx.AsyncClient() as client:
        cloud = await client.post(source.url, content=b'{"type": "x"}',
                                  headers={"Content-Type": "application/cloudevents+json"})
        text = await client.post(source.url, content=b"raw line",
                                 headers={"Content-Type": "text/plain; charset=utf-8"})
        plain_json = await client.post(source.url, json={})
    assert (cloud.status_code, text.status_code, plain_json.status_code) == (202, 202, 415)
    assert [event.data for event in run.items] == [{"type": "x"}, b"raw line"]
    assert run.items[1].content_type == "text/plain"


async def test_event_exposes_path_headers_query_remote_and_receive_time() -> None:
    source = WebhookSource(port=0, path=["/hooks/github", "/hooks/stripe"])
    before = time.time()
    async with running(source) as run, httpx.AsyncClient() as client:
        base = source.url.rsplit("/hooks/", 1)[0]
        batch = await client.post(f"{base}/hooks/stripe?env=prod&env=test&x=1",
                                  json=[{"n": 1}, {"n": 2}],
                                  headers={"X-Request-Id": "r-7"})
        empty = await client.post(source.url, json=[])
        other = await client.post(f"{base}/hooks/nowhere", json={})
    assert batch.json() == {"accepted": 2} and empty.json() == {"accepted": 0}
    assert other.status_code == 404
    first, second = run.items
    assert isinstance(first, WebhookEvent)
    assert (first.data, second.data, first.index, second.index) == ({"n": 1}, {"n": 2}, 0, 1)
    assert first.path == "/hooks/stripe"
    assert first.headers["x-request-id"] == "r-7"
    assert first.query == {"env": "test", "x": "1"} and first.raw_query == "env=prod&env=test&x=1"
    assert first.remote is not None and first.remote[0] == "127.0.0.1"
    assert before <= first.timestamp <= time.time()


async def test_split_arrays_false_keeps_an_array_as_one_event() -> None:
    source = WebhookSource(port=0, split_arrays=False)
    async with running(source) as run, httpx.AsyncClient() as client:
        answer = await client.post(source.url, json=[1, 2, 3])
    assert answer.json() == {"accepted": 1}
    assert [event.data for event in run.items] == [[1, 2, 3]]


async def test_full_buffer_answers_429_with_retry_after_then_recovers() -> None:
    """A stalled pipeline: the buffer fills, callers get 429 + Retry-After and nothing of a
    refused request enters; once the pipeline moves, retries are accepted, and every event
    answered 2xx is written exactly once."""
    gate = trio.Event()

    async def stalled(event: WebhookEvent) -> Any:
        await gate.wait()
        return event.data["n"]

    source = WebhookSource(port=0, buffer_size=8, retry_after="2s")
    config = StreamConfig(buffer_size=4, chunk_size=2)
    accepted: list[int] = []
    refused: list[httpx.Response] = []
    async with running(source, stalled, config=config) as run, httpx.AsyncClient() as client:
        n = 0
        while not refused:
            assert n < 1000, "the buffer never filled"
            answer = await client.post(source.url, json=[{"n": n}, {"n": n + 1}])
            if answer.status_code == 202:
                accepted.extend((n, n + 1))
            else:
                refused.append(answer)
            n += 2
        assert refused[0].status_code == 429
        assert refused[0].headers["retry-after"] == "2"
        assert source.intake is not None and source.intake.free < 2
        gate.set()
        retried = 0
        while True:  # the caller honours Retry-After (scaled down for the test) and retries
            answer = await client.post(source.url, json=[{"n": n - 2}, {"n": n - 1}])
            if answer.status_code == 202:
                accepted.extend((n - 2, n - 1))
                break
            assert answer.status_code == 429
            retried += 1
            await trio.sleep(0.01)
    assert sorted(run.items) == sorted(accepted)
    assert len(run.items) == len(set(run.items))
    assert source.stats.refused_full >= 1


async def test_accepted_mode_answers_202_once_the_event_is_buffered() -> None:
    gate, entered = trio.Event(), trio.Event()

    async def held(event: WebhookEvent) -> Any:
        entered.set()
        await gate.wait()
        return event.data

    source = WebhookSource(port=0)
    async with running(source, held) as run, httpx.AsyncClient() as client:
        answer = await client.post(source.url, json={"n": 1})
        # Accepted: in the buffer or already taken by the pipeline, not yet written.
        assert answer.status_code == 202 and source.stats.accepted == 1
        await entered.wait()
        assert run.items == []
        gate.set()
    assert run.items == [{"n": 1}]


async def test_written_mode_answers_only_after_the_sink_wrote() -> None:
    gate, entered = trio.Event(), trio.Event()

    async def held(event: WebhookEvent) -> Any:
        entered.set()
        await gate.wait()
        return event.data

    source = WebhookSource(port=0, ack="written")
    answers: list[httpx.Response] = []
    async with running(source, held) as run, httpx.AsyncClient() as client:

        async def post() -> None:
            answers.append(await client.post(source.url, json=[{"n": 1}, {"n": 2}]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            await entered.wait()
            await trio.sleep(0.2)  # time for a premature answer to arrive, were there one
            assert answers == [] and run.items == []
            gate.set()
        assert answers[0].status_code == 200 and answers[0].json() == {"written": 2}
        assert run.items == [{"n": 1}, {"n": 2}]
    assert source.stats.acknowledged == 2 and source.stats.answered_written == 1


async def test_written_mode_failures_answer_422_naming_the_events() -> None:
    def check(event: WebhookEvent) -> Any:
        if event.data.get("bad"):
            raise ValueError("bad order")
        return event.data

    source = WebhookSource(port=0, ack="written")
    async with running(source, check) as run, httpx.AsyncClient() as client:
        mixed = await client.post(source.url, json=[{"n": 1}, {"bad": True}, {"n": 3}])
        clean = await client.post(source.url, json={"n": 4})
    assert mixed.status_code == 422
    body = mixed.json()
    assert body["written"] == 2 and [f["index"] for f in body["failed"]] == [1]
    assert "ValueError: bad order" in body["failed"][0]["error"]
    assert clean.status_code == 200
    assert run.items == [{"n": 1}, {"n": 3}, {"n": 4}]


async def test_written_mode_with_a_dead_letter_sink_answers_200() -> None:
    def check(event: WebhookEvent) -> Any:
        if event.data.get("bad"):
            raise ValueError("bad order")
        return event.data

    dead = MemorySink()
    source = WebhookSource(port=0, ack="written")
    async with running(source, check, dead_letter=dead) as run, httpx.AsyncClient() as client:
        answer = await client.post(source.url, json=[{"n": 1}, {"bad": True}])
    assert answer.status_code == 200  # the failure is kept durably by the dead-letter sink
    assert run.items == [{"n": 1}] and len(dead.items) == 1
    assert "bad order" in str(dead.items[0])


async def test_stop_refuses_new_requests_and_drains_the_accepted() -> None:
    gate = trio.Event()

    async def held(event: WebhookEvent) -> Any:
        await gate.wait()
        return event.data["n"]

    source = WebhookSource(port=0)
    async with running(source, held) as run, httpx.AsyncClient() as client:
        for n in range(5):
            assert (await client.post(source.url, json={"n": n})).status_code == 202
        source.stop()
        late = await client.post(source.url, json={"n": 99})
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        gate.set()
        with trio.fail_after(10):
            await run.finished.wait()
    assert run.items == [0, 1, 2, 3, 4]
    assert run.reports[0].processed == 5


async def test_written_mode_pipeline_failure_answers_503_not_200() -> None:
    """The sink fails for good: the waiting request must not be told it was written."""

    class Broken(MemorySink):
        async def write_batch(self, items: list[Any]) -> None:
            raise OSError("disk gone")

    source = WebhookSource(port=0, ack="written")
    outcome: list[int | str] = []
    posted = trio.Event()

    async def post() -> None:
        await source.started.wait()
        async with httpx.AsyncClient() as client:
            try:
                answer = await client.post(source.url, json={"n": 1})
                outcome.append(answer.status_code)
            except httpx.TransportError as error:  # the server went down with the pipeline
                outcome.append(type(error).__name__)
        posted.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(post)
        with pytest.raises(BaseExceptionGroup) as info:
            async with running(source, sink=Broken()):
                await posted.wait()
    assert "disk gone" in " ".join(messages(info.value))
    assert outcome and outcome[0] != 200, outcome  # 503 or a reset connection, never 2xx


async def test_https_with_the_certificate_files(tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    source = WebhookSource(port=0, certfile=certfile, keyfile=keyfile)
    trusted = ssl.create_default_context(cafile=str(cafile))
    async with running(source) as run, httpx.AsyncClient(verify=trusted) as client:
        assert source.url.startswith("https://127.0.0.1:")
        answer = await client.post(source.url, json={"secure": True})
    assert answer.status_code == 202
    assert [event.data for event in run.items] == [{"secure": True}]


async def test_not_serving_and_port_taken_are_clear_errors() -> None:
    from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

    source = WebhookSource(port=0)
    pipeline = StreamingPipeline("unserved")
    pipeline.set_source(source)
    pipeline.set_sink(MemorySink())
    with pytest.raises(NodeError, match=r"not serving: run the pipeline inside"):
        await pipeline.execute()
    async with source.serving():
        port = int(source.url.split(":")[2].split("/")[0])
        second = WebhookSource(port=port)
        with pytest.raises(WebhookServerError, match="cannot listen"):
            async with second.serving():
                pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port must be an integer between 0 and 65535"),
        ({"path": "hooks"}, "path must be a path starting with '/'"),
        ({"ack": "eventually"}, "ack must be one of 'accepted', 'written'"),
        ({"buffer_size": 0}, "buffer_size must be an integer >= 1"),
        ({"max_body_size": "lots"}, "max_body_size must be a size"),
        ({"auth": "token"}, "auth must be BearerToken"),
        ({"content_types": ["json"]}, "content_types must be media types"),
        ({"ack_timeout": "0s"}, "ack_timeout must be a duration"),
        ({"certfile": "/nonexistent.pem", "keyfile": "/nonexistent.pem"},
         "certfile must be an existing file"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        WebhookSource(**kwargs)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BearerToken(), "give at least one token"),
        (lambda: BearerToken(""), "token must be a non-empty str or bytes"),
        (lambda: HmacSignature("k", algorithm="md7"), "algorithm must be one of"),
        (lambda: HmacSignature("k", tolerance="5m"), "tolerance needs timestamp_header"),
        (lambda: HmacSignature("k", encoding="base32"), "encoding must be one of"),
    ],
)
def test_bad_auth_settings_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


async def test_stop_in_written_mode_answers_the_waiting_requests_once_written() -> None:
    gate, entered = trio.Event(), trio.Event()

    async def held(event: WebhookEvent) -> Any:
        entered.set()
        await gate.wait()
        return event.data

    source = WebhookSource(port=0, ack="written")
    answers: list[httpx.Response] = []
    async with running(source, held) as run, httpx.AsyncClient() as client:

        async def post() -> None:
            answers.append(await client.post(source.url, json=[{"n": 1}, {"n": 2}]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            await entered.wait()
            source.stop()  # graceful: the request in flight is still answered
            late = await client.post(source.url, json={"n": 3})
            assert late.status_code == 503
            gate.set()
    assert answers[0].status_code == 200 and answers[0].json() == {"written": 2}
    assert run.items == [{"n": 1}, {"n": 2}]


async def test_written_mode_untraceable_failure_answers_503_to_retry() -> None:
    """A later node fails on a derived item: its request cannot be known, so no waiting
    request is told its events were written."""

    def second(data: dict[str, Any]) -> Any:
        if data.get("bad"):
            raise ValueError("bad total")
        return data

    source = WebhookSource(port=0, ack="written")
    async with running(source, lambda event: dict(event.data), second) as run, \
            httpx.AsyncClient() as client:
        answer = await client.post(source.url, json=[{"n": 1}, {"bad": True}])
        after = await client.post(source.url, json={"n": 2})
    assert answer.status_code == 503
    assert "could not be traced" in answer.json()["error"]
    assert after.status_code == 200  # later requests are answered normally
    assert run.items == [{"n": 1}, {"n": 2}]
    assert source.stats.untraced_failures == 1
