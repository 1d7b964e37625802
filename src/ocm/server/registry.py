"""The room registry: rooms, members, tokens, passwords, idle expiry and host rules.

A plain class with no sockets and no clock of its own: every call that depends on time
takes ``now`` (seconds on any monotonic clock), and :meth:`RoomRegistry.next_deadline`
says when the adapter should next call :meth:`RoomRegistry.expire`. Refusals raise
:class:`ocm.errors.RoomError` with the wire error code.

What happens to a room is returned as :class:`Outgoing` datagrams (NOTICE and CLOSED,
already numbered with the room's Seq), which the UDP adapter only has to send. Room
events are logged here (INFO), one line each with the client's IP; a wrong password or
resume secret, and an IP blocked for them, at WARNING, held back past a few a second.
Never a password, a token or a resume secret.

For members that negotiated the delivery extension (docs/protocol.md, section 3) the
registry also keeps each room's :class:`~ocm.server.history.History`, what each such
member had relayed, and for a while after they are gone, what to answer their tokens
(the room's CLOSED, or DEPARTED); it re-sends their CLOSED on a schedule that
:meth:`RoomRegistry.next_deadline` includes.

An end-to-end room (section 5) keeps its creator's KDF parameters (:attr:`Room.e2e`),
told to anyone who asks (:meth:`RoomRegistry.lookup`); its password is its members'
auth key, checked as any password, and a join that does not say it speaks ``e2e`` is
refused before the password is checked.

On a node of a cluster (``ocm server --redis``, :mod:`ocm.server.cluster`) a room is a
replica: the registry keeps the room's members that are on this node, and what is said
in the room is handed to :attr:`RoomRegistry.bus` instead of being numbered here. The
bus numbers it for the whole cluster and gives it back to every node, in one order,
through :meth:`RoomRegistry.apply`, which turns it into datagrams for the node's own
members. A room closes on every node when its CLOSED comes back that way.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ocm.errors import ErrorCode, RoomError
from ocm.server.cluster.entries import Entry, Op
from ocm.server.guards import FailureLimiter, LogLimiter, canonical_ip, held_back
from ocm.server.history import Budget, History, RelayedLog
from ocm.server.limits import Limits
from ocm.server.passwords import PasswordHash
from ocm.wire.constants import SEQ_CYCLE
from ocm.wire.datagrams import Kind, next_seq, server_datagram_prefix
from ocm.wire.delivery import BOOT_SIZE, DeliveryKind, Departed, chat_prefix, encode_received
from ocm.wire.sealed import (
    KEY_ID_SIZE,
    KEY_SIZE,
    SESSION_PREFIX_SIZE,
    SESSION_SIZE,
    Opener,
    Sealer,
    down_prefix,
    member_opener,
)
from ocm.wire.tcrp import E2eParams, RoomDetails, RoomInfo
from ocm.wire.texts import (
    ClosedReason,
    HostGone,
    MemberEvent,
    Presence,
    format_closed,
    format_notice,
    parse_notice,
)

__all__ = [
    "Address",
    "Bus",
    "Member",
    "Outgoing",
    "PendingCreate",
    "PendingJoin",
    "Room",
    "RoomRegistry",
    "hosts_enough",
    "name_taken",
    "new_token",
    "no_room_for_rooms",
    "no_such_room",
    "rate_limited",
    "room_exists",
    "room_full",
    "wire_seq",
]

log = logging.getLogger("ocm.rooms")

# Where a member's datagrams come from: (ip, port) for IPv4; asyncio gives IPv6 sources
# as (ip, port, flowinfo, scope_id), kept whole so that replies reach the same scope.
Address = tuple[Any, ...]

_DEFAULTS = Limits()  # the limits of a registry made alone (in a unit test)
# 24 random bytes, URL-safe base64: 192 bits, 32 ASCII characters (the spec asks >= 128).
TOKEN_BYTES = 24
# Tokens of delivery members that are gone (room closed, member left), remembered so a
# late datagram of theirs gets the room's CLOSED or a DEPARTED, not "unknown token":
# for idle_timeout seconds, and this many at most (the oldest are forgotten first).
MAX_GONE = 10_000
# Repair datagrams one member gets at once, at most: a client's receive buffer (Linux
# grants 208 KiB unless told otherwise) holds about 200; more would be dropped on
# arrival and asked for again. The rate refills it (--repair-rate).
REPAIR_BURST = 128
# Early DATA (waiting for the messages before them) held for all members together:
# each member may hold HELD_BYTES, but many members from one address must not add up.
MAX_HELD_TOTAL = 16 * 1024 * 1024
# A delivery member's CLOSED is sent again after each of 7 resend intervals: 8 copies,
# so that at 20% loss one member in 390,000 misses them all (0.2**8), which is once in
# 3,900 shutdowns of a server with 100 members (limits.py, closed_resend_interval).
CLOSED_RESENDS = (1, 2, 3, 4, 5, 6, 7)
_DEPARTED = encode_received(Departed())
# The CLOSED of a cluster room whose end this node missed (its store no longer has it).
CUT_OFF_CLOSED = "the room closed while this server was cut off from the cluster"


# Room events one client address may log at once, then a second: an office joining
# together is logged whole, a create-and-leave loop is not (its count is).
ROOM_EVENT_BURST = 20
ROOM_EVENT_RATE = 5.0
# Addresses whose room-event lines are counted at most (the stalest forgotten first).
MAX_LOGGED_ADDRESSES = 10_000


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


# The refusals a registry makes, worded once: a cluster's store (ocm.server.cluster)
# makes the same ones for the whole cluster, and a client must not tell them apart.
def no_such_room(name: str) -> RoomError:
    return RoomError(ErrorCode.NO_SUCH_ROOM, f'no room named "{name}"')


def room_exists(name: str) -> RoomError:
    return RoomError(ErrorCode.ROOM_EXISTS, f'room "{name}" already exists')


def no_room_for_rooms() -> RoomError:
    return RoomError(ErrorCode.SERVER_FULL, "the server has no room for another room")


def hosts_enough(limit: int) -> RoomError:
    return RoomError(ErrorCode.SERVER_FULL, f"your address hosts {limit} rooms already")


def name_taken(username: str, room: str) -> RoomError:
    return RoomError(ErrorCode.NAME_TAKEN, f'the name "{username}" is taken in "{room}"')


def room_full(room: str) -> RoomError:
    return RoomError(ErrorCode.ROOM_FULL, f'room "{room}" is full')


def rate_limited() -> RoomError:
    return RoomError(ErrorCode.RATE_LIMITED, "too many failed attempts; try again later")


def wire_seq(counter: int) -> int:
    """The Seq (section 2: 1 .. 2**32 - 1, then 1 again) of a cluster room's entry
    number ``counter`` (1, 2, ... without end)."""
    return (counter - 1) % SEQ_CYCLE + 1


class Bus(Protocol):
    """Where a cluster node's rooms say things (:mod:`ocm.server.cluster`): the cluster
    numbers them and gives them back to every node (:meth:`RoomRegistry.apply`)."""

    def publish(self, room: Room, op: Op, entry: Entry, member: str = "") -> bool:
        """Hand ``entry`` to the cluster; False if a line cannot be taken now (its
        queue is full: the sender sends it again). ``op``: SAY; LEAVE (``member``
        leaves, then it is said); CLOSE (it is said, then the room is gone). Only SAY
        is ever refused: the store must learn who left and what closed."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One datagram for the UDP adapter to send to each address."""

    datagram: bytes
    addresses: tuple[Address, ...]
    # Section 5: a sealed room's datagrams are sealed, once for all its members, when
    # they are sent (each send takes the next Counter: a resent CLOSED is sealed anew).
    sealer: Sealer | None = None


