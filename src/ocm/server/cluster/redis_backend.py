"""The cluster's backend: rooms shared by every node through one Redis.

The design of the Socket.IO Redis adapter and Centrifugo's Redis engine. Each node keeps
a replica of each room it has members in (their tokens, addresses and keys stay on the
node); Redis keeps what the nodes share (:mod:`ocm.server.cluster.scripts` lists the
keys). Every change to a room is one Lua script, run atomically: a create takes the name,
a join the member's name, and whatever is said in a room is numbered there (INCR), kept
in the room's capped stream (XADD) and published on one channel, ``ocm:bus``, that every
node reads. So every node sees a room's entries in one order, and turns each into
datagrams for its own members (:meth:`RoomRegistry.apply`).

What this node says goes through one queue, in order, pipelined: a publish is numbered
per node and the script skips one it has run already, so a retry after a lost reply does
not say a line twice. A node that sees a gap in a room's counter (its bus connection was
down) reads what it missed from the room's stream.

Presence: each node refreshes a key with a TTL of two thirds of the idle timeout, every
sixth of it; every node runs the reaper as often, and the first to find a node's key
expired takes that node's members out of their rooms, atomically, and announces them
timed out (closing the rooms they hosted). A node that dies is so gone from every room
within 5/6 of the idle timeout.

When Redis cannot be reached, the node logs it once, refuses creates, joins, lists and
lookups with ``server_full`` (:data:`UNREACHABLE`), keeps its members, and reconnects
with exponential backoff. A room whose members are all on this node goes on: the node
numbers its lines itself meanwhile (it is ``detached``). What is said in a room with
members on other nodes waits in the queue, in order (up to :data:`MAX_QUEUED` entries;
beyond, a line is refused: a delivery client sends it again, a version 1 line is lost
and counted), and is numbered and delivered when Redis is back. Back, the node checks
the store's epoch: a store that lost its data (restarted without persistence) gets this
node's rooms, counters and members written back, and a detached room its counter,
before the queue is sent.

A partition is the one case this cannot make right: if only this node was cut off, a
member may have joined one of its detached rooms through another node meanwhile; the
two then numbered the room apart, and each side misses what the other said then. The
node logs it (WARNING) when it writes the room back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)

from ocm.errors import ErrorCode, RoomError
from ocm.server.cluster import layout, scripts
from ocm.server.cluster.entries import (
    BusMessage,
    Entry,
    MalformedEntry,
    Op,
    decode_bus_message,
    decode_entry,
    encode_entry,
)
from ocm.server.exposition import ClusterState
from ocm.server.guards import FailureLimiter, LogLimiter, canonical_ip, held_back
from ocm.server.passwords import PasswordHash
from ocm.server.registry import (
    Outgoing,
    PendingCreate,
    PendingJoin,
    Room,
    RoomRegistry,
    hosts_enough,
    name_taken,
    no_room_for_rooms,
    no_such_room,
    rate_limited,
    room_exists,
    room_full,
    wire_seq,
)
from ocm.wire.datagrams import Kind
from ocm.wire.delivery import DeliveryKind
from ocm.wire.tcrp import RoomDetails, RoomInfo
from ocm.wire.texts import HostGone, MemberEvent, Presence, format_closed, format_notice

__all__ = ["MAX_QUEUED", "UNREACHABLE", "RedisBackend"]

log = logging.getLogger("ocm.cluster")

# Entries a node holds while Redis cannot be reached: about 4 MiB of chat at most.
MAX_QUEUED = 10_000
# Publishes sent in one pipeline (one round trip).
BATCH = 256
# How long a request may wait for Redis before it is refused as unreachable.
REQUEST_TIMEOUT = 2.0
UNREACHABLE = "the cluster store (Redis) is unreachable; try again shortly"
# The environment variable that holds Redis's password (not on the command line: ps).
PASSWORD_VARIABLE = "OCM_REDIS_PASSWORD"


@dataclass(frozen=True, slots=True)
class _Publish:
    """One entry this node hands to the cluster, waiting its turn in the queue."""

    # Its counter once the store numbered it: for a NOTICE or CLOSED, which a join's
    # COMPLETE may wait for (settle); None for a chat line (nothing waits for one).
    said: asyncio.Future[int | None] | None
    number: int
    room: str
    rid: str
    op: Op
    entry: bytes
    member_key: str = ""


class _SharedFailures(FailureLimiter):
    """The registry's failure limiter, counting wrong passwords in Redis too, so that a
    guesser spread over several nodes is blocked as if it used one."""

    def __init__(self, local: FailureLimiter, backend: RedisBackend) -> None:
        super().__init__(local.max_failures, local.window, local.max_tracked)
        self._backend = backend

    def record(self, ip: str, now: float) -> int:
        self._backend.count_failure(ip)
        return super().record(ip, now)


class RedisBackend:
    """A node of a cluster on Redis (the :class:`~ocm.server.cluster.backend.Backend`)."""

    def __init__(
        self,
        url: str,
        registry: RoomRegistry,
        *,
        send: Callable[[Iterable[Outgoing]], None],
        clock: Callable[[], float],
        password: str | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.url = url
        self.registry = registry
        self.node = secrets.token_hex(layout.NODE_ID_SIZE)
        registry.bus = self
        registry.failures = _SharedFailures(registry.failures, self)
        self._send = send
        self._clock = clock
        self._backoff = backoff
        self.max_queued = max_queued
        if password is None:
            password = os.environ.get(PASSWORD_VARIABLE) or None
        # No retries inside redis-py: the supervisor reconnects, with its own backoff,
        # and a request that fails is refused at once (UNREACHABLE), not held.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            password=password,
            socket_connect_timeout=REQUEST_TIMEOUT,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._create = self._client.register_script(scripts.CREATE)
        self._join = self._client.register_script(scripts.JOIN)
        self._publish = self._client.register_script(scripts.PUBLISH)
        self._reap = self._client.register_script(scripts.REAP)
        self._list = self._client.register_script(scripts.LIST)
        self._restore = self._client.register_script(scripts.RESTORE)
        ttl = registry.idle_timeout * 2 / 3
        self.presence_ttl_ms = max(100, int(ttl * 1000))
        self.presence_interval = registry.idle_timeout / 6
        self.up = False
        self.rtt: float | None = None  # the last PING round trip, seconds
        self.dropped = 0  # entries refused: the queue was full
        self.reaped = 0  # members of dead nodes this node announced timed out
        self._queue: deque[_Publish] = deque()
        self._queued: dict[str, int] = {}  # entries in the queue, by room
        # A detached room's counter when it began to be numbered here, by incarnation.
        self._detached_from: dict[str, int] = {}
        # The last NOTICE or CLOSED this node said in each room (for settle), until numbered.
        self._said: dict[str, asyncio.Future[int | None]] = {}
        self._published = 0
        self._wake = asyncio.Event()
        self._epoch: bytes | None = None
        self._lost = False  # the store lost its data; not all written back yet
        self._writing_back = False
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._tried = asyncio.Event()  # the first try to connect is over
        self._down_since: float | None = None
        self._bus_lines = LogLimiter()
        self._refusal_lines = LogLimiter()
        self._pending_failures: set[asyncio.Task[Any]] = set()

    # -- the Bus (registry and relay, on the event loop, never waiting) --------------

    def publish(self, room: Room, op: Op, entry: Entry, member: str = "") -> bool:
        line = entry.kind in (Kind.MESSAGE, DeliveryKind.CHAT)
        if (
            not self.up
            and not self._writing_back
            and not self._queued.get(room.name)
            and _all_here(room, member)
        ):
            return self._say_here(room, op, entry, member, line)
        return self._enqueue(room.name, room.rid, op, encode_entry(entry), member, line=line)

    def _say_here(self, room: Room, op: Op, entry: Entry, member: str, line: bool) -> bool:
        """The store is out of reach and every member of ``room`` is on this node: the
        room goes on, numbered here (on the next turn of the loop, in order: the
        registry is in the middle of a call). What the store must learn (a member
        left, the room closed) waits in the queue; the counter is written back."""
        room.detached = True
        self._detached_from.setdefault(room.rid, room.counter)
        said = None if line else self._expect(room.name)
        if op is Op.LEAVE:
            self._enqueue(room.name, room.rid, Op.UNRESERVE, b"", member)
        elif op is Op.CLOSE:
            self._enqueue(room.name, room.rid, Op.DROP, b"")
        asyncio.get_running_loop().call_soon(self._apply_here, room, entry, said)
        return True

    def _expect(self, room: str) -> asyncio.Future[int | None]:
        """A future for the counter of what this node says next in ``room``, for
        :meth:`settle` (which waits for the last one)."""
        said: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._said[room] = said
        return said

    def _apply_here(
        self, room: Room, entry: Entry, said: asyncio.Future[int | None] | None
    ) -> None:
        counter = None
        if self.registry.rooms.get(room.name) is room:
            counter = room.counter + 1
            self._send(self.registry.apply(room, counter, entry, self._clock()))
        self._settled(room.name, said, counter)

    def _settled(
        self, room: str, said: asyncio.Future[int | None] | None, counter: int | None
    ) -> None:
        if said is None:
            return
        if not said.done():
            said.set_result(counter)
        if self._said.get(room) is said:
            del self._said[room]

    async def settle(self, room: Room) -> int | None:
        said = self._said.get(room.name)
        if said is None:
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                counter = await asyncio.shield(said)
                while counter is not None and room.counter < counter:
                    if self.registry.rooms.get(room.name) is not room:
                        return None  # closed meanwhile
                    await asyncio.sleep(0.001)  # the bus brings it back: a round trip
                return None if counter is None else wire_seq(counter)
        return None

    def _enqueue(
        self,
        room: str,
        rid: str,
        op: Op,
        entry: bytes,
        member: str = "",
        *,
        line: bool = False,
    ) -> bool:
        """Queue a publish. Only a chat ``line`` is refused when the queue is full (its
        sender sends it again): who joined, who left and what closed must reach the
        store, or the rosters and names there go wrong."""
        if line and len(self._queue) >= self.max_queued:
            self.dropped += 1
            return False
        self._published += 1
        said = None if line else self._expect(room)
        key = member.casefold()
        self._queue.append(_Publish(said, self._published, room, rid, op, entry, key))
        if op not in (Op.DROP, Op.UNRESERVE):  # says nothing: later lines need not wait
            self._queued[room] = self._queued.get(room, 0) + 1
        self._wake.set()
        return True

    # -- the Backend (the TCP handler) ------------------------------------------------

    def state(self) -> ClusterState:
        return ClusterState(self.up, self.rtt, len(self._queue))

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="ocm-cluster")
        # The first try to connect, so a node started with Redis up serves at once;
        # without Redis it starts anyway and says so (UNREACHABLE).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self._tried.wait()

    async def close(self) -> None:
        """Send what is queued (a moment at most), leave the cluster, disconnect."""
        self._closing = True
        if self.up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    while self._queue and self.up:
                        await asyncio.sleep(0.01)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await self._client.delete(layout.node_key(self.node))
                    if not self._queue:
                        # Else the reaper takes the rest of its members, once the
                        # presence key is gone: this node stays in ocm:nodes for it.
                        await self._client.srem(layout.NODES, self.node)
                        await self._client.delete(layout.published_key(self.node))
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._pending_failures):
            task.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    async def list_rooms(self) -> list[RoomInfo]:
        flat = await self._request(self._list(keys=[layout.ROOMS]))
        rooms = [
            RoomInfo(_text(flat[i]), int(flat[i + 1]), bool(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]
        return sorted(rooms, key=lambda room: room.name)

    async def lookup(self, name: str) -> RoomDetails:
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(layout.room_key(name))
        pipe.hlen(layout.members_key(name))
        meta, count = await self._request(pipe.execute())
        if not meta:
            raise no_such_room(name)
        return RoomDetails(
            name, int(count), bool(meta.get(b"password")), layout.parse_e2e(meta.get(b"e2e"))
        )

    async def load_room(self, name: str) -> None:
        registry = self.registry
        room = registry.rooms.get(name)
        if room is not None and not room.closing:
            return
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(layout.room_key(name))
        pipe.get(layout.seq_key(name))
        pipe.xrevrange(layout.history_key(name), count=registry.history_messages)
        meta, counter, newest = await self._request(pipe.execute())
        if not meta:
            raise no_such_room(name)
        if registry.rooms.get(name) is not None:
            return  # another join loaded it meanwhile
        try:
            rid = _text(meta[b"rid"])
            password, e2e = (
                layout.parse_password(meta.get(b"password", b"")),
                layout.parse_e2e(meta.get(b"e2e")),
            )
        except (KeyError, ValueError) as error:  # json's errors are ValueErrors
            log.error('room "%s" is damaged in the store (%r): it cannot be joined', name, error)
            raise no_such_room(name) from None
        history: list[tuple[int, Entry]] = []
        for entry_id, fields in reversed(newest):
            if fields.get(b"r") == meta[b"rid"]:
                with contextlib.suppress(MalformedEntry, KeyError, ValueError):
                    history.append((layout.counter_of(entry_id), decode_entry(fields[b"e"])))
        registry.add_replica(
            name,
            rid,
            password,
            e2e=e2e,
            sealed=bool(meta.get(b"sealed")),
            host_key=_text(meta.get(b"host", b"")),
            host_name=_text(meta.get(b"host_name", b"")),
            host_ip=_text(meta.get(b"host_ip", b"")),
            counter=int(counter or 0),
            history=[(number, entry) for number, entry in history if number <= int(counter or 0)],
        )

    async def check_blocked(self, ip: str) -> None:
        failures = await self._request(self._client.get(layout.fails_key(ip)))
        if failures is not None and int(failures) >= self.registry.failures.max_failures:
            raise rate_limited()

    async def claim_room(
        self, pending: PendingCreate, password: PasswordHash | None, sealed: bool
    ) -> None:
        registry = self.registry
        name, host = pending.room, pending.username
        result = await self._request(
            self._create(
                keys=[
                    layout.room_key(name),
                    layout.members_key(name),
                    layout.seq_key(name),
                    layout.history_key(name),
                    layout.ROOMS,
                    layout.hosted_key(pending.ip),
                ],
                args=[
                    name,
                    pending.rid,
                    layout.password_text(password),
                    layout.e2e_text(pending.e2e),
                    "1" if sealed else "",
                    host.casefold(),
                    layout.member_value(self.node, 0, host),
                    canonical_ip(pending.ip),
                    registry.max_rooms,
                    registry.max_rooms_per_ip,
                ],
            )
        )
        match _text(result):
            case "ok":
                return
            case "room_exists":
                raise room_exists(name)
            case "hosts_enough":
                raise hosts_enough(registry.max_rooms_per_ip)
        raise no_room_for_rooms()

    async def release_room(self, pending: PendingCreate) -> None:
        self._enqueue(pending.room, pending.rid, Op.DROP, b"")

    async def reserve_member(self, pending: PendingJoin) -> None:
        room = self.registry.rooms.get(pending.room)
        if room is None or room.bus is not self:
            raise no_such_room(pending.room)
        name = pending.username
        result = await self._request(
            self._join(
                keys=[layout.room_key(room.name), layout.members_key(room.name)],
                args=[room.rid, name.casefold(), self.node, self.registry.max_members, name],
            )
        )
        match _text(result[0]):
            case "ok":
                values = sorted((_text(value) for value in result[1:]), key=layout.member_place)
                room.roster = tuple(layout.member_name(value) for value in values)
                return
            case "name_taken":
                raise name_taken(name, room.name)
            case "room_full":
                raise room_full(room.name)
        raise no_such_room(room.name)

    async def release_member(self, pending: PendingJoin) -> None:
        # The room reserved in (not whatever has its name in the registry now).
        name = pending.username
        self._enqueue(pending.room, pending.rid, Op.UNRESERVE, b"", name)

    def count_failure(self, ip: str) -> None:
        """A wrong password from ``ip``: count it in the store too (in the background)."""
        if not self.up:
            return

        async def count() -> None:
            key = layout.fails_key(ip)
            window_ms = int(self.registry.failures.window * 1000)
            pipe = self._client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.pexpire(key, window_ms, nx=True)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await pipe.execute()

        task = asyncio.create_task(count())
        self._pending_failures.add(task)
        task.add_done_callback(self._pending_failures.discard)

    async def _request(self, call: Any) -> Any:
        """A request's call to Redis, refused as :data:`UNREACHABLE` if Redis is not
        there (never a traceback, never a wait past :data:`REQUEST_TIMEOUT`)."""
        if not self.up:
            with contextlib.suppress(Exception):
                call.close()  # the coroutine that will not run
            raise RoomError(ErrorCode.SERVER_FULL, UNREACHABLE)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await call
        except (RedisError, OSError, TimeoutError) as error:
            log.debug("a request's call to redis failed: %s", error)
            raise RoomError(ErrorCode.SERVER_FULL, UNREACHABLE) from None

    # -- the connection ---------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve the cluster, and when the connection fails, reconnect with
        exponential backoff; log once per outage. Nothing here ends the server."""
        first, limit = self._backoff
        delay = first
        while not self._closing:
            try:
                await self._connect()
                delay = first
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._listen())
                    tasks.create_task(self._send_queue())
                    tasks.create_task(self._keep_present())
                    tasks.create_task(self._run_reaper())
            except Exception as error:  # an ExceptionGroup from the TaskGroup too
                cause = _innermost(error)
                reason = (str(cause) or type(cause).__name__).rstrip(".")
                if self.up or self._down_since is None:
                    self._down_since = self._clock()
                    # Out of reach, or there but refusing writes (out of memory, a
                    # replica after a failover): the same for the node, not for whoever
                    # reads the log.
                    what = "refuses writes" if _transient_cause(cause) else "unreachable"
                    log.error(
                        "redis %s at %s: %s; creates and joins are refused, "
                        "members stay, lines wait; reconnecting",
                        what,
                        layout.safe_url(self.url),
                        reason,
                    )
                if not isinstance(cause, (RedisError, OSError, TimeoutError)):
                    log.error("unexpected error in the cluster connection", exc_info=cause)
                self.up = False
                self._tried.set()
                await asyncio.sleep(delay)
                delay = min(limit, delay * 2)

    async def _connect(self) -> None:
        client = self._client
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await self._ping()
            epoch: Any = await client.get(layout.EPOCH)
            if epoch is None:
                await client.set(layout.EPOCH, secrets.token_hex(8), nx=True)
                epoch = await client.get(layout.EPOCH)
            if self._epoch is not None and epoch != self._epoch:
                self._lost = True  # until every room is written back, whatever fails
            self._epoch = epoch
            await self._announce_presence()
            await client.script_load(scripts.PUBLISH)  # _send_queue's EVALSHA needs it
        lost = self._lost
        # Numbered in the store from here on (queued until the connection is up), not
        # here: a line numbered here meanwhile would take a counter the store gives again.
        self._writing_back = True
        try:
            await self._write_back(lost)
        finally:
            self._writing_back = False
        self._lost = False
        if self._down_since is not None:
            log.warning(
                "redis is back at %s after %.1f s%s",
                layout.safe_url(self.url),
                self._clock() - self._down_since,
                "; it had lost its data: this node's rooms are written back" if lost else "",
            )
            self._down_since = None
        else:
            log.info("cluster node %s on redis at %s", self.node, layout.safe_url(self.url))
        self.up = True
        self._tried.set()

    async def _write_back(self, lost: bool) -> None:
        """After a reconnect, write back what the store may not know: this node's
        members (the reaper takes those of a node cut off too long), and the rooms and
        counters if it ``lost`` its data, or if they were numbered here meanwhile. A
        member the store had let go is announced as joined again.

        Pipelined, :data:`BATCH` rooms a round trip, each batch in its own time limit;
        a room is written back whole or not at all (one script), and what failed is
        written back on the next reconnect (a detached room stays so until then)."""
        rooms = [room for room in self.registry.rooms.values() if room.bus is self]
        # Members whose LEAVE waits in the queue: written back too when the store lost
        # them, so that their LEAVE finds them and is said.
        leaving: dict[str, set[str]] = {}
        for waiting in self._queue if lost else ():
            if waiting.op is Op.LEAVE:
                leaving.setdefault(waiting.room, set()).add(waiting.member_key)
        live = {room.rid for room in rooms}
        self._detached_from = {r: n for r, n in self._detached_from.items() if r in live}
        # A line numbered here just before the write-back (its turn of the loop came
        # during a round trip) moves a counter after it was read: such a room is
        # written back again, until none moved (no new one is numbered here meanwhile).
        for _ in range(3):
            written: dict[str, int] = {}
            for start in range(0, len(rooms), BATCH):
                batch = rooms[start : start + BATCH]
                pipe = self._client.pipeline(transaction=False)
                for room in batch:
                    written[room.rid] = room.counter
                    await self._restore_room(room, lost, leaving.get(room.name, set()), pipe)
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    results = await pipe.execute()
                for room, result in zip(batch, results, strict=True):
                    self._restored(room, result, lost)
            rooms = [room for room in rooms if room.counter > written[room.rid]]
            if not rooms:
                break

    async def _restore_room(self, room: Room, lost: bool, leaving: set[str], pipe: Any) -> None:
        # A member the store still has keeps its place there; one it lost (or the
        # reaper took) is written back: in its roster place if the store lost
        # everything (every node's roster is the same list, in the order the room's
        # NOTICEs said who joined), else last, as a new joiner.
        places = {name.casefold(): place for place, name in enumerate(room.roster)}
        names = [member.name for member in room.members.values()]
        names += [name for name in room.roster if name.casefold() in leaving]
        pairs: list[str] = []
        unplaced = len(places)
        for name in names:
            place = places.get(name.casefold())
            if place is None:
                place, unplaced = unplaced, unplaced + 1
            pairs += [name.casefold(), layout.member_value(self.node, place, name)]
        await self._restore(
            keys=[
                layout.room_key(room.name),
                layout.members_key(room.name),
                layout.seq_key(room.name),
                layout.ROOMS,
                layout.history_key(room.name),
            ],
            args=[
                room.name,
                room.rid,
                layout.password_text(room.password),
                layout.e2e_text(room.e2e),
                "1" if room.sealed else "",
                room.host_key,
                room.host_ip,
                room.counter,
                room.host_name,
                "1" if lost or room.detached else "",
                len(room.roster),
                "" if lost else "1",
                *pairs,
            ],
            client=pipe,
        )

    def _restored(self, room: Room, result: Any, lost: bool) -> None:
        outcome = _text(result[0])
        detached_from = self._detached_from.pop(room.rid, None)
        if outcome == "conflict":
            log.warning('room "%s" is another room in the store now', room.name)
        if outcome != "ok":
            return  # gone: the catch-up closes it here
        room.detached = False
        if not lost and detached_from is not None and int(result[1]) > detached_from:
            # The partition case (module docstring): say so, where an operator looks.
            log.warning(
                'room "%s" went on apart on this node and in the cluster while this node'
                " was cut off (entries after %d): each side missed what the other said",
                room.name,
                detached_from,
            )
        if lost:
            return  # nobody saw its members leave
        for value in result[2:]:
            name = layout.member_name(_text(value))
            text = format_notice(MemberEvent(name, Presence.JOINED)).encode("utf-8")
            self._enqueue(room.name, room.rid, Op.SAY, encode_entry(Entry(Kind.NOTICE, text)))

    async def _announce_presence(self) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.set(layout.node_key(self.node), b"1", px=self.presence_ttl_ms)
        pipe.sadd(layout.NODES, self.node)
        await pipe.execute()

    async def _keep_present(self) -> None:
        while True:
            await asyncio.sleep(self.presence_interval)
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self._ping()
                await self._announce_presence()

    async def _ping(self) -> None:
        """PING, and keep its round trip (``ocm_redis_rtt_seconds``)."""
        started = self._clock()
        await self._client.ping()
        self.rtt = self._clock() - started

    async def _run_reaper(self) -> None:
        while True:
            await asyncio.sleep(self.presence_interval)
            async with asyncio.timeout(REQUEST_TIMEOUT):
                flat = await self._reap(
                    keys=[layout.NODES, layout.ROOMS], args=[layout.NODE_PREFIX]
                )
            for i in range(0, len(flat), 4):
                room, rid, name, host = (_text(value) for value in flat[i : i + 4])
                self.reaped += 1
                log.info('%s in room "%s" timed out: its node left the cluster', name, room)
                if host:
                    text = format_closed(HostGone(name, Presence.TIMED_OUT))
                    entry = Entry(Kind.CLOSED, text.encode("utf-8"))
                else:
                    text = format_notice(MemberEvent(name, Presence.TIMED_OUT))
                    entry = Entry(Kind.NOTICE, text.encode("utf-8"))
                op = Op.CLOSE if host else Op.SAY
                self._enqueue(room, rid, op, encode_entry(entry))

    async def _send_queue(self) -> None:
        """Send queued entries in order, a pipeline of up to :data:`BATCH` at a time.
        An entry leaves the queue only once Redis answered for it."""
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [queue[i] for i in range(min(BATCH, len(queue)))]
            # EVALSHA straight into the pipeline: the script is loaded on connect (a
            # Script given the pipeline asks SCRIPT EXISTS on every execute: a round
            # trip more per batch, and 15% of a busy node's time).
            pipe = self._client.pipeline(transaction=False)
            sha, published = self._publish.sha, layout.published_key(self.node)
            for item in batch:
                room = item.room
                pipe.evalsha(
                    sha,
                    6,
                    layout.room_key(room),
                    layout.members_key(room),
                    layout.seq_key(room),
                    layout.history_key(room),
                    layout.ROOMS,
                    published,
                    item.op,
                    room,
                    item.rid,
                    item.entry,
                    item.member_key,
                    self.node,  # a member's value starts with its node: the owner
                    self.registry.history_messages,
                    layout.BUS,
                    item.number,
                )
            async with asyncio.timeout(REQUEST_TIMEOUT):
                results = await pipe.execute(raise_on_error=False)
            for result in results:
                if isinstance(result, RedisError) and _transient(result):
                    # Redis restarted (NOSCRIPT), is full, read-only, busy or loading:
                    # keep the batch and retry after a backoff (a publish that did run
                    # is skipped by its number); the supervisor says so in the log.
                    raise result
            for item, result in zip(batch, results, strict=True):
                queue.popleft()
                counter = result if isinstance(result, int) and result > 0 else None
                self._settled(item.room, item.said, counter)
                if item.op not in (Op.DROP, Op.UNRESERVE):
                    left = self._queued.pop(item.room) - 1
                    if left:
                        self._queued[item.room] = left
                if isinstance(result, Exception):  # a bug: the entry is lost, not the queue
                    held = self._refusal_lines.allow(self._clock())
                    if held is not None:
                        why = f"{result}{held_back(held)}"
                        log.error('redis refused an entry of room "%s": %s', item.room, why)

    async def _listen(self) -> None:
        """Read the bus: every room's entries, in order; apply those of rooms here."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await pubsub.subscribe(layout.BUS)
            # Subscribed: from here on nothing is missed. What was said before (while
            # this node was cut off) is read from each room's stream.
            for room in list(self.registry.rooms.values()):
                if room.bus is self:
                    await self._catch_up(room)
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message.get("type") == "message":
                    await self._on_bus(message["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _on_bus(self, data: bytes) -> None:
        try:
            message = decode_bus_message(data)
        except MalformedEntry as error:
            held = self._bus_lines.allow(self._clock())
            if held is not None:
                log.warning(
                    "skipped a malformed message on %s: %s%s", layout.BUS, error, held_back(held)
                )
            return
        try:
            await self._deliver(message)
        except (RedisError, OSError, TimeoutError):
            raise  # the connection: the supervisor reconnects
        except Exception:
            # A bug must cost one entry, not the bus (nor the node).
            log.exception('could not deliver an entry of room "%s"', message.room)

    async def _deliver(self, message: BusMessage) -> None:
        room = self.registry.rooms.get(message.room)
        if room is None or room.rid != message.rid or room.bus is not self:
            return
        if message.counter <= room.counter:
            return  # read from the stream already
        if message.counter > room.counter + 1:
            await self._fill(room, message.counter - 1)
            if self.registry.rooms.get(room.name) is not room:
                return  # closed by what was missed
            if message.counter > room.counter + 1:
                self.registry.skip_to(room, message.counter)
        self._send(self.registry.apply(room, message.counter, message.entry, self._clock()))

    async def _catch_up(self, room: Room) -> None:
        """After a reconnect: read what ``room`` missed; a room closed meanwhile (its
        stream gone too) is closed here."""
        pipe = self._client.pipeline(transaction=True)
        pipe.hget(layout.room_key(room.name), "rid")
        pipe.get(layout.seq_key(room.name))
        rid, counter = await pipe.execute()
        latest = int(counter) if counter is not None else room.counter
        if latest > room.counter:
            await self._fill(room, latest)
        if rid is None or _text(rid) != room.rid:
            await self._fill(room)  # its CLOSED, if the stream is still kept
            if self.registry.rooms.get(room.name) is room:
                self._send(self.registry.close_here(room, self._clock()))

    async def _fill(self, room: Room, last: int | None = None) -> None:
        """Apply ``room``'s entries after its counter up to ``last`` (None: all there
        are), from its stream."""
        newest = "+" if last is None else f"{last}-1"
        entries: Any = await self._client.xrange(
            layout.history_key(room.name), min=f"{room.counter + 1}-0", max=newest
        )
        for entry_id, fields in entries:
            if (
                fields.get(b"r") != room.rid.encode()
                or self.registry.rooms.get(room.name) is not room
            ):
                continue
            counter = layout.counter_of(entry_id)
            if counter <= room.counter:
                continue
            if counter > room.counter + 1:
                self.registry.skip_to(room, counter)
            try:
                entry = decode_entry(fields[b"e"])
            except (MalformedEntry, KeyError):
                continue  # not a node's: skipped, as a bad bus message is
            self._send(self.registry.apply(room, counter, entry, self._clock()))


# Errors a Redis gives for a while, not for good: the queue waits them out. redis-py
# makes most of them a class of their own (and drops the prefix); BUSY (a long script
# running) stays a ResponseError with its prefix.
_TRANSIENT = (
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    BusyLoadingError,
    MasterDownError,
    TryAgainError,
)


def _transient_cause(error: BaseException) -> bool:
    return isinstance(error, RedisError) and _transient(error)


def _transient(error: RedisError) -> bool:
    return isinstance(error, _TRANSIENT) or str(error).startswith("BUSY")


def _all_here(room: Room, leaving: str = "") -> bool:
    """Whether every member of ``room`` is on this node (``leaving``, on its way out,
    counted as here: its NOTICE has yet to take it off the roster)."""
    leaver = leaving.casefold()
    return all(n.casefold() in room.members or n.casefold() == leaver for n in room.roster)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _innermost(error: BaseException) -> BaseException:
    """The first error inside an exception group (a TaskGroup's), or ``error``."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
