"""Client ids bound to authenticated identities.

With ``authenticate`` configured, a client id belongs to the identity that first connected
with it: that identity may reconnect with it (taking over its own older connection, close
4009), any other identity asking for it is refused with close code 4003
(:data:`~haive_plugin_websocket.protocol.CLOSE_CLIENT_ID_FORBIDDEN`) while the owner stays
connected and untouched. The binding outlives the connection by ``client_id_ttl``, so an
impostor cannot pick up messages addressed to a client that is reconnecting, and with a
backplane it holds across every node (the backplane's ``claim_client``). Without
``authenticate`` there are no identities: client ids are not bound, and a newer connection
with an id replaces the older one whoever opened it.

Identities are compared by a key (:func:`identity_key`, or the manager's
``identity_key=`` callable): a string identity is its own key, anything else its canonical
JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from .protocol import CLOSE_CLIENT_ID_FORBIDDEN

if TYPE_CHECKING:
    from .backplane import Backplane
    from .server import ServerStats
    from .server_registry import ConnectionRegistry
    from .server_session import ClientInfo

log = logging.getLogger("haive.websocket.server")

IdentityKeyFn = Callable[[Any], str]


def identity_key(identity: Any) -> str:
    """The key that says whether two identities are the same: a string is its own key,
    anything else its JSON with sorted keys.

    An identity that JSON cannot encode (an arbitrary object) raises TypeError: give the
    manager an ``identity_key=`` callable for such identities.

    Example::

        >>> identity_key("ada"), identity_key({"user": "ada", "admin": True})
        ('ada', '{"admin":true,"user":"ada"}')
        >>> identity_key({"admin": True, "user": "ada"}) == identity_key({"user": "ada", "admin": True})
        True
    """
    if isinstance(identity, str):
        return identity
    try:
        return orjson.dumps(
            identity, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError as exc:
        raise TypeError(
            f"authenticate() returned a {type(identity).__name__}, which has no stable key to "
            "bind client ids to: return a str or a JSON value, or pass "
            "WebSocketManager(identity_key=fn) mapping an identity to a str"
        ) from exc


class ClientIdReservations:
    """Client ids whose connection closed, still bound to their owner for ``ttl`` seconds.

    Connected clients are bound through their sessions; this table only remembers the ids
    of recently closed ones. It holds each id once and forgets it ``ttl`` seconds after its
    release, so it is bounded by the connections closed within ``ttl``.

    Example::

        >>> reservations = ClientIdReservations(ttl=60.0)
        >>> reservations.release("phone-1", owner="ada", now=0.0)
        >>> reservations.owner("phone-1", now=30.0), reservations.owner("phone-1", now=61.0)
        ('ada', None)
        >>> len(reservations)
        0
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        # client id -> (owner key, expiry); inserted in expiry order (the ttl is constant).
        self._entries: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def release(self, client_id: str, owner: str, now: float) -> None:
        """The last connection of ``client_id`` closed at ``now``: keep it for ``owner``."""
        self._entries.pop(client_id, None)  # re-insert: keeps the table in expiry order
        self._entries[client_id] = (owner, now + self.ttl)
        self._expire(now)

    def owner(self, client_id: str, now: float) -> str | None:
        """The owner key ``client_id`` is reserved for at ``now``, or None."""
        self._expire(now)
        entry = self._entries.get(client_id)
        return entry[0] if entry is not None else None

    def discard(self, client_id: str) -> None:
        """Forget ``client_id`` (its owner connected again and holds it through its session)."""
        self._entries.pop(client_id, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][1] > now:
                break
            del entries[oldest]


@attrs.frozen
class Refusal:
    """Why a connection may not have the client id it asked for: its close code and reason."""

    code: int
    reason: str


class ClientIdBinding:
    """Binds client ids to the identities that connected with them (with ``authenticate``).

    Given the server's connected clients (whose sessions hold their ``owner`` key), its
    backplane (None for a single node: the binding is then this node's), its stats, the
    ``ttl`` a binding outlives its connection, and :attr:`identity_key`. :meth:`claim`
    answers a new connection's owner key or a :class:`Refusal`; :meth:`release` keeps a
    closed connection's id for its owner.

    Example::

        >>> import trio
        >>> from haive_plugin_websocket import ServerStats
        >>> from haive_plugin_websocket.server_registry import ConnectionRegistry
        >>> from haive_plugin_websocket.server_session import ClientInfo
        >>> binding = ClientIdBinding(ConnectionRegistry(), None, ServerStats(), ttl=60.0)
        >>> async def main():
        ...     binding.release("phone-1", "ada")   # ada's connection with it just closed
        ...     mallory = await binding.claim(ClientInfo("phone-1", identity="mallory"))
        ...     ada = await binding.claim(ClientInfo("phone-1", identity="ada"))
        ...     return mallory, ada
        >>> trio.run(main)
        (Refusal(code=4003, reason="client id 'phone-1' belongs to another identity"), 'ada')
    """

    def __init__(
        self,
        registry: ConnectionRegistry,
        backplane: Backplane | None,
        stats: ServerStats,
        *,
        ttl: float,
        identity_key: IdentityKeyFn = identity_key,
    ) -> None:
        self.registry = registry
        self.backplane = backplane
        self.stats = stats
        self.ttl = ttl
        self.identity_key = identity_key
        self.reservations = ClientIdReservations(ttl)

    async def claim(self, info: ClientInfo) -> str | Refusal:
        """The owner key binding ``info.client_id`` to ``info.identity``, or why not: the id
        belongs to another identity (4003), or it cannot be checked (1011)."""
        cid = info.client_id
        try:
            owner = self.identity_key(info.identity)
        except Exception:
            log.exception("identity_key() failed for client %s; refusing the connection", cid)
            self.stats.errors["unauthorized"] += 1
            return Refusal(1011, "server error: the identity has no key to bind the id")
        current = self.registry.get(cid)
        if current is not None:
            allowed = current.owner == owner
        else:
            reserved = self.reservations.owner(cid, trio.current_time())
            allowed = reserved is None or reserved == owner
        # Without a backplane nothing here awaits: checking the id and registering the
        # connection (by the caller) happen without another connection slipping in between.
        if allowed and self.backplane is not None:
            # The cluster-wide binding: atomic in the backplane, so two nodes cannot hand
            # the same id to two identities. An unreachable backplane refuses (fails closed).
            try:
                allowed = await self.backplane.claim_client(cid, owner, self.ttl)
            except Exception:
                log.exception("claiming client id %s on the backplane failed; refusing", cid)
                return Refusal(1011, "server error: cannot check the client id")
        if not allowed:
            self.stats.errors["client_id_forbidden"] += 1
            log.warning("refused client id %r to another identity (%s)", cid, info.remote_address)
            return Refusal(CLOSE_CLIENT_ID_FORBIDDEN, f"client id {cid!r} belongs to another identity")
        self.reservations.discard(cid)
        return owner

    def release(self, client_id: str, owner: str) -> None:
        """The last connection of ``client_id`` (bound to ``owner``) closed: keep it for ``ttl``."""
        self.reservations.release(client_id, owner, trio.current_time())


__all__ = ["ClientIdBinding", "ClientIdReservations", "IdentityKeyFn", "Refusal", "identity_key"]
