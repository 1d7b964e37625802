"""A fault injector between OCM clients and a real OCM server, on loopback, seeded.

:class:`FaultProxy` listens on one TCP and one UDP port of 127.0.0.1 and relays both to
a real server, so tests and benchmarks can measure delivery on a lossy network without
root, ``tc netem`` or a second machine::

    async with running_server() as server:
        async with FaultProxy.start(server.tcp_port, server.udp_port, seed=7, loss=0.2) as proxy:
            chat = await ChatClient.create(proxy.address, "lobby", "alice", security=PLAINTEXT)
            ...
            print(proxy.counters.up.dropped, proxy.counters.down.dropped)

* **TCP** is relayed byte for byte, except that every COMPLETE of CREATE_ROOM and
  JOIN_ROOM the server sends has its ``udp_port`` rewritten to the proxy's UDP port
  (:class:`ReplyRewriter`), so the client sends its datagrams through the proxy. After a
  COMPLETE of TUNNEL (operation 5) the connection carries length-prefixed relay
  datagrams, not TCRP, and passes raw both ways; RESUME (6) and any other reply pass as
  they came. TCP is reliable: no fault touches it, except :meth:`FaultProxy.blackhole`
  (``drop_all_udp`` does not: "UDP is blocked, TCP works").
* **Encrypted clients** (section 5: TCRP inside TLS) cannot have their COMPLETE
  rewritten: start the proxy with ``mirror_udp_port=True`` on a loopback address of its
  own (``host="127.0.0.9"``). It then listens for UDP on the server's UDP port number
  there, so the COMPLETE's ``udp_port`` leads the client's datagrams to the proxy as
  they are, and TCP passes byte for byte (``tunnels`` is not counted: TLS hides TUNNEL).
* **Capture**: with ``capture=True`` every byte that reaches the proxy is kept in
  :attr:`FaultProxy.captured`, each TCP read and each datagram as it came, both ways:
  what an observer on the path would see.
* **UDP** goes through a NAT-like table: each client source address gets its own
  upstream socket on 127.0.0.1, so the server sees one (ip, port) per client, and the
  server's datagrams to that socket go back to that client. Datagrams in each direction
  (``up``: client to server, ``down``: server to client) meet the :class:`Faults` of
  that direction: ``loss``, ``duplicate``, ``reorder`` and a fixed ``delay``.
* **Moving**: :meth:`FaultProxy.move` puts the proxy's upstream side on another
  loopback address (``proxy.move("127.0.0.3")``), as when a laptop changes networks:
  every UDP mapping is dropped, and the server sees the next datagrams and the new TCP
  connections come from there; open connections stay as they are.
* **Determinism**: one ``random.Random(seed)`` gives each direction its own stream, and
  every datagram draws exactly four numbers from its direction's stream, whatever the
  faults are (:func:`decide`). The same seed and the same sequence of datagrams in a
  direction give the same decisions, even when another direction's traffic or a fault
  setting changes in between.
* **Bounded**: every delayed send is a tracked ``loop.call_later`` handle (at most
  ``max_pending``), cancelled by :meth:`FaultProxy.close`; at most ``max_clients`` UDP
  mappings (the least recently active is evicted, as a NAT expires idle mappings) and
  ``max_connections`` TCP connections. Nothing sleeps: every wait is on an event.
* **Loopback only**: the proxy refuses a server or a listening address that is not a
  loopback address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict, Unpack

from ocm.client.trust import Security
from ocm.errors import ProtocolError
from ocm.server.app import keep_receiving_after_unreachable
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Operation,
    State,
    TcrpMessage,
    TcrpReader,
    decode_tcrp,
    encode_tcrp,
)

__all__ = [
    "MAX_CLIENTS",
    "MAX_CONNECTIONS",
    "MAX_DELAY",
    "MAX_PENDING",
    "MODES",
    "PLAINTEXT",
    "PROXY_HOST",
    "TUNNEL",
    "Counters",
    "Decision",
    "FaultOptions",
    "FaultProxy",
    "Faults",
    "ReplyRewriter",
    "Traffic",
    "decide",
    "proxy_options",
    "rewrite_udp_port",
    "security_for",
]

Address = tuple[str, int]

LOOPBACK = "127.0.0.1"
# UDP client mappings kept at once; past it the least recently active is evicted.
MAX_CLIENTS = 1024
# Delayed datagrams (delay, reorder, duplicate copies) waiting at once; past it a
# datagram that should wait is dropped instead. 4096 x 64 KiB at the very worst.
MAX_PENDING = 4096
# TCP connections relayed at once; past it a new connection is closed at once.
MAX_CONNECTIONS = 1024
# Datagrams kept for an upstream socket that is still opening (a few loop turns).
MAX_WAITING = 256
# No fault may hold a datagram longer than this (seconds): tests stay short.
MAX_DELAY = 10.0
READ_SIZE = 64 * 1024
# Section 5: the two ways a test's clients go through the proxy. In plaintext the
# proxy rewrites the udp_port of CREATE/JOIN's COMPLETE, which it can only read and
# change in clear (the server must allow plaintext: tests/kit.py's running_server does).
# Sealed, inside TLS, the proxy listens on an address of its own with the server's UDP
# port number (mirror_udp_port). MODES names both; the default product is "sealed".
PLAINTEXT = Security(insecure=True)
# Issue 11's bad network: 20% loss, 5% duplication, 10% reordering by 5-60 ms.
BAD = {"loss": 0.20, "duplicate": 0.05, "reorder": 0.10, "reorder_min": 0.005, "reorder_max": 0.060}
PROXY_HOST = "127.0.0.9"
MODES = ("sealed", "plaintext")


def security_for(mode: str) -> Security:
    """The clients' Security in ``mode`` ("sealed" or "plaintext")."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    return Security() if mode == "sealed" else PLAINTEXT