@dataclass(frozen=True, slots=True)
class PendingCreate:
    """A CREATE_ROOM between :meth:`RoomRegistry.begin_create` and ``finish_create``."""

    room: str
    username: str
    ip: str
    e2e: E2eParams | None = None  # section 5: an end-to-end room's KDF parameters
    # The room's incarnation: a cluster tells a room from one of the same name that
    # was closed and created again meanwhile.
    rid: str = field(default_factory=lambda: secrets.token_hex(8), compare=False)


@dataclass(frozen=True, slots=True)
class PendingJoin:
    """A JOIN_ROOM between :meth:`RoomRegistry.begin_join` and ``finish_join``.

    ``expected`` is the hash the password must match, which the adapter verifies off the
    event loop, or None for an open room: nothing to verify. Never the password itself.
    """

    room: str
    username: str
    ip: str
    expected: PasswordHash | None
    sealed: bool = False  # section 5: the joiner was granted sealed datagrams
    e2e: bool = False  # section 5: the request listed the "e2e" feature
    rid: str = ""  # the room's incarnation, in a cluster (what a reservation was for)


@dataclass(eq=False, slots=True)
class Member:
    name: str
    token: str
    ip: str  # the IP of the TCP connection that obtained (or resumed) the token (section 1)
    room: Room
    last_seen: float
    address: Address | None = None  # set by the first valid datagram (section 2)
    name_bytes: bytes = b""
    token_bytes: bytes = b""
    # The delivery extension: set for a member that negotiated it (section 3).
    relayed: RelayedLog | None = None  # its message numbers already relayed
    repairs: Budget | None = None  # the repair datagrams it may still get
    # Section 4: the SHA-256 of the secret that moves the token to another IP, once
    # issued. Only the digest is kept: memory (or a shared store) never holds a secret.
    secret_digest: bytes | None = None
    # Section 4: granted the ``tunnel`` feature (only with delivery), so TUNNEL is for it.
    tunnel: bool = False
    # Section 3: granted the ``relayed`` feature (only with delivery), so its DEPARTED and
    # its LEAVE_ROOM's COMPLETE say how far its messages were relayed.
    tells_relayed: bool = False
    # Section 5, a sealed member: its Session id and key, and the opener of its
    # datagrams (which holds their replay window). Its token then travels only sealed.
    session: bytes | None = None
    key: bytes = b""
    opener: Opener | None = None

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode("utf-8")
        self.token_bytes = self.token.encode("ascii")

    @property
    def delivery(self) -> bool:
        return self.relayed is not None

    @property
    def relayed_through(self) -> int | None:
        """For a member granted ``relayed``: its highest message number the server dealt
        with (relayed, or refused with an ERROR), 0 for none; None otherwise, and while
        one of its messages waits in a cluster's queue (not relayed yet, and it may
        never be). Those after it wait for one before them (or never came): once the
        member is gone, they never will be relayed."""
        log = self.relayed
        if not self.tells_relayed or log is None or log.pending():
            return None
        return log.next - 1


@dataclass(frozen=True, slots=True)
class Gone:
    """What to answer a delivery member's token after it is gone, from its IP."""

    ip: str
    reply: bytes  # the room's CLOSED, or DEPARTED
    until: float
    # Section 5: a sealed member's opener. Its token is answered only inside the
    # datagrams that opener opens, as while it was in: not in clear, nor inside another's.
    opener: Opener | None = None


