"""wss:// end to end: a WebSocket server with a certificate, a client that verifies it.

For the demo a throwaway CA mints the server's certificate (``trustme``; in production
pass your real ``certfile``/``keyfile``, e.g. from Let's Encrypt, and clients need no
``ca_file`` since the system trusts that CA). The client trusts the demo CA through
``ca_file`` and exchanges messages over TLS; a second client that does not trust the CA is
refused at once with ``TLSVerificationError``.

Needs haive-plugin-websocket and trustme. Run: ``python examples/production_tls.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
import trustme
from haive_plugin_websocket import TLSVerificationError

from haive.dataflow.streaming import ConnectionConfig, StreamingClient, WebSocketManager


def mint_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate + key for 127.0.0.1 signed by it (PEM files)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    return ca_file, cert, key


async def main(folder: Path) -> None:
    ca_file, cert, key = mint_certificates(folder)
    manager = WebSocketManager(port=0, certfile=str(cert), keyfile=str(key))

    @manager.on_message("vitals")
    def vitals(client: Any, message: dict[str, Any]) -> dict[str, Any]:
        return {"type": "ack", "patient": message["patient"], "id": message["id"]}

    async with manager.serving():
        print("serving", manager.url)
        client = StreamingClient(ConnectionConfig(url=manager.url, ca_file=str(ca_file)))
        async with client.connect():
            for patient in ("p-1", "p-2"):
                reply = await client.request({"type": "vitals", "patient": patient, "bpm": 72})
                print("server acknowledged", reply["patient"], "over TLS")

        stranger = StreamingClient(ConnectionConfig(url=manager.url))  # system CAs only
        try:
            async with stranger.connect():
                raise SystemExit("a client that does not trust the CA must not connect")
        except TLSVerificationError as exc:
            print("untrusted client refused:", str(exc).split(";")[0])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))