def proxy_options(mode: str) -> dict[str, Any]:
    """What FaultProxy.start needs in ``mode``, besides the faults."""
    security_for(mode)  # checks the name
    return {"host": PROXY_HOST, "mirror_udp_port": True} if mode == "sealed" else {}


_PROBABILITIES = frozenset({"loss", "duplicate", "reorder"})

# Operations by their raw header byte, so that the proxy works whether or not the
# wire's Operation enum has them yet. TUNNEL's COMPLETE ends TCRP on its connection;
# RESUME (6) is an ordinary request/reply with nothing to rewrite.
TUNNEL = 5
_STATES = frozenset(int(state) for state in State)
_ADMISSIONS = frozenset({int(Operation.CREATE_ROOM), int(Operation.JOIN_ROOM)})


@dataclass(slots=True)
class Faults:
    """What happens to datagrams in one direction. Change any field at run time; each
    datagram reads the values current when it arrives.

    Probabilities (0 to 1): ``loss`` drops the datagram; ``duplicate`` sends a second
    copy ``duplicate_gap`` seconds after the first; ``reorder`` holds it back for
    uniform(``reorder_min``, ``reorder_max``) seconds, so later datagrams overtake it.
    ``delay`` (seconds) delays every datagram; datagrams that are only delayed keep their
    order (a queue, not a timer each).
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    reorder_min: float = 0.005
    reorder_max: float = 0.050
    duplicate_gap: float = 0.001

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, got {value!r}")
        top = 1.0 if name in _PROBABILITIES else MAX_DELAY
        if not 0.0 <= value <= top:  # NaN fails too
            raise ValueError(f"{name} must be between 0 and {top}, got {value!r}")
        object.__setattr__(self, name, float(value))


class FaultOptions(TypedDict, total=False):
    """The fields of :class:`Faults`, as keyword arguments for both directions at once."""

    loss: float
    duplicate: float
    reorder: float
    delay: float
    reorder_min: float
    reorder_max: float
    duplicate_gap: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The fate of one datagram: dropped, or sent after ``delay`` seconds (and a second
    copy after ``duplicate_after`` seconds, if not None)."""

    drop: bool
    delay: float = 0.0
    reordered: bool = False
    duplicate_after: float | None = None


def decide(rng: random.Random, faults: Faults) -> Decision:
    """Decide one datagram's fate. Always draws four numbers from ``rng``, so changing
    one probability does not shift the decisions of the others."""
    lost, doubled, held, spread = rng.random(), rng.random(), rng.random(), rng.random()
    if lost < faults.loss:  # random() < 1.0 always, < 0.0 never
        return Decision(drop=True)
    delay = faults.delay
    reordered = held < faults.reorder
    if reordered:
        low, high = sorted((faults.reorder_min, faults.reorder_max))
        delay += low + spread * (high - low)
    duplicate_after = delay + faults.duplicate_gap if doubled < faults.duplicate else None
    return Decision(False, delay, reordered, duplicate_after)


