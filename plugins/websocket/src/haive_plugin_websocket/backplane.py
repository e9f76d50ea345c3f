"""Scale-out: several server processes share rooms through Redis pub/sub.

Every node subscribes to all room channels of a prefix. A broadcast runs one Lua script
that increments the room's sequence number and publishes the message with it, so every
node sees room messages in the same order with the same numbers (recovery works whichever
node a client reconnects to). Each node delivers to its own members and keeps its own
bounded room history. Membership lives in Redis hashes, filtered by node liveness keys, so
``members(room)`` is cluster-wide; direct messages reach a client on any node through that
node's channel.

redis-py is synchronous: every call runs in a worker thread (``trio.to_thread``); the
subscriber waits at most ``poll_timeout`` per call so that shutdown is prompt.
Install with ``pip install haive-plugin-websocket[redis]``.
"""

from __future__ import annotations

import abc
import logging
import uuid
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from haive.dataflow.runtime.backpressure import BoundedBuffer

from .protocol import OutMessage

if TYPE_CHECKING:
    from .server import WebSocketManager

log = logging.getLogger("haive.websocket.backplane")

# INCR the room's sequence number and PUBLISH "<seq>:<message>" in one atomic step.
_PUBLISH_ROOM = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], seq .. ':' .. ARGV[1])
return seq
"""
# Bind a client id to an owner (an identity key) unless another owner holds it.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# Extend a client id's binding while its owner is connected (only if it still owns it).
_KEEP_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete a hash field only if it still belongs to this node (a client may have moved).
_HDEL_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class Backplane(abc.ABC):
    """What a :class:`~haive_plugin_websocket.WebSocketManager` needs to share rooms.

    ``run`` is started by the manager in its nursery (``task_status.started()`` once
    subscribed); the manager then publishes through it and the backplane delivers what
    arrives by calling ``manager._deliver_room`` / ``manager._deliver_direct`` (which hand
    it to the manager's :class:`~haive_plugin_websocket.server_broadcast.Broadcaster`).
    """

    node_id: str
    epoch: str

    @abc.abstractmethod
    async def run(
        self, manager: WebSocketManager, *, task_status: trio.TaskStatus[None]
    ) -> None: ...

    @abc.abstractmethod
    async def publish_room(
        self, room: str, payload: dict[str, Any] | bytes, exclude: str | None
    ) -> None: ...

    @abc.abstractmethod
    async def publish_direct(self, client_id: str, payload: dict[str, Any] | bytes) -> bool: ...

    @abc.abstractmethod
    async def add_member(self, room: str, client_id: str) -> None: ...

    @abc.abstractmethod
    async def remove_member(self, room: str, client_id: str) -> None: ...

    @abc.abstractmethod
    async def members(self, room: str) -> list[str]: ...

    @abc.abstractmethod
    async def register_client(self, client_id: str) -> None: ...

    @abc.abstractmethod
    async def claim_client(self, client_id: str, owner: str, ttl: float) -> bool:
        """Bind ``client_id`` to ``owner`` (an identity key) on every node; False if another
        owner holds it. The binding lasts while the owner is connected to any node and
        ``ttl`` seconds after; it must be atomic across nodes."""

    @abc.abstractmethod
    async def unregister_client(self, client_id: str) -> None: ...


class RedisBackplane(Backplane):
    """Rooms shared by every server using the same Redis and ``prefix``.

    Example (two servers, one room; a broadcast on ``a`` reaches a client of ``b``)::

        >>> import trio, uuid
        >>> from haive_plugin_websocket import WebSocketManager, StreamingClient, ConnectionConfig
        >>> async def main():
        ...     prefix = f"doctest:{uuid.uuid4().hex}"
        ...     a = WebSocketManager(port=0, backplane=RedisBackplane(prefix=prefix))
        ...     b = WebSocketManager(port=0, backplane=RedisBackplane(prefix=prefix))
        ...     try:
        ...         async with a.serving(), b.serving():
        ...             client = StreamingClient(ConnectionConfig(url=b.url))
        ...             got = trio.Event()
        ...             client.on_message("news")(lambda m: got.set())
        ...             async with client.connect():
        ...                 await client.join("r")
        ...                 await a.broadcast_to_room("r", {"type": "news"})
        ...                 await got.wait()
        ...                 return await a.members("r") == [client.client_id]
        ...     finally:
        ...         await RedisBackplane(prefix=prefix).purge()
        >>> trio.run(main)
        True
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "haive:ws",
        node_ttl: float = 30.0,
        poll_timeout: float = 0.1,
        publish_queue: int = 10_000,
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "RedisBackplane needs redis-py: pip install 'haive-plugin-websocket[redis]'"
            ) from exc
        self.url = url
        self.prefix = prefix
        self.node_id = uuid.uuid4().hex[:12]
        self.epoch = ""
        self.node_ttl = node_ttl
        self.poll_timeout = poll_timeout
        self._redis = redis.Redis.from_url(url)
        self._publish_script = self._redis.register_script(_PUBLISH_ROOM)
        self._hdel_if = self._redis.register_script(_HDEL_IF)
        self._claim = self._redis.register_script(_CLAIM)
        self._keep_claim = self._redis.register_script(_KEEP_CLAIM)
        self._outbox: BoundedBuffer[tuple[str, bytes, bytes]] = BoundedBuffer(
            publish_queue, "block", name="websocket-backplane-out"
        )
        self._room_prefix = f"{prefix}:room:".encode()
        self.published = 0
        self.received = 0

    # -- keys ------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(
        self,
        manager: WebSocketManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        r = self._redis
        await trio.to_thread.run_sync(r.ping)
        epoch_key = self._key("epoch")
        fresh = uuid.uuid4().hex[:12]

        def get_epoch() -> str:
            r.set(epoch_key, fresh, nx=True)
            value = r.get(epoch_key)
            return value.decode() if isinstance(value, bytes) else str(value)

        self.epoch = "r" + await trio.to_thread.run_sync(get_epoch)
        pubsub = r.pubsub()
        try:
            await trio.to_thread.run_sync(self._subscribe, pubsub)
            await self._refresh_node()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, pubsub, manager)
                nursery.start_soon(self._publisher)
                nursery.start_soon(self._keepalive, manager)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await trio.to_thread.run_sync(self._shutdown, pubsub)

    def _subscribe(self, pubsub: Any) -> None:
        pubsub.psubscribe(self._key("room", "*"))
        pubsub.subscribe(self._key("node", self.node_id))
        confirmed = 0
        while confirmed < 2:  # wait until both subscriptions are live: nothing is missed
            message = pubsub.get_message(timeout=5.0)
            if message is None:
                raise TimeoutError(f"Redis at {self.url} did not confirm the subscriptions")
            if message["type"] in ("psubscribe", "subscribe"):
                confirmed += 1

    def _shutdown(self, pubsub: Any) -> None:
        try:
            self._redis.delete(self._key("nodes", self.node_id))
            pubsub.close()
        except Exception:
            log.exception("closing the Redis backplane failed")

    async def _keepalive(self, manager: WebSocketManager) -> None:
        while True:
            await trio.sleep(self.node_ttl / 3)
            await self._refresh_node()
            await self._refresh_claims(manager)

    def _claim_ttl(self, ttl: float) -> int:
        # Refreshed every node_ttl / 3 while connected: outlive that by a margin.
        return max(1, int(ttl + self.node_ttl + 0.999))

    async def _refresh_claims(self, manager: WebSocketManager) -> None:
        claims = [
            (self._key("owner", cid), session.owner)
            for cid, session in manager.clients.items()
            if session.owner is not None
        ]
        if not claims:
            return
        ttl = self._claim_ttl(manager.config.client_id_ttl)

        def refresh() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key, owner in claims:
                self._keep_claim(keys=[key], args=[owner, ttl], client=pipe)
            pipe.execute()

        try:
            await trio.to_thread.run_sync(refresh)
        except Exception:
            log.exception("refreshing the client id bindings failed; retrying next round")

    async def _refresh_node(self) -> None:
        key = self._key("nodes", self.node_id)
        ttl = max(1, int(self.node_ttl))
        await trio.to_thread.run_sync(lambda: self._redis.set(key, b"1", ex=ttl))

    # -- receiving -------------------------------------------------------------------------------
    def _pull(self, pubsub: Any) -> list[dict[str, Any]]:
        first = pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_timeout)
        if first is None:
            return []
        messages = [first]
        while len(messages) < 1000:
            more = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
            if more is None:
                break
            messages.append(more)
        return messages

    async def _listen(self, pubsub: Any, manager: WebSocketManager) -> None:
        room_prefix = self._room_prefix
        while True:
            for message in await trio.to_thread.run_sync(self._pull, pubsub):
                try:
                    self._handle(message, manager, room_prefix)
                except Exception:
                    log.exception(
                        "dropped a malformed backplane message on %r", message.get("channel")
                    )

    def _handle(
        self, message: dict[str, Any], manager: WebSocketManager, room_prefix: bytes
    ) -> None:
        kind = message.get("type")
        data: bytes = message["data"]
        self.received += 1
        if kind == "pmessage":
            room = message["channel"][len(room_prefix) :].decode()
            seq_text, _, body = data.partition(b":")
            envelope = msgpack.unpackb(body, raw=False)
            seq = int(seq_text) or None
            manager._deliver_room(room, OutMessage(envelope["p"], seq), envelope.get("x"))
        elif kind == "message":
            envelope = msgpack.unpackb(data, raw=False)
            manager._deliver_direct(envelope["c"], envelope["p"])

    # -- publishing ------------------------------------------------------------------------------
    async def publish_room(
        self, room: str, payload: dict[str, Any] | bytes, exclude: str | None
    ) -> None:
        body = msgpack.packb({"p": payload, "x": exclude}, use_bin_type=True)
        await self._outbox.put(
            ("binary" if isinstance(payload, bytes) else "room", room.encode(), body)
        )

    async def _publisher(self) -> None:
        while True:
            batch = await self._outbox.get_batch(512)
            await trio.to_thread.run_sync(self._publish_batch, batch)
            self.published += len(batch)

    def _publish_batch(self, batch: list[tuple[str, bytes, bytes]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for kind, room_bytes, body in batch:
            room = room_bytes.decode()
            channel = self._key("room", room)
            if kind == "room":
                self._publish_script(
                    keys=[self._key("seq", room), channel], args=[body], client=pipe
                )
            else:
                pipe.publish(channel, b"0:" + body)
        pipe.execute()

    async def publish_direct(self, client_id: str, payload: dict[str, Any] | bytes) -> bool:
        r = self._redis
        clients_key = self._key("clients")
        body = msgpack.packb({"c": client_id, "p": payload}, use_bin_type=True)

        def send() -> bool:
            node = r.hget(clients_key, client_id)
            if node is None:
                return False
            return bool(r.publish(self._key("node", _text(node)), body))

        return await trio.to_thread.run_sync(send)

    # -- membership ------------------------------------------------------------------------------
    async def add_member(self, room: str, client_id: str) -> None:
        key = self._key("members", room)
        await trio.to_thread.run_sync(lambda: self._redis.hset(key, client_id, self.node_id))

    async def remove_member(self, room: str, client_id: str) -> None:
        key = self._key("members", room)
        await trio.to_thread.run_sync(
            lambda: self._hdel_if(keys=[key], args=[client_id, self.node_id])
        )

    async def members(self, room: str) -> list[str]:
        r = self._redis
        key = self._key("members", room)

        def read() -> list[str]:
            entries = {_text(k): _text(v) for k, v in r.hgetall(key).items()}
            nodes = sorted(set(entries.values()))
            alive = (
                dict(zip(nodes, r.mget([self._key("nodes", n) for n in nodes]), strict=True))
                if nodes
                else {}
            )
            return sorted(cid for cid, node in entries.items() if alive.get(node) is not None)

        return await trio.to_thread.run_sync(read)

    async def register_client(self, client_id: str) -> None:
        key = self._key("clients")
        await trio.to_thread.run_sync(lambda: self._redis.hset(key, client_id, self.node_id))

    async def claim_client(self, client_id: str, owner: str, ttl: float) -> bool:
        key = self._key("owner", client_id)
        seconds = self._claim_ttl(ttl)
        return bool(
            await trio.to_thread.run_sync(lambda: self._claim(keys=[key], args=[owner, seconds]))
        )

    async def unregister_client(self, client_id: str) -> None:
        key = self._key("clients")
        await trio.to_thread.run_sync(
            lambda: self._hdel_if(keys=[key], args=[client_id, self.node_id])
        )

    async def purge(self) -> int:
        """Delete every key of this prefix (tests, or retiring a deployment); returns the count."""
        r = self._redis
        pattern = f"{self.prefix}:*"

        def delete_all() -> int:
            keys = list(r.scan_iter(match=pattern, count=500))
            return int(r.delete(*keys)) if keys else 0

        return await trio.to_thread.run_sync(delete_all)


def _text(value: bytes | str) -> str:
    # redis-py types replies as bytes | str; without decode_responses they are bytes.
    return value.decode() if isinstance(value, bytes) else value
