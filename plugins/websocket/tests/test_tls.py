"""wss:// end to end with certificates minted by the test (a throwaway CA from trustme)."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from haive_plugin_websocket import (
    ClientSession,
    ConnectionConfig,
    ConnectionFailedError,
    ServerConfig,
    StreamingClient,
    TLSVerificationError,
    WebSocketManager,
    client_ssl_context,
)
from trio_websocket import open_websocket_url

from haive.dataflow.errors import ConfigError


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    """PEM files: the CA, a leaf for 127.0.0.1/localhost, its key, and a leaf for another host."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    other = ca.issue_cert("example.org")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "other_cert": tmp_path / "other.pem",
        "other_key": tmp_path / "other.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(files["cert"]), append=True)
    other.private_key_pem.write_to_path(str(files["other_key"]))
    for blob in other.cert_chain_pems:
        blob.write_to_path(str(files["other_cert"]), append=True)
    return files


def adder(manager: WebSocketManager) -> list[Any]:
    """Registers an ``add`` handler; returns the list the server's TLS streams land in."""
    streams: list[Any] = []

    @manager.on_connect
    def connected(client: ClientSession) -> None:
        streams.append(client.ws.stream)

    @manager.on_message("add")
    def add(client: ClientSession, message: dict[str, Any]) -> dict[str, Any]:
        # Handler replies carry no request id unless the handler copies it.
        return {"type": "sum", "value": message["a"] + message["b"], "id": message["id"]}

    return streams


async def test_wss_end_to_end_with_cert_and_key_files(pki: dict[str, Path]) -> None:
    manager = WebSocketManager(port=0, certfile=str(pki["cert"]), keyfile=str(pki["key"]))
    streams = adder(manager)
    with trio.fail_after(10):
        async with manager.serving():
            assert manager.url.startswith("wss://127.0.0.1:")
            client = StreamingClient(ConnectionConfig(url=manager.url, ca_file=str(pki["ca"])))
            async with client.connect():
                reply = await client.request({"type": "add", "a": 2, "b": 3})
                await client.join("news")
                got = trio.Event()
                headlines: list[dict[str, Any]] = []

                @client.on_message("headline")
                def headline(message: dict[str, Any]) -> None:
                    headlines.append(message)
                    got.set()

                await manager.broadcast_to_room("news", {"type": "headline", "text": "secret"})
                await got.wait()
    assert reply["value"] == 5
    assert headlines[0]["text"] == "secret"
    # The server really spoke TLS on that connection.
    assert isinstance(streams[0], trio.SSLStream)
    assert streams[0].version() in ("TLSv1.2", "TLSv1.3")