@dataclass(slots=True)
class Counters:
    """One direction's datagrams. ``received``: arrived at the proxy; ``dropped``:
    discarded (a loss, ``drop_all_udp``, a blackhole, a full table, a gone mapping);
    ``forwarded``: copies sent on, duplicates included; ``duplicated``: second copies
    made; ``reordered``: datagrams held back to be overtaken. Once nothing is pending,
    ``forwarded == received - dropped + duplicated`` (unless copies were dropped too)."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class Traffic:
    """The counters of both directions: ``up`` (client to server), ``down``."""

    up: Counters = field(default_factory=Counters)
    down: Counters = field(default_factory=Counters)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"up": self.up.as_dict(), "down": self.down.as_dict()}


# ---------------------------------------------------------------------------
# TCP: the udp_port rewrite (pure, no I/O)
# ---------------------------------------------------------------------------


def rewrite_udp_port(message: TcrpMessage, udp_port: int) -> TcrpMessage | None:
    """``message`` with ``udp_port`` replaced, if it is a COMPLETE of CREATE_ROOM or
    JOIN_ROOM that carries one; None when it is to pass unchanged. Every other payload
    field, known or not, is kept."""
    if message.state is not State.COMPLETE:
        return None
    if message.operation not in (Operation.CREATE_ROOM, Operation.JOIN_ROOM):
        return None
    if "udp_port" not in message.payload:
        return None  # a server bug stays visible to the client
    payload = {**message.payload, "udp_port": udp_port}
    return TcrpMessage(message.operation, message.state, message.room, payload)


class ReplyRewriter:
    """The server-to-client byte stream of one connection, cut into TCRP messages.

    :meth:`feed` returns the bytes to pass on: each whole message exactly as it came,
    except that admissions get the proxy's ``udp_port`` (re-encoded with
    :func:`~ocm.wire.encode_tcrp`). A partial message is held until it is whole.

    Messages are cut by their header's sizes alone (the wire's framer in raw mode,
    :meth:`~ocm.wire.framer.TcrpReader.next_raw`) and only admissions are decoded, so
    operations the wire may not know (RESUME, TUNNEL) pass as they came. From the byte
    after a COMPLETE of TUNNEL the stream is relay datagrams, not TCRP: it passes
    untouched (``tunnelled`` is then True). So does the rest of a stream out of step: a
    message of an unknown state (itself passed once its sizes say it is whole) and all
    after it, or everything from a header whose size is over ``MAX_REPLY_PAYLOAD``: the
    proxy relays a server's bugs, it does not fix them.
    """

    def __init__(self, udp_port: int) -> None:
        self.udp_port = udp_port
        self.rewritten = 0
        self.tunnelled = False
        # Cut by the sizes alone (next_raw): whatever the operation, nothing decoded.
        self._framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
        self._transparent = False

    def feed(self, data: bytes) -> bytes:
        if self._transparent:
            return data
        self._framer.feed(data)
        out = bytearray()
        while not self._transparent and (raw := self._next()) is not None:
            out += self._passed(raw)
        if self._transparent:  # the rest of this read too: tunnel bytes, or out of step
            out += self.flush()
        return bytes(out)

    def _next(self) -> bytes | None:
        """The message at the head, once it is all in; None before."""
        try:
            raw = self._framer.next_raw()
        except ProtocolError:  # a size over MAX_REPLY_PAYLOAD: never held, memory bounded
            self._transparent = True  # and nothing after it can be cut either
            return None
        if raw is not None and raw[2] not in _STATES:
            self._transparent = True  # not TCRP: passed, and nothing after it is cut
        return raw

    def _passed(self, raw: bytes) -> bytes:
        operation, state = raw[1], raw[2]
        if self._transparent or state != State.COMPLETE:
            return raw
        if operation == TUNNEL:
            self.tunnelled = self._transparent = True
            return raw
        if operation not in _ADMISSIONS:
            return raw
        try:
            message = decode_tcrp(raw, max_payload=MAX_REPLY_PAYLOAD)
        except ProtocolError:
            return raw  # a malformed admission reaches the client as the server sent it
        return self._rewritten(message, raw)

    def _rewritten(self, message: TcrpMessage, raw: bytes) -> bytes:
        changed = rewrite_udp_port(message, self.udp_port)
        if changed is None:
            return raw
        try:
            encoded = encode_tcrp(changed)
        except (ProtocolError, UnicodeEncodeError):  # a lone surrogate from a JSON escape
            return raw
        self.rewritten += 1
        return encoded

    def flush(self) -> bytes:
        """The bytes of a message cut short (at the end of the stream), as they came."""
        return self._framer.take_rest()


# ---------------------------------------------------------------------------
# UDP
# ---------------------------------------------------------------------------


def _udp_socket(host: str, port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        keep_receiving_after_unreachable(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Datagrams(asyncio.DatagramProtocol):
    """Hands each datagram to a callback; ICMP errors are ignored (it is UDP)."""

    def __init__(self, received: Callable[[bytes, Any], None]) -> None:
        self.received = received

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class _Mapping:
    """One client's NAT entry: its upstream socket, whose port the server sees."""

    def __init__(self, client: Address, sock: socket.socket) -> None:
        self.client = client
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: deque[bytes] = deque()  # sent before the socket was ready
        self.closed = False
        self.opening = False  # the loop has the socket; the opener closes it

    def close(self) -> None:
        self.closed = True
        self.waiting.clear()
        if self.transport is not None:
            self.transport.close()
        elif not self.opening:
            self.sock.close()


