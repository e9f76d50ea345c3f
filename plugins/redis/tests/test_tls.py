"""``rediss://``: the state backend and the stream source/sink against a TLS-only redis-server
started by the test, with a CA and server certificate minted here (trustme)."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import trustme
from haive_plugin_redis import RedisClient, RedisStreamSink, RedisStreamSource

from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
from haive.dataflow.state.store import StateStore

pytestmark = pytest.mark.redis_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TLSRedis:
    """A redis-server answering only TLS on 127.0.0.1; ``url`` trusts its CA."""

    def __init__(self, root: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert_file, key_file = root / "server.pem", root / "server.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        self.port = free_port()
        self.log = root / "redis.log"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", "0",  # no plain-text port at all
                "--tls-port", str(self.port),
                "--bind", "127.0.0.1",
                "--tls-cert-file", str(cert_file),
                "--tls-key-file", str(key_file),
                "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "no",
                "--dir", str(root), "--logfile", str(self.log),
            ]
        )  # fmt: skip
        self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.ca_file))}"
        deadline = time.monotonic() + 60
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"TLS redis-server did not start:\n{self.log.read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TLSRedis]:
    server = TLSRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def test_state_store_over_rediss(tls_redis: TLSRedis) -> None:
    async with StateStore(tls_redis.url, namespace=f"t-{uuid.uuid4().hex[:8]}") as store:
        await store.put("user:ada", {"visits": 1})
        await store.update("user:ada", lambda v: {"visits": v["visits"] + 1})
        assert await store.get("user:ada") == {"visits": 2}


async def test_streams_over_rediss(tls_redis: TLSRedis) -> None:
    client = RedisClient(tls_redis.url, pool_size=2)
    try:
        await RedisStreamSink("{t}:in", client=client).write_batch([{"n": n} for n in range(100)])
        source = RedisStreamSource("{t}:in", group="g", client=client, stop_when_drained=True)
        pipeline = StreamingPipeline("tls")
        pipeline.set_source(source)
        pipeline.add_processor(lambda item: {"n": item["n"] * 2})
        pipeline.set_sink(source.sink("{t}:out"))
        report = await pipeline.execute()
        assert report.processed == 100
        raw = redis.Redis.from_url(tls_redis.url)
        assert raw.xlen("{t}:out") == 100
        assert raw.xpending("{t}:in", "g")["pending"] == 0
        raw.close()
    finally:
        client.close()


async def test_rediss_checks_the_server_certificate(tls_redis: TLSRedis) -> None:
    # Without the test CA the server's certificate is not trusted: refused, nothing sent.
    untrusted = f"rediss://127.0.0.1:{tls_redis.port}/0"
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        async with StateStore(untrusted, namespace="x"):
            pass
    # And plain text to the TLS port gets no Redis answer.
    with pytest.raises(redis.ConnectionError):
        async with StateStore(f"redis://127.0.0.1:{tls_redis.port}/0", namespace="x"):
            pass