@dataclass(eq=False, slots=True)
class Room:
    name: str
    password: PasswordHash | None
    # Kept from the moment the first delivery member enters (section 3): a room of
    # version 1 members only keeps nothing, and their lines are not kept for later
    # joiners who never asked to see the past.
    history: History | None = None
    host: Member | None = None
    # The canonical IP the room counts against (--max-rooms-per-ip): its creator's, until
    # the room closes. A host that moves (RESUME) does not take the count along, nor
    # free it: else two addresses would host rooms without bound.
    counted_ip: str = ""
    members: dict[str, Member] = field(default_factory=dict)  # casefolded name -> member
    seq: int = 0
    name_bytes: bytes = b""
    # Addresses of members that have sent a datagram: the relay's fan-out lists, kept
    # ready so a chat datagram costs no dict walk. NOTICE and CLOSED go to all of them;
    # a chat line goes as MESSAGE to version 1 members and as CHAT to delivery members.
    addresses: tuple[Address, ...] = ()
    v1_addresses: tuple[Address, ...] = ()
    delivery_addresses: tuple[Address, ...] = ()
    # Section 5, a sealed room: every member is sealed, and everything sent to the room
    # is sealed once with the room key (KeyId ``key_id``) by ``sealer``.
    key: bytes = b""
    key_id: bytes = b""
    sealer: Sealer | None = None
    # Section 5: an end-to-end room's KDF parameters, told to joiners (LOOKUP_ROOM).
    # Its password is then the members' auth key: the server never sees the real one.
    e2e: E2eParams | None = None
    # A cluster node's replica (see the module's docstring): the bus that numbers what
    # is said, the room's incarnation, the number of the last entry applied, and who
    # hosts it (its casefolded name, and IP: a replica of a room hosted elsewhere has
    # no ``host`` member here). ``closing``: its CLOSED is on its way back.
    bus: Bus | None = None
    rid: str = ""
    counter: int = 0
    host_key: str = ""
    host_name: str = ""
    host_ip: str = ""
    closing: bool = False
    # The names of the whole cluster room's members: from the store at each join here,
    # then kept by the NOTICEs that come back (COMPLETE lists them; and a room whose
    # members are all here can go on while the store is out of reach).
    roster: tuple[str, ...] = ()
    # Numbered here while the store was out of reach (all its members here): its
    # counter is ahead of the store's, which the node writes back when it returns.
    detached: bool = False
    # Joins into this replica under way (it is kept while any is).
    joining: int = 0

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode("utf-8")

    @property
    def sealed(self) -> bool:
        return self.sealer is not None

    @property
    def protected(self) -> bool:
        return self.password is not None

    def refresh_addresses(self) -> None:
        every: list[Address] = []
        delivery: list[Address] = []
        v1: list[Address] = []
        for member in self.members.values():
            if member.address is not None:
                every.append(member.address)
                (delivery if member.delivery else v1).append(member.address)
        self.addresses, self.delivery_addresses, self.v1_addresses = (
            tuple(every),
            tuple(delivery),
            tuple(v1),
        )

    def next_seq(self) -> int:
        # Section 2: MESSAGE, NOTICE and CLOSED of one room carry consecutive numbers
        # from 1; uint32, wrapping after 2**32 - 1 datagrams.
        self.seq = next_seq(self.seq)
        return self.seq

    def announce(self, kind: Kind, text: str, op: Op = Op.SAY, member: str = "") -> list[Outgoing]:
        """Say a NOTICE or CLOSED to the room: numbered now, or, in a cluster, handed
        to the bus (``op`` and ``member`` as for :meth:`Bus.publish`)."""
        if self.bus is not None:
            self.bus.publish(self, op, Entry(kind, text.encode("utf-8")), member)
            return []
        return [self.announce_here(kind, text)]

    def announce_here(self, kind: Kind, text: str) -> Outgoing:
        """Say it to this node's members only, numbered here (a cluster node that shuts
        down tells its own members so; nothing follows it for them)."""
        seq = self.next_seq()
        datagram = server_datagram_prefix(kind, seq) + text.encode("utf-8")
        if self.history is not None:
            self.history.append(seq, datagram)
        return Outgoing(datagram, self.addresses, self.sealer)

    def info(self) -> RoomInfo:
        return RoomInfo(self.name, len(self.members), self.protected)

    def details(self) -> RoomDetails:
        return RoomDetails(self.name, len(self.members), self.protected, self.e2e)