class _Line:
    """One direction: its random stream, counters, and the queue of delayed datagrams
    (a queue so that a fixed delay never reorders)."""

    def __init__(self, rng: random.Random, send: Callable[[Address, bytes], bool]) -> None:
        self.rng = rng
        self.counters = Counters()
        self.send = send
        self.queue: deque[tuple[float, Address, bytes]] = deque()
        self.queue_timer: asyncio.TimerHandle | None = None


def _loopback(host: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"{what} must be a loopback address, got {host!r}")
    return address


class FaultProxy:
    """A seeded fault injector between clients and a real OCM server on loopback.

    Make one with :meth:`start`. ``up`` and ``down`` are the :class:`Faults` of each
    direction (set fields, or replace them, at run time); ``drop_all_udp`` drops every
    datagram (TCP, tunnels included, goes on); :meth:`blackhole` makes the server vanish;
    :meth:`rebind` changes a client's NAT mapping; :meth:`move` changes the address the
    server sees the proxy from; ``counters`` counts the datagrams, ``tunnels`` the
    connections that turned into a TUNNEL.
    """

    def __init__(
        self,
        server_tcp_port: int,
        server_udp_port: int,
        *,
        seed: int,
        server_host: str = LOOPBACK,
        host: str = LOOPBACK,
        up: Faults | None = None,
        down: Faults | None = None,
        drop_all_udp: bool = False,
        max_clients: int = MAX_CLIENTS,
        max_pending: int = MAX_PENDING,
        max_connections: int = MAX_CONNECTIONS,
        mirror_udp_port: bool = False,
        capture: bool = False,
        **faults: Unpack[FaultOptions],
    ) -> None:
        self._server_ip = _loopback(server_host, "the server host")
        if _loopback(host, "the proxy host").version != 4:
            raise ValueError(f"the proxy listens on IPv4 loopback, got {host!r}")
        if mirror_udp_port and host == str(self._server_ip):
            raise ValueError("mirror_udp_port needs a proxy host other than the server's")
        self.mirror_udp_port = mirror_udp_port
        # What crossed the proxy, as it came (capture=True): TCP reads and datagrams.
        self.captured: list[bytes] | None = [] if capture else None
        for name, value in (
            ("max_clients", max_clients),
            ("max_pending", max_pending),
            ("max_connections", max_connections),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.seed = seed
        self.host = host
        self.server_host = str(self._server_ip)
        self.server_tcp_port = server_tcp_port
        self.server_udp_port = server_udp_port
        # What the server sees as this proxy's address: the loopback of its family.
        self._local_host = LOOPBACK if self._server_ip.version == 4 else "::1"
        self._tcp_local_host = self._local_host  # differs after move(host, tcp=False)
        self.up = up if up is not None else Faults(**faults)
        self.down = down if down is not None else Faults(**faults)
        self.drop_all_udp = drop_all_udp
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.tcp_port = 0
        self.udp_port = 0
        self.evicted = 0  # mappings evicted for room (max_clients)
        self.tunnels = 0  # connections past a COMPLETE of TUNNEL, relayed raw since
        root = random.Random(seed)
        self._up = _Line(random.Random(root.getrandbits(64)), self._send_up)
        self._down = _Line(random.Random(root.getrandbits(64)), self._send_down)
        self.counters = Traffic(self._up.counters, self._down.counters)
        self._loop = asyncio.get_running_loop()
        self._mappings: OrderedDict[Address, _Mapping] = OrderedDict()
        self._front: asyncio.DatagramTransport | None = None
        self._listener: asyncio.Server | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # upstream sockets being opened
        self._connections: set[asyncio.Task[Any]] = set()
        self._reachable = asyncio.Event()  # cleared while blackholed
        self._reachable.set()
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        server_tcp_port: int,
        server_udp_port: int,
        *,
        seed: int,
        server_host: str = LOOPBACK,
        host: str = LOOPBACK,
        up: Faults | None = None,
        down: Faults | None = None,
        drop_all_udp: bool = False,
        max_clients: int = MAX_CLIENTS,
        max_pending: int = MAX_PENDING,
        max_connections: int = MAX_CONNECTIONS,
        mirror_udp_port: bool = False,
        capture: bool = False,
        **faults: Unpack[FaultOptions],
    ) -> AsyncIterator[FaultProxy]:
        """Listen on ``host`` (TCP and UDP, port 0) and relay to the server; close on
        exit. ``faults`` (``loss=0.1``, ...) apply to each direction not given as
        ``up`` or ``down``."""
        proxy = cls(
            server_tcp_port,
            server_udp_port,
            seed=seed,
            server_host=server_host,
            host=host,
            up=up,
            down=down,
            drop_all_udp=drop_all_udp,
            max_clients=max_clients,
            max_pending=max_pending,
            max_connections=max_connections,
            mirror_udp_port=mirror_udp_port,
            capture=capture,
            **faults,
        )
        try:
            await proxy._open()
            yield proxy
        finally:
            await proxy.close()

    async def _open(self) -> None:
        front = _udp_socket(self.host, self.server_udp_port if self.mirror_udp_port else 0)
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Datagrams(self._from_client), sock=front
            )
        except BaseException:
            front.close()
            raise
        self._front = transport
        self.udp_port = front.getsockname()[1]
        self._listener = await asyncio.start_server(self._serve, self.host, 0)
        self.tcp_port = self._listener.sockets[0].getsockname()[1]

    # -- state ------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The server address to give clients."""
        return (self.host, self.tcp_port)

    @property
    def clients(self) -> tuple[Address, ...]:
        """Client addresses with a UDP mapping, least recently active first."""
        return tuple(self._mappings)

    def upstream_port(self, client: Address) -> int:
        """The source port the server sees for ``client`` (KeyError if none)."""
        return self._mappings[client].port

    @property
    def pending(self) -> int:
        """Delayed datagrams (and copies) waiting to be sent."""
        return len(self._timers) - self._queue_timers() + self._queued()

    def _queue_timers(self) -> int:
        return sum(line.queue_timer is not None for line in (self._up, self._down))

    def _queued(self) -> int:
        return len(self._up.queue) + len(self._down.queue)

    @property
    def blackholed(self) -> bool:
        return not self._reachable.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- faults -----------------------------------------------------------------

    def blackhole(self) -> None:
        """The server vanishes, without a word (no RST, no ICMP): every datagram is
        dropped, new TCP connections are accepted and never answered, and open ones stop
        forwarding (their bytes wait, as unacknowledged segments would)."""
        self._reachable.clear()

    def restore(self) -> None:
        """The server is back: TCP bytes held by :meth:`blackhole` flow again."""
        self._reachable.set()

    def rebind(self, client_address: Address | None = None) -> None:
        """Give ``client_address`` (or every client) a new upstream socket, as a NAT
        rebinding does: the server sees a new source port from the next datagram, and
        what it sends to the old one is lost. KeyError for an unknown client."""
        clients = list(self._mappings) if client_address is None else [client_address]
        for client in clients:
            old = self._mappings[client]
            new = self._new_mapping(client)  # bound before the old closes: a new port
            new.waiting, old.waiting = old.waiting, deque()
            self._mappings[client] = new  # keeps its place in the LRU order
            old.close()

    @property
    def upstream_host(self) -> str:
        """The address the server sees this proxy's datagrams and connections come from."""
        return self._local_host

    def move(self, host: str, *, tcp: bool = True) -> None:
        """Move the proxy's upstream side to ``host``, as when a laptop's network (its
        NAT's public address) changes: new upstream sockets and TCP connections are made
        from ``host``, and every UDP mapping is dropped, so each client's next datagram
        makes a new one from there. What the server sends to an old mapping is lost, and
        so is a datagram still delayed for one. Open TCP connections (tunnels too) stay
        open from the old address (a real move would break them: a test that wants
        that closes its own).
        With ``tcp=False`` only UDP moves and new TCP connections still come from the
        old address: a carrier-grade NAT without paired pooling, or a VPN that carries
        only TCP, where one client reaches the server from two addresses.
        ``host`` must be a loopback address of the server's family (ValueError)."""
        address = _loopback(host, "the upstream host")
        if address.version != self._server_ip.version:
            raise ValueError(
                f"the upstream host must be IPv{self._server_ip.version}, like the "
                f"server, got {host!r}"
            )
        self._local_host = str(address)
        if tcp:
            self._tcp_local_host = self._local_host
        mappings = list(self._mappings.values())
        self._mappings.clear()
        for mapping in mappings:
            self._up.counters.dropped += len(mapping.waiting)  # sent to a gone socket
            mapping.close()

    # -- UDP --------------------------------------------------------------------

    def _from_client(self, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        client: Address = (addr[0], addr[1])
        if self.captured is not None:
            self.captured.append(data)
        if client in self._mappings:
            self._mappings.move_to_end(client)
        self._pass(self._up, self.up, client, data)

    def _from_server(self, mapping: _Mapping, data: bytes, addr: Any) -> None:
        if self._closed or (addr[0], addr[1]) != (self.server_host, self.server_udp_port):
            return  # only the server's datagrams cross the NAT
        if self.captured is not None:
            self.captured.append(data)
        if self._mappings.get(mapping.client) is not mapping:
            self._down.counters.received += 1
            self._down.counters.dropped += 1  # to a mapping rebound away
            return
        self._pass(self._down, self.down, mapping.client, data)

    def _pass(self, line: _Line, faults: Faults, client: Address, data: bytes) -> None:
        counters = line.counters
        counters.received += 1
        decision = decide(line.rng, faults)  # drawn first: the stream never skips
        if decision.drop or self._udp_blocked or not self._ensure_mapping(line, client):
            counters.dropped += 1
            return
        if decision.reordered:
            counters.reordered += 1
            sent = self._later(decision.delay, self._emit, line, client, data)
        elif decision.delay > 0:
            sent = self._enqueue(line, decision.delay, client, data)
        else:
            self._emit(line, client, data)
            sent = True
        if not sent:
            counters.dropped += 1
        elif decision.duplicate_after is not None and self._later(
            decision.duplicate_after, self._emit, line, client, data
        ):
            counters.duplicated += 1

    @property
    def _udp_blocked(self) -> bool:
        return self.drop_all_udp or self.blackholed

    def _ensure_mapping(self, line: _Line, client: Address) -> bool:
        if line is not self._up or client in self._mappings:
            return True
        while len(self._mappings) >= self.max_clients:
            _, oldest = self._mappings.popitem(last=False)
            oldest.close()
            self.evicted += 1
        try:
            self._mappings[client] = self._new_mapping(client)
        except OSError:
            return False
        return True

    def _new_mapping(self, client: Address) -> _Mapping:
        mapping = _Mapping(client, _udp_socket(self._local_host))
        task = asyncio.ensure_future(self._open_upstream(mapping))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return mapping

    async def _open_upstream(self, mapping: _Mapping) -> None:
        def received(data: bytes, addr: Any) -> None:
            self._from_server(mapping, data, addr)

        if mapping.closed:  # evicted or rebound before its first loop turn
            return  # (close() closed the socket)
        mapping.opening = True
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Datagrams(received), sock=mapping.sock
            )
        except OSError:
            mapping.sock.close()
            mapping.closed = True
            return
        finally:  # cancelled: asyncio closed the transport it had made, and the socket
            mapping.opening = False
        if mapping.closed:  # evicted or rebound while it opened
            transport.close()
            return
        mapping.transport = transport
        while mapping.waiting:
            self._to_server(mapping, mapping.waiting.popleft())

    def _emit(self, line: _Line, client: Address, data: bytes) -> None:
        if self._closed:
            return
        if self._udp_blocked or not line.send(client, data):
            line.counters.dropped += 1  # in flight when the path closed

    def _send_up(self, client: Address, data: bytes) -> bool:
        mapping = self._mappings.get(client)
        if mapping is None:
            return False  # evicted while the datagram waited
        if mapping.transport is None:
            if len(mapping.waiting) >= MAX_WAITING:
                return False
            mapping.waiting.append(data)
            return True
        self._to_server(mapping, data)
        return True

    def _to_server(self, mapping: _Mapping, data: bytes) -> None:
        assert mapping.transport is not None
        mapping.transport.sendto(data, (self.server_host, self.server_udp_port))
        self._up.counters.forwarded += 1

    def _send_down(self, client: Address, data: bytes) -> bool:
        if self._front is None or self._front.is_closing():
            return False
        self._front.sendto(data, client)
        self._down.counters.forwarded += 1
        return True

    # -- timers -----------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> bool:
        """Run ``callback`` after ``delay`` seconds, tracked; False when too many wait."""
        if self.pending >= self.max_pending:
            return False
        self._call_at(self._loop.time() + delay, callback, *args)
        return True

    def _call_at(
        self, when: float, callback: Callable[..., None], *args: Any
    ) -> asyncio.TimerHandle:
        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = self._loop.call_at(when, fire)
        self._timers.add(handle)
        return handle

    def _enqueue(self, line: _Line, delay: float, client: Address, data: bytes) -> bool:
        if self.pending >= self.max_pending:
            return False
        due = self._loop.time() + delay
        line.queue.append((due, client, data))
        if line.queue_timer is None:
            line.queue_timer = self._call_at(due, self._release, line)
        return True

    def _release(self, line: _Line) -> None:
        """Send the head of ``line``'s queue and everything due with it, in order."""
        line.queue_timer = None
        now = max(self._loop.time(), line.queue[0][0])  # a timer may run a tick early
        while line.queue and line.queue[0][0] <= now:
            _, client, data = line.queue.popleft()
            self._emit(line, client, data)
        if line.queue:
            line.queue_timer = self._call_at(line.queue[0][0], self._release, line)

    # -- TCP --------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closed or task is None or len(self._connections) >= self.max_connections:
            writer.close()
            return
        self._connections.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._reachable.wait()  # blackholed: accepted, never answered
            server_reader, upstream = await asyncio.open_connection(
                self.server_host, self.server_tcp_port, local_addr=(self._tcp_local_host, 0)
            )
            await asyncio.gather(
                self._pump(reader, upstream, writer, None),
                self._pump(
                    server_reader,
                    writer,
                    upstream,
                    None if self.mirror_udp_port else ReplyRewriter(self.udp_port),
                ),
            )
        except OSError:
            pass  # the server refused or vanished: the client sees its connection close
        finally:
            writer.close()
            if upstream is not None:
                upstream.close()
            self._connections.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        rewriter: ReplyRewriter | None,
    ) -> None:
        """Copy one direction until EOF (passed on as EOF); on an error, end both."""
        try:
            while True:
                await self._reachable.wait()
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                if self.captured is not None:
                    self.captured.append(data)
                if rewriter is not None:
                    tunnelled = rewriter.tunnelled
                    data = rewriter.feed(data)
                    if rewriter.tunnelled and not tunnelled:
                        self.tunnels += 1
                await self._reachable.wait()  # read before the blackhole: held
                if data:
                    writer.write(data)
                    await writer.drain()
            if rewriter is not None and (tail := rewriter.flush()):
                writer.write(tail)
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.transport.abort()
            other.transport.abort()

    # -- closing ------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel every delayed send and close every socket and connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for line in (self._up, self._down):
            line.queue.clear()
            line.queue_timer = None
        if self._front is not None:
            self._front.close()
        if self._listener is not None:
            self._listener.close()
        tasks = [*self._tasks, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for mapping in self._mappings.values():
            mapping.close()
        self._mappings.clear()
        if self._listener is not None:
            await self._listener.wait_closed()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy tcp={self.tcp_port} udp={self.udp_port} seed={self.seed} "
            f"up={self.up} down={self.down} {self.counters.as_dict()}>"
        )
