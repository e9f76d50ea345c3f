"""An independent peer in another process: the ``websockets`` asyncio client.

``python asyncio_peer.py URL [--token T] [--client-id ID] [--send JSON]... [--send-zeros N]
[--read N]`` connects (offering permessage-deflate), sends each ``--send`` text frame and
then, with ``--send-zeros``, one text frame of N zeros (a few KB on the wire), reads up to ``N`` messages (or until the
server closes), and prints one JSON line per event: ``{"recv": message}`` for each message
and finally ``{"closed": code, "reason": text}`` or ``{"open": true}`` if still open.
The tests run it with ``trio.run_process`` to talk to a real server over a real socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main(args: argparse.Namespace) -> None:
    headers = []
    if args.token:
        headers.append(("Authorization", f"Bearer {args.token}"))
    if args.client_id:
        headers.append(("X-Haive-Client-Id", args.client_id))
    async with connect(args.url, additional_headers=headers, open_timeout=20) as ws:
        try:
            for frame in args.send:
                await ws.send(frame)
            if args.send_zeros:
                await ws.send("0" * args.send_zeros)
        except ConnectionClosed:
            pass
        try:
            for _ in range(args.read):
                raw = await asyncio.wait_for(ws.recv(), timeout=20)
                print(json.dumps({"recv": json.loads(raw)}), flush=True)
        except ConnectionClosed:
            pass
        if ws.close_code is None:
            print(json.dumps({"open": True}), flush=True)
            return
        print(json.dumps({"closed": ws.close_code, "reason": ws.close_reason}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--client-id")
    parser.add_argument("--send", action="append", default=[])
    parser.add_argument("--send-zeros", type=int, default=0)
    parser.add_argument("--read", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