async def test_wss_with_ssl_contexts(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    manager = WebSocketManager(ServerConfig(port=0, ssl=server_context))
    adder(manager)
    with trio.fail_after(10):
        async with manager.serving():
            config = ConnectionConfig(url=manager.url, ssl=client_context, serializer="msgpack")
            async with StreamingClient(config).connect() as client:
                reply = await client.request({"type": "add", "a": 20, "b": 22})
    assert reply["value"] == 42


async def test_standard_wss_client_interoperates(pki: dict[str, Path]) -> None:
    """An independent client (trio-websocket) talks to the wss:// server."""
    manager = WebSocketManager(port=0, certfile=str(pki["cert"]), keyfile=str(pki["key"]))
    with trio.fail_after(10):
        async with manager.serving():
            context = client_ssl_context(pki["ca"])
            async with open_websocket_url(manager.url, ssl_context=context) as ws:
                welcome = await ws.get_message()
    assert '"welcome"' in welcome


async def test_untrusted_certificate_is_refused_with_a_clear_error(pki: dict[str, Path]) -> None:
    manager = WebSocketManager(port=0, certfile=str(pki["cert"]), keyfile=str(pki["key"]))
    with trio.fail_after(10):
        async with manager.serving():
            url = manager.url
            # Retrying forever would be allowed: the client still gives up at once.
            client = StreamingClient(ConnectionConfig(url=url, max_reconnect_attempts=None))
            with pytest.raises(TLSVerificationError) as info:
                async with client.connect():
                    pytest.fail("connected to a server whose CA is not trusted")
            assert manager.stats.connections_opened == 0
    message = str(info.value)
    assert f"the certificate of {url} is not trusted" in message
    assert "unable to get local issuer certificate" in message and "ca_file" in message
    assert isinstance(info.value, ConnectionFailedError)
    assert client.failed is info.value
    assert [event.kind for event in client.events][-1] == "gave_up"


async def test_certificate_for_another_host_is_refused(pki: dict[str, Path]) -> None:
    manager = WebSocketManager(
        port=0, certfile=str(pki["other_cert"]), keyfile=str(pki["other_key"])
    )
    with trio.fail_after(10):
        async with manager.serving():
            client = StreamingClient(ConnectionConfig(url=manager.url, ca_file=str(pki["ca"])))
            with pytest.raises(TLSVerificationError, match="mismatch"):
                async with client.connect():
                    pass


async def test_wss_client_against_a_plain_server_gives_up(pki: dict[str, Path]) -> None:
    """A plain server never answers the TLS hello: the handshake times out, attempts end."""
    manager = WebSocketManager(port=0, open_timeout=0.5)
    with trio.fail_after(10):
        async with manager.serving():
            url = manager.url.replace("ws://", "wss://")
            config = ConnectionConfig(
                url=url, ca_file=str(pki["ca"]), max_reconnect_attempts=0, open_timeout=1
            )
            with pytest.raises(ConnectionFailedError, match="after 0 reconnect attempts"):
                async with StreamingClient(config).connect():
                    pass


async def test_plaintext_answer_to_the_tls_hello_gives_up_at_once(pki: dict[str, Path]) -> None:
    """A peer answering in plain HTTP is a TLS misconfiguration: no retry loop."""

    async def plaintext(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, plaintext, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        config = ConnectionConfig(url=f"wss://127.0.0.1:{port}/", ca_file=str(pki["ca"]))
        with trio.fail_after(10):
            with pytest.raises(TLSVerificationError, match=r"TLS handshake with .* failed"):
                async with StreamingClient(config).connect():
                    pass
        nursery.cancel_scope.cancel()


async def test_plain_client_cannot_reach_a_tls_server_and_it_keeps_serving(
    pki: dict[str, Path],
) -> None:
    manager = WebSocketManager(port=0, certfile=str(pki["cert"]), keyfile=str(pki["key"]))
    adder(manager)
    with trio.fail_after(10):
        async with manager.serving():
            plain = StreamingClient(
                ConnectionConfig(
                    url=manager.url.replace("wss://", "ws://"),
                    max_reconnect_attempts=0,
                    open_timeout=2,
                )
            )
            with pytest.raises(ConnectionFailedError):
                async with plain.connect():
                    pass
            secure = StreamingClient(ConnectionConfig(url=manager.url, ca_file=str(pki["ca"])))
            async with secure.connect():
                reply = await secure.request({"type": "add", "a": 1, "b": 1})
    assert reply["value"] == 2


def test_tls_configuration_errors(pki: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is ws://: use wss://"):
        ConnectionConfig(url="ws://127.0.0.1:1/", ca_file=str(pki["ca"]))
    with pytest.raises(ConfigError, match="ca_file: no such file"):
        ConnectionConfig(url="wss://127.0.0.1:1/", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="either ssl"):
        ConnectionConfig(
            url="wss://127.0.0.1:1/", ssl=ssl.create_default_context(), ca_file=str(pki["ca"])
        )
    with pytest.raises(ConfigError, match=r"ssl: expected an ssl\.SSLContext"):
        ServerConfig(ssl="cert.pem")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="certfile: no such file"):
        ServerConfig(certfile=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="keyfile: given without certfile"):
        ServerConfig(keyfile=str(pki["key"]))
    with pytest.raises(ConfigError, match="cannot load the certificate chain"):
        ServerConfig(certfile=str(pki["cert"]), keyfile=str(pki["other_key"]))
    # ws:// stays plain: no context is built for it.
    assert ConnectionConfig(url="ws://127.0.0.1:1/").tls_context is None
    assert ServerConfig().tls_context is None