class RoomRegistry:
    """Every room and member of one server, and the rules that bind them."""

    def __init__(
        self,
        *,
        idle_timeout: float = _DEFAULTS.idle_timeout,
        max_rooms: int = _DEFAULTS.max_rooms,
        max_members: int = _DEFAULTS.max_members,
        max_rooms_per_ip: int = _DEFAULTS.max_rooms_per_ip,
        history_messages: int = _DEFAULTS.history_messages,
        history_bytes: int = _DEFAULTS.history_bytes,
        repair_rate: int = _DEFAULTS.repair_rate,
        closed_resend_interval: float = _DEFAULTS.closed_resend_interval,
        failures: FailureLimiter | None = None,
        token_factory: Callable[[], str] = new_token,
        key_factory: Callable[[int], bytes] = secrets.token_bytes,
        boot: bytes | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_rooms = max_rooms
        self.max_members = max_members
        self.max_rooms_per_ip = max_rooms_per_ip
        self.history_messages = history_messages
        self.history_bytes = history_bytes
        self.repair_rate = repair_rate
        self.closed_resend_interval = closed_resend_interval
        self.failures = failures or FailureLimiter()
        self._new_token = token_factory
        self._new_key = key_factory
        # This incarnation of the server (section 3): a delivery member's PING names the
        # one it joined, so one that joined before a restart is told so.
        self.boot = boot if boot is not None else secrets.token_bytes(BOOT_SIZE)
        self.session_prefix = self.boot[:SESSION_PREFIX_SIZE]
        # Delivery members gone, by token (what to answer them), oldest first.
        self.gone: OrderedDict[bytes, Gone] = OrderedDict()
        # CLOSED copies due again: (when, tie-breaker, datagram and addresses).
        self._resends: list[tuple[float, int, Outgoing]] = []
        self._resend_count = 0
        # Set when a call made a deadline earlier than the adapter may have armed for
        # (a room closed by a datagram schedules its CLOSED copies): re-arm, then clear.
        self.deadline_moved = False
        # Bytes of early DATA held by all members (RelayedLog.held_bytes summed).
        self.held_bytes = 0
        self.rooms: dict[str, Room] = {}
        # A cluster node's bus (ocm.server.cluster): every room made here is a replica
        # that says things through it. None: a server on its own.
        self.bus: Bus | None = None
        # The relay routes by token bytes: one dict lookup per datagram.
        self.by_token: dict[bytes, Member] = {}
        # Section 5: sealed members by Session id; and those gone, for as long as their
        # token is answered (Gone), so a resent LEAVE is still opened and confirmed.
        self.by_session: dict[bytes, Member] = {}
        self.gone_sessions: OrderedDict[bytes, Member] = OrderedDict()
        # Every member, least recently heard first: the next to fall idle is always at
        # the front, so expiry never scans the whole server. Kept in order because
        # ``now`` never goes backwards.
        self._activity: OrderedDict[Member, None] = OrderedDict()
        # Canonical IP -> rooms it created that are still open (Room.counted_ip).
        self._rooms_by_ip: dict[str, int] = {}
        # Section 4: the members whose address is a tunnel's (a negative port), by that
        # address. The relay takes any token valid from a tunnel's IP through it, not only
        # the one it was opened for, so a closing tunnel must unbind every one of them.
        self._tunnelled: dict[Address, set[Member]] = {}
        # Set by close_all: a create or join that was waiting for a password hash
        # while the server shut down must not open a room nobody will close.
        self.closed = False
        # WARNING lines a client causes at will (wrong passwords and secrets, from many
        # addresses), and the blocks they lead to: a few a second at most of each.
        self._failure_lines = LogLimiter()
        # INFO lines about rooms, by address (most recently active last).
        self._event_lines: dict[str, LogLimiter] = {}
        self._block_lines = LogLimiter()

    # -- queries ---------------------------------------------------------------

    def list_rooms(self) -> list[RoomInfo]:
        return [room.info() for room in sorted(self.rooms.values(), key=lambda r: r.name)]

    def lookup(self, name: str) -> RoomDetails:
        """LOOKUP_ROOM (section 5): what a client must know before it joins ``name``."""
        return self._room(name).details()

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to do next: the next member falls idle, or a
        CLOSED is due again. None if neither will happen."""
        oldest = next(iter(self._activity), None)
        idle = None if oldest is None else oldest.last_seen + self.idle_timeout
        resend = self._resends[0][0] if self._resends else None
        if idle is None or resend is None:
            return idle if resend is None else resend
        return min(idle, resend)

    # -- create and join -------------------------------------------------------
    #
    # Both happen in two steps around the password hash, which is slow on purpose and
    # so computed off the event loop by the adapter: begin_* refuses at once what can be
    # refused without the hash; check_pending asks again when a hash slot is free (the
    # wait may have been long); finish_* checks everything once more, since anything may
    # have changed while the hash was computed, and makes the change. Nothing here waits:
    # the adapter (ocm.server.tcp) runs the hash between the calls; create_room and
    # join_room make the same calls in the same order, with the hash computed in line.

    def begin_create(
        self,
        name: str,
        username: str,
        ip: str,
        *,
        e2e: E2eParams | None = None,
        password_given: bool = False,
    ) -> PendingCreate:
        """First half of CREATE_ROOM: refuse now a create bound to fail, before any hash.

        ``e2e``: an end-to-end room (section 5), which needs a password (its members'
        auth key)."""
        if e2e is not None and not password_given:
            raise RoomError(ErrorCode.BAD_REQUEST, "an end-to-end room needs a password")
        pending = PendingCreate(name, username, ip, e2e)
        self._check_create(pending)
        return pending

    def finish_create(
        self,
        pending: PendingCreate,
        password: PasswordHash | None,
        now: float,
        *,
        delivery: bool = False,
        sealed: bool = False,
    ) -> Member:
        """Second half of CREATE_ROOM: create the room with its creator as host.

        ``password`` is the hash of the request's password (None: an open room). Checked
        again first: the name may have been taken, or the server filled or closed, while
        it was computed. ``sealed`` (section 5, only with ``delivery``) makes a sealed
        room: it gets its room key now, and admits only sealed members.
        """
        if sealed and not delivery:
            raise ValueError("sealed is granted only with delivery")
        self._check_create(pending)
        name = pending.room
        if pending.e2e is not None and password is None:
            raise RoomError(ErrorCode.BAD_REQUEST, "an end-to-end room needs a password")
        room = Room(name, password, counted_ip=canonical_ip(pending.ip), e2e=pending.e2e)
        if sealed:
            self._seal(room)
        if self.bus is not None:
            room.bus, room.rid = self.bus, pending.rid
            room.host_key, room.host_ip = pending.username.casefold(), room.counted_ip
            room.host_name = pending.username
            room.roster = (pending.username,)
            room.history = History(self.history_messages, self.history_bytes)
        self.rooms[name] = room
        host = self._add_member(room, pending.username, pending.ip, now, delivery, sealed)
        room.host = host
        self._count_hosted(room.counted_ip, +1)
        self._room_event(
            pending.ip,
            now,
            'room "%s" created by %s (%s), %s',
            name,
            pending.username,
            pending.ip,
            "end-to-end" if pending.e2e else "protected" if password else "open",
        )
        return host

    def begin_join(
        self,
        name: str,
        username: str,
        ip: str,
        now: float,
        *,
        sealed: bool = False,
        e2e: bool = False,
    ) -> PendingJoin:
        """First half of JOIN_ROOM: what the password must match, or a refusal now.

        An open room is checked in full (name_taken, room_full): ``expected`` is None and
        nothing needs hashing. A protected room tells nothing about its members to someone
        who has not given its password: only a blocked IP (rate_limited) and a joiner of
        the wrong kind are refused before the hash, so that such tries cost no scrypt.
        Section 5: sealed rooms admit sealed members only, and plaintext rooms plaintext
        ones; an end-to-end room refuses a join without ``e2e`` (the request's "e2e"
        feature): ``e2e_required``, not counted as a failure.
        """
        self._check_open()
        room = self._room(name)
        pending = PendingJoin(name, username, ip, room.password, sealed, e2e, room.rid)
        self._check_join(pending, now)
        return pending

    def finish_join(
        self,
        pending: PendingJoin,
        password_ok: bool,
        now: float,
        *,
        delivery: bool = False,
        password_given: bool = True,
    ) -> tuple[Member, list[Outgoing]]:
        """Second half of JOIN_ROOM: add the member, and the NOTICE that says so.

        ``password_ok`` says whether the password matched ``pending.expected`` (ignored for
        an open room). Everything is checked again: while the hash was computed the room
        may have closed or been created anew with another password, the name been taken,
        the IP been blocked by its other tries, or the server begun to close. A wrong
        password counts once against its IP, and only if it was checked against the
        room's current hash. No password at all (``password_given`` False) is refused
        the same way but not counted: it is someone who forgot to give one, not a guess.
        """
        if pending.sealed and not delivery:
            raise ValueError("sealed is granted only with delivery")
        room = self._check_join(pending, now)
        if room.password is not None:
            if not password_given:
                self._room_event(
                    pending.ip,
                    now,
                    '%s (%s) tried room "%s" without its password',
                    pending.username,
                    pending.ip,
                    room.name,
                )
                raise RoomError(ErrorCode.WRONG_PASSWORD, f'room "{room.name}" needs a password')
            if not password_ok:
                what = f'wrong password for room "{room.name}" (name {pending.username})'
                self._failed(pending.ip, now, what)
                raise RoomError(ErrorCode.WRONG_PASSWORD, f'wrong password for room "{room.name}"')
            self._check_vacancy(room, pending.username)  # only now: the password is right
        username = pending.username
        notice = room.announce(Kind.NOTICE, format_notice(MemberEvent(username, Presence.JOINED)))
        member = self._add_member(room, username, pending.ip, now, delivery, pending.sealed)
        self._room_event(
            pending.ip, now, '%s (%s) joined room "%s"', username, pending.ip, room.name
        )
        return member, notice

    def check_pending(self, pending: PendingCreate | PendingJoin, now: float) -> None:
        """Raise what finishing ``pending`` would refuse whatever its password.

        The adapter calls it when a hash slot frees up, right before the hash: a request
        that the wait has doomed costs no hash (a guesser's queued tries once its IP is
        blocked, a create whose name was taken meanwhile).
        """
        if isinstance(pending, PendingCreate):
            self._check_create(pending)
        else:
            self._check_join(pending, now)

    def create_room(
        self,
        name: str,
        username: str,
        password: PasswordHash | None,
        ip: str,
        now: float,
        *,
        delivery: bool = False,
        sealed: bool = False,
    ) -> Member:
        """:meth:`begin_create` and :meth:`finish_create` in one call (password hashed)."""
        pending = self.begin_create(name, username, ip)
        return self.finish_create(pending, password, now, delivery=delivery, sealed=sealed)

    def join_room(
        self,
        name: str,
        username: str,
        password: str | None,
        ip: str,
        now: float,
        *,
        delivery: bool = False,
        sealed: bool = False,
        e2e: bool = False,
    ) -> tuple[Member, list[Outgoing]]:
        """:meth:`begin_join`, the password check and :meth:`finish_join`, in one call.

        The registry's half of the server's sequence (:class:`ocm.server.tcp.TcrpHandler`,
        which adds the cluster's backend calls around it), with the hash verified in line:
        tests that join through it exercise the server's path. As there, no password
        given means no hash.
        """
        pending = self.begin_join(name, username, ip, now, sealed=sealed, e2e=e2e)
        password_ok = False
        if pending.expected is not None and password:
            self.check_pending(pending, now)
            password_ok = pending.expected.verify(password)
        return self.finish_join(
            pending, password_ok, now, delivery=delivery, password_given=bool(password)
        )

    # -- leave, expire, close --------------------------------------------------

    def leave(self, name: str, token: str, ip: str, now: float) -> list[Outgoing]:
        """LEAVE_ROOM: the token's member leaves; the host's leave closes the room.

        A wrong token is not counted as a failure: 192-bit tokens need no guess limit,
        and a member whose room closed a moment ago must not be rate-limited for
        saying goodbye late.
        """
        return self.leave_member(self.leaving(name, token, ip), now)

    def leaving(self, name: str, token: str, ip: str) -> Member:
        """The member of room ``name`` that LEAVE_ROOM from ``ip`` with ``token`` names,
        or ``invalid_token``."""
        member = self.by_token.get(token.encode("ascii", "replace"))
        if member is None or member.room.name != name or not self._same_ip(member, ip):
            raise RoomError(ErrorCode.INVALID_TOKEN, f'no such member token in room "{name}"')
        return member

    def issue_secret(self, member: Member) -> str:
        """A new resume secret for ``member`` (section 4), replacing any earlier one."""
        secret = new_token()
        member.secret_digest = hashlib.sha256(secret.encode("ascii")).digest()
        return secret

    def resume(self, name: str, token: str, secret: str, ip: str, now: float) -> tuple[Member, str]:
        """RESUME: bind the token's member to ``ip``, if ``secret`` is the member's.

        The member keeps its place: no leave, no join, its Seqs go on. Its address is
        forgotten until a datagram comes from the new IP (or its tunnel); what it misses
        meanwhile it repairs. Returns the member and its next secret: each secret moves
        the token once. A wrong secret for a token of that room counts against ``ip`` as
        a wrong password does, so a token sniffed off the network cannot be moved by
        guessing the secret. An unknown token (or one of another room) is refused but not
        counted, as LEAVE_ROOM's is: 192-bit tokens need no guess limit, and members
        whose room closed (or who timed out) must not lock their IP out of protected
        rooms by trying to resume.
        """
        if self.failures.blocked(ip, now):
            raise rate_limited()
        refused = RoomError(
            ErrorCode.INVALID_TOKEN, f'no member of room "{name}" with that token and secret'
        )
        member = self.by_token.get(token.encode("ascii", "replace"))
        if member is None or member.room.name != name:
            raise refused
        digest = hashlib.sha256(secret.encode("ascii", "replace")).digest()
        if member.secret_digest is None or not hmac.compare_digest(member.secret_digest, digest):
            what = f'wrong resume secret for the token of {member.name} in room "{name}"'
            self._failed(ip, now, what)
            raise refused
        if not self._same_ip(member, ip):
            # A host's room still counts against the IP that created it (Room.counted_ip).
            self._room_event(
                ip, now, '%s (%s) in room "%s" moved to %s', member.name, member.ip, name, ip
            )
        member.ip = ip
        if member.address is not None:
            member.address = None
            member.room.refresh_addresses()
        member.last_seen = now
        self._activity.move_to_end(member)
        return member, self.issue_secret(member)

    def grant_relayed(self, member: Member) -> None:
        """Section 3: ``member`` was granted ``relayed`` (only with delivery)."""
        if not member.delivery:
            raise ValueError("relayed is granted only with delivery")
        member.tells_relayed = True

    def grant_tunnel(self, member: Member) -> None:
        """Section 4: ``member`` was granted ``tunnel`` (only with delivery), and may
        open tunnels from now on."""
        if not member.delivery:
            raise ValueError("tunnel is granted only with delivery")
        member.tunnel = True

    def tunnel_member(self, name: str, token: str, ip: str) -> Member:
        """TUNNEL: the member granted ``tunnel`` whose datagrams the connection will
        carry. The token must be bound to the connection's IP, as a datagram's must."""
        member = self.authenticate_token(token.encode("ascii", "replace"), ip)
        if member is None or member.room.name != name or not member.tunnel:
            raise RoomError(ErrorCode.INVALID_TOKEN, f'no such member token in room "{name}"')
        return member

    def unbind(self, address: Address) -> None:
        """``address`` (a tunnel's, closed) no longer reaches anyone: nothing is sent
        there until each member it was the address of sets a new one."""
        for member in self._tunnelled.pop(address, ()):
            if member.address == address:
                member.address = None
                member.room.refresh_addresses()

    def leave_member(self, member: Member, now: float) -> list[Outgoing]:
        """``member`` leaves (LEAVE_ROOM, or a delivery member's LEAVE): the others get
        NOTICE, or CLOSED if it was the host. A delivery member's token is answered
        DEPARTED from then on (for ``idle_timeout``), so a repeated LEAVE is confirmed; with
        ``relayed``, the DEPARTED says how far its messages were relayed."""
        outgoing = self._remove(member, Presence.LEFT, now)
        if member.delivery:
            relayed = member.relayed_through
            departed = _DEPARTED if relayed is None else encode_received(Departed(relayed))
            self._remember_gone(member, departed, now)
        return outgoing

    def expire(self, now: float) -> list[Outgoing]:
        """Drop every member silent for ``idle_timeout``; a silent host closes its room."""
        limit = now - self.idle_timeout
        outgoing: list[Outgoing] = []
        while self._activity:
            oldest = next(iter(self._activity))
            if oldest.last_seen > limit:
                break
            outgoing += self._remove(oldest, Presence.TIMED_OUT, now)  # off _activity
        resends = self._resends
        while resends and resends[0][0] <= now:
            outgoing.append(heapq.heappop(resends)[2])
        gone = self.gone
        while gone and next(iter(gone.values())).until <= now:
            gone.popitem(last=False)
        sessions = self.gone_sessions
        while sessions and next(iter(sessions.values())).token_bytes not in gone:
            sessions.popitem(last=False)
        return outgoing

    def close_all(self, reason: ClosedReason, now: float) -> list[Outgoing]:
        """Close every room (server shutdown): each member gets CLOSED with ``reason``.

        The registry then refuses every create and join. Delivery members' copies are
        due again (:meth:`next_deadline`) for a while after.
        """
        self.closed = True
        return [out for room in list(self.rooms.values()) for out in self._close(room, reason, now)]

    def gone_reply(
        self, token: bytes, ip: str, now: float, opener: Opener | None = None
    ) -> bytes | None:
        """What to answer a gone delivery member's token from ``ip``, or None. ``opener``
        opened the datagram that names it (section 5), None: it came in clear."""
        gone = self.gone.get(token)
        if (
            gone is None
            or gone.until <= now
            or gone.opener is not opener
            or canonical_ip(gone.ip) != canonical_ip(ip)
        ):
            return None
        return gone.reply

    # -- the cluster's view (ocm.server.cluster) ------------------------------------

    def add_replica(
        self,
        name: str,
        rid: str,
        password: PasswordHash | None,
        *,
        e2e: E2eParams | None,
        sealed: bool,
        host_key: str,
        host_name: str,
        host_ip: str,
        counter: int,
        history: list[tuple[int, Entry]],
    ) -> Room:
        """A cluster node's replica of a room created elsewhere, for a member about to
        join it here: the room's facts, the number of its last entry, and its last
        entries (oldest first) for REPAIR. A sealed room gets this node's own room key
        (each node seals with its own: one Counter space per key)."""
        assert self.bus is not None
        room = Room(name, password, e2e=e2e, bus=self.bus, rid=rid, counter=counter)
        room.host_key, room.host_name, room.host_ip = host_key, host_name, host_ip
        room.seq = wire_seq(counter) if counter else 0
        room.history = History(self.history_messages, self.history_bytes)
        previous = None
        for number, entry in history:
            if previous is not None and number != previous + 1:
                room.history = History(self.history_messages, self.history_bytes)
            self._datagrams(room, wire_seq(number), entry)
            previous = number
        if sealed:
            self._seal(room)
        self.rooms[name] = room
        return room

    def forget_if_empty(self, room: Room) -> None:
        """Drop a cluster replica nobody here is in (the last member left, or a join
        failed), unless its CLOSED is on its way or a join into it is under way."""
        if room.bus is not None and not room.members and not room.closing and not room.joining:
            self._forget_replica(room)

    def apply(self, room: Room, counter: int, entry: Entry, now: float) -> list[Outgoing]:
        """The cluster numbered ``entry`` of ``room`` ``counter``: the datagrams that
        say it to this node's members (the next entry; the bus sees to the order).

        A chat line of a member of this node settles its message number, so that a
        retransmission is confirmed; a CLOSED closes the room here."""
        room.counter = counter
        seq = wire_seq(counter)
        room.seq = seq
        if entry.kind == Kind.CLOSED:
            closed = server_datagram_prefix(Kind.CLOSED, seq) + entry.text
            text = entry.text.decode("utf-8", "replace")
            return self._teardown(room, Outgoing(closed, room.addresses, room.sealer), text, now)
        outgoing = self._datagrams(room, seq, entry)
        if entry.kind == Kind.NOTICE:
            event = parse_notice(entry.text.decode("utf-8", "replace"))
            if event is not None:
                self._keep_roster(room, event)
        if entry.kind == DeliveryKind.CHAT:
            sender = room.members.get(entry.sender.decode("utf-8", "replace").casefold())
            if sender is not None and sender.relayed is not None:
                sender.relayed.settle(entry.msg_no, seq)
        return outgoing

    def close_here(self, room: Room, now: float) -> list[Outgoing]:
        """A cluster room that closed while this node was cut off from the cluster,
        its CLOSED no longer to be had: tell this node's members so, and forget it."""
        text = CUT_OFF_CLOSED
        return self._teardown(room, room.announce_here(Kind.CLOSED, text), text, now)

    @staticmethod
    def _keep_roster(room: Room, event: MemberEvent) -> None:
        others = tuple(n for n in room.roster if n.casefold() != event.name.casefold())
        room.roster = (*others, event.name) if event.what is Presence.JOINED else others

    def skip_to(self, room: Room, counter: int) -> None:
        """Entries before ``counter`` are lost to this node (the store no longer has
        them): its history starts again there; REPAIR answers LOST for older ones."""
        room.counter = counter - 1
        room.history = History(self.history_messages, self.history_bytes)

    def _datagrams(self, room: Room, seq: int, entry: Entry) -> list[Outgoing]:
        """What ``entry`` numbered ``seq`` is on the wire, kept in the room's history:
        as the relay of a server on its own makes it (a chat line of a delivery member
        is CHAT for delivery members and MESSAGE for version 1 members)."""
        sealer = room.sealer
        if entry.kind == DeliveryKind.CHAT:
            datagram = chat_prefix(seq, entry.sender, entry.msg_no) + entry.text
            outgoing = [Outgoing(datagram, room.delivery_addresses, sealer)]
            if room.v1_addresses:
                message = server_datagram_prefix(Kind.MESSAGE, seq, entry.sender) + entry.text
                outgoing.append(Outgoing(message, room.v1_addresses, sealer))
        else:
            datagram = server_datagram_prefix(Kind(entry.kind), seq, entry.sender) + entry.text
            outgoing = [Outgoing(datagram, room.addresses, sealer)]
        if room.history is not None:
            room.history.append(seq, datagram)
        return outgoing

    def _seal(self, room: Room) -> None:
        room.key, room.key_id = self._new_key(KEY_SIZE), self._new_key(KEY_ID_SIZE)
        room.sealer = Sealer(room.key, down_prefix(room.key_id))

    # -- the relay's view --------------------------------------------------------

    def authenticate(self, room_name: bytes, token: bytes, ip: str) -> Member | None:
        """The member a datagram speaks for, or None (section 2: token, room and IP)."""
        member = self.by_token.get(token)
        if member is None or member.room.name_bytes != room_name:
            return None
        if member.ip != ip and not self._same_ip(member, ip):
            return None
        return member

    def sealed_member(self, session: bytes, ip: str, now: float) -> Member | None:
        """Section 5: the member whose key opens a datagram of Session ``session`` from
        ``ip``: a sealed member, or one gone whose token is still answered (its LEAVE
        may come again). None for a Session this server does not know (from that IP)."""
        member = self.by_session.get(session)
        if member is None:
            member = self.gone_sessions.get(session)
            if (
                member is None
                or self.gone_reply(member.token_bytes, ip, now, member.opener) is None
            ):
                return None
            return member
        if member.ip != ip and not self._same_ip(member, ip):
            return None
        return member

    def authenticate_token(self, token: bytes, ip: str) -> Member | None:
        """The member an extended datagram speaks for (section 3: token and IP; the
        token names its room)."""
        member = self.by_token.get(token)
        if member is None or (member.ip != ip and not self._same_ip(member, ip)):
            return None
        return member

    def touch(self, member: Member, address: Address, now: float) -> None:
        """A valid datagram arrived: refresh the member and (re)set its UDP address."""
        member.last_seen = now
        self._activity.move_to_end(member)
        if member.address != address:
            member.address = address
            member.room.refresh_addresses()
            if address[1] < 0:  # a tunnel's (section 4): unbound when it closes
                self._tunnelled.setdefault(address, set()).add(member)

    # -- internals ---------------------------------------------------------------

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None or room.closing:
            raise no_such_room(name)
        return room

    def _check_open(self) -> None:
        if self.closed:
            raise RoomError(ErrorCode.SERVER_FULL, "the server is shutting down")

    def _check_create(self, pending: PendingCreate) -> None:
        self._check_open()
        if pending.room in self.rooms:
            raise room_exists(pending.room)
        # A cluster node counts rooms in the store (its replicas are not all its own).
        if self.bus is None and len(self.rooms) >= self.max_rooms:
            raise no_room_for_rooms()
        if self._rooms_by_ip.get(canonical_ip(pending.ip), 0) >= self.max_rooms_per_ip:
            raise hosts_enough(self.max_rooms_per_ip)

    def _check_join(self, pending: PendingJoin, now: float) -> Room:
        """Every check of a join but the password's; the room it would join."""
        self._check_open()
        room = self._room(pending.room)
        if room.sealed and not pending.sealed:
            raise RoomError(
                ErrorCode.ENCRYPTION_REQUIRED,
                f'room "{room.name}" is encrypted: its members must join with encryption',
            )
        if pending.sealed and not room.sealed:
            raise RoomError(
                ErrorCode.NOT_ENCRYPTED,
                f'room "{room.name}" is not encrypted (its host chats in plaintext);'
                " joining it needs --insecure",
            )
        if room.e2e is not None and not pending.e2e:
            # Section 5: a client that cannot read the room must not join it, and one
            # that would send the real password must be stopped before it is checked.
            raise RoomError(
                ErrorCode.E2E_REQUIRED,
                f'room "{room.name}" is end-to-end encrypted; join it with an OCM client',
            )
        if room.password is None:
            self._check_vacancy(room, pending.username)
            return room
        if self.failures.blocked(pending.ip, now):
            raise rate_limited()
        if room.password is not pending.expected:
            # Created anew with another password since begin_join: the password was not
            # checked against this one, so it is refused, but not counted as a guess.
            raise RoomError(ErrorCode.WRONG_PASSWORD, f'wrong password for room "{room.name}"')
        return room

    def _check_vacancy(self, room: Room, username: str) -> None:
        if username.casefold() in room.members:
            raise name_taken(username, room.name)
        if len(room.members) >= self.max_members:
            raise room_full(room.name)

    def _add_member(
        self, room: Room, username: str, ip: str, now: float, delivery: bool, sealed: bool = False
    ) -> Member:
        token = self._new_token()
        while token.encode("ascii") in self.by_token:  # never with a real CSPRNG
            token = self._new_token()
        member = Member(username, token, ip, room, now)
        if sealed:
            # A Session starts with this incarnation's boot id (section 5), so a server
            # that restarted tells a Session of its predecessor from one it forgot.
            session = self.session_prefix + self._new_key(SESSION_SIZE - SESSION_PREFIX_SIZE)
            while session in self.by_session or session in self.gone_sessions:
                session = self.session_prefix + self._new_key(SESSION_SIZE - SESSION_PREFIX_SIZE)
            member.session, member.key = session, self._new_key(KEY_SIZE)
            member.opener = member_opener(member.key)
            self.by_session[session] = member
        if delivery:
            member.relayed = RelayedLog()
            member.repairs = Budget(self.repair_rate, min(self.repair_rate, REPAIR_BURST), now)
            if room.history is None:
                room.history = History(self.history_messages, self.history_bytes)
        room.members[username.casefold()] = member
        self.by_token[member.token_bytes] = member
        self._activity[member] = None
        return member

    def _failed(self, ip: str, now: float, what: str) -> None:
        """Count a wrong password or resume secret against ``ip``, and log it: once per
        try (WARNING, a few a second at most), and once more when it blocks the IP."""
        failures = self.failures.record(ip, now)
        limit, window = self.failures.max_failures, self.failures.window
        held = self._failure_lines.allow(now)
        if held is not None:
            log.warning(
                "%s from %s, %d of %d failures in %g s%s",
                what,
                ip,
                failures,
                limit,
                window,
                held_back(held),
            )
        if failures == limit and (held := self._block_lines.allow(now)) is not None:
            log.warning(
                "rate limiting %s for up to %g s: %d wrong passwords or resume secrets in"
                " %g s (its joins of protected rooms and its resumes get rate_limited)%s",
                ip,
                window,
                limit,
                window,
                held_back(held),
            )

    def _count_hosted(self, ip: str, change: int) -> None:
        host_ip = canonical_ip(ip)
        hosted = self._rooms_by_ip.get(host_ip, 0) + change
        if hosted:
            self._rooms_by_ip[host_ip] = hosted
        else:
            del self._rooms_by_ip[host_ip]

    @staticmethod
    def _same_ip(member: Member, ip: str) -> bool:
        return canonical_ip(member.ip) == canonical_ip(ip)

    def _release_held(self, member: Member) -> None:
        if member.relayed is not None:
            self.held_bytes -= member.relayed.held_bytes
            member.relayed.held.clear()
            member.relayed.held_bytes = 0

    def _remember_gone(self, member: Member, reply: bytes, now: float) -> None:
        gone = self.gone
        gone.pop(member.token_bytes, None)
        gone[member.token_bytes] = Gone(member.ip, reply, now + self.idle_timeout, member.opener)
        while len(gone) > MAX_GONE:
            gone.popitem(last=False)
        if member.session is not None:
            sessions = self.gone_sessions
            sessions.pop(member.session, None)
            sessions[member.session] = member
            while len(sessions) > MAX_GONE:
                sessions.popitem(last=False)

    def _remove(self, member: Member, how: Presence, now: float) -> list[Outgoing]:
        room = member.room
        if member is room.host:
            return self._close(room, HostGone(member.name, how), now)
        self._forget_member(member)
        self._room_event(
            member.ip,
            now,
            '%s (%s) %s room "%s"',
            member.name,
            member.ip,
            "left" if how is Presence.LEFT else how + " in",
            room.name,
        )
        text = format_notice(MemberEvent(member.name, how))
        outgoing = room.announce(Kind.NOTICE, text, Op.LEAVE, member.name)
        self.forget_if_empty(room)  # a replica nobody here is in: it goes on elsewhere
        return outgoing

    def _forget_member(self, member: Member) -> None:
        room = member.room
        del room.members[member.name.casefold()]
        self._unregister(member)
        room.refresh_addresses()

    def _unregister(self, member: Member) -> None:
        """Take ``member`` out of the server's indexes (its room's list aside): its
        token, Session and idle timer are no longer anyone's."""
        del self.by_token[member.token_bytes]
        if member.session is not None:
            del self.by_session[member.session]
        del self._activity[member]
        self._release_held(member)

    def _close(self, room: Room, reason: ClosedReason, now: float) -> list[Outgoing]:
        text = format_closed(reason)
        if room.bus is not None:
            return self._close_replica(room, text, now)
        return self._teardown(room, room.announce_here(Kind.CLOSED, text), text, now)

    def _close_replica(self, room: Room, text: str, now: float) -> list[Outgoing]:
        """Close a cluster room: its CLOSED goes to the bus, and every node (this one
        too) closes the room when it comes back. A host that leaves is gone at once.

        A node that shuts down (``closed``) cannot wait for that: it closes the room
        for the cluster if it hosts it, else its members leave it; either way it tells
        its own members now, and forgets the room."""
        assert room.bus is not None
        host = room.host
        if host is not None and not room.closing:
            room.bus.publish(room, Op.CLOSE, Entry(Kind.CLOSED, text.encode("utf-8")))
            room.closing = True
            if room.members.get(host.name.casefold()) is host:
                self._forget_member(host)
        if not self.closed:
            return []
        for member in list(room.members.values()):
            event = format_notice(MemberEvent(member.name, Presence.LEFT))
            room.bus.publish(room, Op.LEAVE, Entry(Kind.NOTICE, event.encode()), member.name)
        return self._teardown(room, room.announce_here(Kind.CLOSED, text), text, now)

    def _forget_replica(self, room: Room) -> None:
        """This node has no member of a cluster room left: stop keeping it."""
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        room.history = None

    def _teardown(self, room: Room, closed: Outgoing, text: str, now: float) -> list[Outgoing]:
        """Close ``room`` here, with ``closed`` its CLOSED (saying ``text``): its
        members are gone."""
        if room.delivery_addresses:  # once more later, for those whose copy was lost
            again = Outgoing(closed.datagram, room.delivery_addresses, room.sealer)
            self.deadline_moved = True
            for intervals in CLOSED_RESENDS:
                self._resend_count += 1
                due = now + intervals * self.closed_resend_interval
                heapq.heappush(self._resends, (due, self._resend_count, again))
        for member in room.members.values():
            if member.delivery:
                self._remember_gone(member, closed.datagram, now)
            self._unregister(member)
        room.members.clear()
        room.refresh_addresses()
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        # Its sealed members' Sessions keep it a while (gone_sessions: the room's sealer
        # seals the answer to a resent LEAVE), but nothing reads its lines any more: let
        # them go now, not up to --history-bytes per closed room for idle_timeout more.
        room.history = None
        if room.counted_ip:
            self._count_hosted(room.counted_ip, -1)
        host = room.host
        if host is None:
            log.info('room "%s" closed: %s', room.name, text)
        else:
            line = 'room "%s" of %s (%s) closed: %s'
            self._room_event(host.ip, now, line, room.name, host.name, host.ip, text)
        return [closed]

    def _room_event(self, ip: str, now: float, message: str, *args: object) -> None:
        """An INFO line about a room, held back when one address causes too many: a
        create-and-leave loop wrote 700 lines a second. What was held back is counted
        in the address's next line."""
        ip = canonical_ip(ip)
        limiter = self._event_lines.pop(ip, None) or LogLimiter(ROOM_EVENT_RATE, ROOM_EVENT_BURST)
        if len(self._event_lines) >= MAX_LOGGED_ADDRESSES:
            del self._event_lines[next(iter(self._event_lines))]  # the stalest
        self._event_lines[ip] = limiter
        held = limiter.allow(now)
        if held is not None:
            log.info(message + held_back(held), *args)
