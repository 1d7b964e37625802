"""The room state beyond this node, as the TCP handler sees it: one interface, two backends.

:class:`Backend` is what :class:`~ocm.server.tcp.TcrpHandler` asks around the registry's
own checks: the list of rooms, a room's details, whether a name is free in the whole
cluster, whether an IP is blocked there. :class:`LocalBackend` is the embedded default,
a server on its own: its registry is all there is, so each answer comes from it and each
claim is already made. :class:`~ocm.server.cluster.redis_backend.RedisBackend` asks the
cluster's store. The handler calls the same methods in the same order on either, and
does not know which it has.
"""

from __future__ import annotations

from typing import Protocol

from ocm.server.exposition import ClusterState
from ocm.server.passwords import PasswordHash
from ocm.server.registry import PendingCreate, PendingJoin, Room, RoomRegistry
from ocm.wire.tcrp import RoomDetails, RoomInfo

__all__ = ["Backend", "LocalBackend"]


class Backend(Protocol):
    """Where rooms live. Every method may refuse with :class:`ocm.errors.RoomError`."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Flush what this node said and stop (after the registry's ``close_all``)."""
        ...

    def state(self) -> ClusterState | None:
        """The link to the cluster's store, for the metrics (None: no cluster)."""
        ...

    async def list_rooms(self) -> list[RoomInfo]: ...

    async def lookup(self, name: str) -> RoomDetails: ...

    async def load_room(self, name: str) -> None:
        """Before a join: make sure the registry has room ``name`` if it exists."""
        ...

    async def check_blocked(self, ip: str) -> None:
        """Before a password is checked: refuse an IP blocked for wrong passwords."""
        ...

    async def claim_room(
        self, pending: PendingCreate, password: PasswordHash | None, sealed: bool
    ) -> None:
        """Before the registry creates a room: take its name (and count it)."""
        ...

    async def release_room(self, pending: PendingCreate) -> None:
        """The registry refused a create that :meth:`claim_room` claimed."""
        ...

    async def reserve_member(self, pending: PendingJoin) -> None:
        """Before the registry adds a member: take its name in the room."""
        ...

    async def release_member(self, pending: PendingJoin) -> None:
        """The registry refused a join that :meth:`reserve_member` reserved."""
        ...

    async def settle(self, room: Room) -> int | None:
        """The Seq of the last NOTICE or CLOSED this node said in ``room`` (a join's
        NOTICE, before COMPLETE), once it is numbered and applied here; None: it was
        numbered at once, as on a server alone (or not in time: the room's latest Seq
        will do)."""
        ...


class LocalBackend:
    """A server on its own: the registry is the whole state, so nothing is asked twice."""

    def __init__(self, registry: RoomRegistry) -> None:
        self.registry = registry

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def state(self) -> ClusterState | None:
        return None

    async def list_rooms(self) -> list[RoomInfo]:
        return self.registry.list_rooms()

    async def lookup(self, name: str) -> RoomDetails:
        return self.registry.lookup(name)

    async def load_room(self, name: str) -> None:
        pass

    async def check_blocked(self, ip: str) -> None:
        pass

    async def claim_room(
        self, pending: PendingCreate, password: PasswordHash | None, sealed: bool
    ) -> None:
        pass

    async def release_room(self, pending: PendingCreate) -> None:
        pass

    async def reserve_member(self, pending: PendingJoin) -> None:
        pass

    async def release_member(self, pending: PendingJoin) -> None:
        pass

    async def settle(self, room: Room) -> int | None:
        return None
