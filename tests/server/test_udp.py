"""The UDP adapter (ocm.server.udp) against real sockets on loopback.

BatchSender: one sendmmsg(2) call per datagram, the sockaddr layouts, partial sends and
the cache of prepared destinations with its cap. RelayEndpoint: socket or transport,
and the order each member's datagrams keep when the socket refuses some.

Where a test needs the kernel to refuse, :class:`KernelStandIn` takes the place of
sendmmsg: it reads the mmsghdr array the way the kernel does (with its own offsets, not
udp.py's structures), hands the first k messages to the real sendmmsg and returns what
the plan says, so what arrives at the receivers is real. The sendmmsg tests need Linux
with glibc on a 64-bit machine, the only place udp.py builds a BatchSender; the rest
run everywhere.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from ocm.server import udp
from ocm.server.registry import Address, RoomRegistry
from ocm.server.relay import RelayCore
from ocm.server.udp import BATCH_FROM, MAX_QUEUED_BYTES, BatchSender, RelayEndpoint
from ocm.wire import CreateRoom, JoinRoom, Kind, ServerDatagram
from tests.kit import LOOPBACK, MS, Member, enter, running_server, until

V6_LOOPBACK = "::1"
MAPPED_LOOPBACK = "::ffff:127.0.0.1"  # how a dual-stack socket names an IPv4 peer
# struct mmsghdr on 64-bit Linux: a 56-byte msghdr, then msg_len, padded to 8 bytes.
MMSGHDR_SIZE = 64

needs_sendmmsg = pytest.mark.skipif(
    sys.platform != "linux"
    or platform.libc_ver()[0] != "glibc"
    or ctypes.sizeof(ctypes.c_void_p) != 8,
    reason="udp.py batches with sendmmsg(2) only on Linux with glibc, 64-bit",
)


def _can_bind(family: socket.AddressFamily, host: str, *, dual: bool = False) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if dual:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, 0))
    except (OSError, AttributeError):
        return False
    return True


HAS_IPV6 = socket.has_ipv6 and _can_bind(socket.AF_INET6, V6_LOOPBACK)
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="this machine has no IPv6 loopback (::1)")
needs_dual_stack = pytest.mark.skipif(
    not (
        HAS_IPV6
        and socket.has_dualstack_ipv6()
        and _can_bind(socket.AF_INET6, MAPPED_LOOPBACK, dual=True)
    ),
    reason="this system does not offer dual-stack IPv6 sockets",
)


# -- sockets --------------------------------------------------------------------


def bound_socket(
    family: socket.AddressFamily = socket.AF_INET, host: str = LOOPBACK
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if host == MAPPED_LOOPBACK:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


@contextmanager
def sockets(
    count: int, family: socket.AddressFamily = socket.AF_INET, host: str = LOOPBACK
) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [stack.enter_context(bound_socket(family, host)) for _ in range(count)]


def addresses_of(socks: list[socket.socket]) -> tuple[Address, ...]:
    return tuple(sock.getsockname() for sock in socks)


def received(socks: list[socket.socket], want: list[list[bytes]]) -> list[list[bytes]]:
    """What each socket received: as many datagrams as ``want`` says, then any extra."""
    got: list[list[bytes]] = []
    for sock, wanted in zip(socks, want, strict=True):
        sock.settimeout(1000 * MS)
        items: list[bytes] = []
        for _ in wanted:
            try:
                items.append(sock.recv(70_000))
            except TimeoutError:
                break
        got.append(items)
    time.sleep(20 * MS)  # a copy too many would have arrived by now
    for sock, items in zip(socks, got, strict=True):
        sock.setblocking(False)
        while True:
            try:
                items.append(sock.recv(70_000))
            except BlockingIOError:
                break
    return got


def assert_received(socks: list[socket.socket], want: list[list[bytes]]) -> None:
    assert received(socks, want) == want


# -- sendmmsg, as the kernel sees it ----------------------------------------------


def read_batch(pointer: int, count: int) -> list[tuple[bytes, bytes]]:
    """(sockaddr, payload) of each mmsghdr at ``pointer``, read with Linux's LP64 offsets."""
    messages = []
    for index in range(count):
        header = ctypes.string_at(pointer + index * MMSGHDR_SIZE, MMSGHDR_SIZE)
        name, name_length, iov, iov_length = struct.unpack_from("=QI4xQQ", header)
        assert iov_length == 1
        base, length = struct.unpack("=QQ", ctypes.string_at(iov, 16))
        messages.append((ctypes.string_at(name, name_length), ctypes.string_at(base, length)))
    return messages


def port_of(sockaddr: bytes) -> int:
    port: int = struct.unpack_from("!H", sockaddr, 2)[0]
    return port


class KernelStandIn:
    """sendmmsg(2) as a test script wants it: call i hands the first ``plan[i]`` messages
    to the real call (``real``; None sends nothing) and returns its count, or returns -1
    when the plan says -1. Past the plan, every message goes. Records each call."""

    def __init__(self, real: Callable[..., int] | None, plan: tuple[int, ...] = ()) -> None:
        self.real = real
        self.plan = list(plan)
        self.calls: list[list[tuple[bytes, bytes]]] = []

    def __call__(self, fd: int, pointer: int, count: int, flags: int) -> int:
        self.calls.append(read_batch(pointer, count))
        take = self.plan.pop(0) if self.plan else count
        if take < 0:
            return -1  # EAGAIN or another error: udp.py does not read errno
        take = min(take, count)
        if take == 0 or self.real is None:
            return take
        return self.real(fd, pointer, take, flags)

    def ports(self, call: int = -1) -> list[int]:
        return [port_of(name) for name, _ in self.calls[call]]


def stand_in(sender: BatchSender, plan: tuple[int, ...] = ()) -> KernelStandIn:
    fake = KernelStandIn(sender._sendmmsg, plan)
    sender._sendmmsg = fake
    return fake


def open_sender(sock: socket.socket) -> BatchSender:
    sender = BatchSender.open(sock.fileno(), sock.family)
    assert sender is not None, "needs_sendmmsg: udp.py must build a BatchSender here"
    return sender


# -- sockaddr layouts ---------------------------------------------------------------


class SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_ushort),
        ("sin_addr", ctypes.c_ubyte * 4),
        ("sin_zero", ctypes.c_ubyte * 8),
    ]


class SockaddrIn6(ctypes.Structure):
    _fields_ = [
        ("sin6_family", ctypes.c_ushort),
        ("sin6_port", ctypes.c_ushort),
        ("sin6_flowinfo", ctypes.c_uint32),
        ("sin6_addr", ctypes.c_ubyte * 16),
        ("sin6_scope_id", ctypes.c_uint32),
    ]


def no_sendmmsg(*args: Any) -> int:
    raise AssertionError("nothing may be sent")


def test_sockaddr_in_and_in6_have_the_linux_layout() -> None:
    assert (ctypes.sizeof(SockaddrIn), ctypes.sizeof(SockaddrIn6)) == (16, 28)
    v4 = BatchSender(no_sendmmsg, -1, socket.AF_INET)
    expected4 = SockaddrIn(socket.AF_INET, socket.htons(0x1234))
    expected4.sin_addr[:] = list(socket.inet_pton(socket.AF_INET, "192.0.2.7"))
    assert bytes(v4._sockaddr(("192.0.2.7", 0x1234))) == bytes(expected4)

    v6 = BatchSender(no_sendmmsg, -1, socket.AF_INET6)
    expected6 = SockaddrIn6(socket.AF_INET6, socket.htons(0xABCD), socket.htonl(0x000A_BCDE))
    expected6.sin6_addr[:] = list(socket.inet_pton(socket.AF_INET6, "fe80::1:2"))
    expected6.sin6_scope_id = 3
    assert bytes(v6._sockaddr(("fe80::1:2%eth0", 0xABCD, 0x000A_BCDE, 3))) == bytes(expected6)

    # An IPv4 peer of a dual-stack socket, as asyncio names it and as a bare IPv4 pair.
    mapped = SockaddrIn6(socket.AF_INET6, socket.htons(4000))
    mapped.sin6_addr[:] = list(socket.inet_pton(socket.AF_INET6, MAPPED_LOOPBACK))
    assert bytes(v6._sockaddr((MAPPED_LOOPBACK, 4000, 0, 0))) == bytes(mapped)
    assert bytes(v6._sockaddr((LOOPBACK, 4000))) == bytes(mapped)


def test_an_address_of_the_other_family_is_left_to_the_transport() -> None:
    v4 = BatchSender(no_sendmmsg, -1, socket.AF_INET)
    assert v4.send(b"x", ((LOOPBACK, 1000), (V6_LOOPBACK, 1001, 0, 0), (LOOPBACK, 1002))) == 0
    assert v4.send(b"x" * 65_508, ((LOOPBACK, 1000),) * 3) == 0  # no UDP datagram is this big


# -- BatchSender on real sockets --------------------------------------------------

FAMILIES = [
    pytest.param(socket.AF_INET, LOOPBACK, id="ipv4"),
    pytest.param(socket.AF_INET6, V6_LOOPBACK, id="ipv6", marks=needs_ipv6),
]


@needs_sendmmsg
@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_one_sendmmsg_reaches_five_peers_once_each_bytes_intact(
    family: socket.AddressFamily, host: str
) -> None:
    big = bytes(range(256)) * 234  # 59,904 bytes, every byte value
    small = b"\x00\xffok"
    with bound_socket(family, host) as out, sockets(5, family, host) as peers:
        sender = open_sender(out)
        kernel = stand_in(sender)
        room = addresses_of(peers)

        assert sender.send(big, room) == 5
        assert sender.send(small, room) == 5

        assert [len(call) for call in kernel.calls] == [5, 5]  # one call per datagram
        assert kernel.ports(0) == [address[1] for address in room]
        assert {payload for _, payload in kernel.calls[1]} == {small}
        assert_received(peers, [[big, small]] * 5)  # the short one has no leftovers


@needs_sendmmsg
@needs_dual_stack
def test_ipv4_peers_of_a_dual_stack_socket() -> None:
    with bound_socket(socket.AF_INET6, MAPPED_LOOPBACK) as out, sockets(5) as peers:
        sender = open_sender(out)
        kernel = stand_in(sender)
        # asyncio on a dual-stack socket says ("::ffff:127.0.0.1", port, 0, 0);
        # udp.py takes a bare IPv4 pair too.
        room = tuple(
            (MAPPED_LOOPBACK, port, 0, 0) if index % 2 else (host, port)
            for index, (host, port) in enumerate(addresses_of(peers))
        )

        assert sender.send(b"mapped", room) == 5

        assert len(kernel.calls) == 1
        assert_received(peers, [[b"mapped"]] * 5)


@needs_sendmmsg
@pytest.mark.parametrize(
    ("plan", "returned", "reached"),
    [
        pytest.param((3,), 3, 3, id="partial"),
        pytest.param((0,), 0, 0, id="none"),
        pytest.param((-1,), 0, 0, id="error"),
    ],
)
def test_a_refused_send_says_how_many_it_reached(
    plan: tuple[int, ...], returned: int, reached: int
) -> None:
    with bound_socket() as out, sockets(5) as peers:
        sender = open_sender(out)
        kernel = stand_in(sender, plan)
        room = addresses_of(peers)

        assert sender.send(b"first", room) == returned
        assert len(kernel.calls) == 1  # no retry: the caller hands the rest on
        assert_received(peers, [[b"first"]] * reached + [[]] * (5 - reached))

        assert sender.send(b"second", room) == 5  # the socket takes all again
        assert_received(peers, [[b"second"]] * 5)


@needs_sendmmsg
@pytest.mark.parametrize(
    ("plan", "calls", "reached"),
    [
        pytest.param((), [2, 2, 1], 5, id="all"),
        pytest.param((2, 1), [2, 2], 3, id="second-chunk-partial"),
        pytest.param((2, -1), [2, 2], 2, id="second-chunk-refused"),
    ],
)
def test_a_room_bigger_than_one_call_is_sent_in_chunks(
    monkeypatch: pytest.MonkeyPatch, plan: tuple[int, ...], calls: list[int], reached: int
) -> None:
    monkeypatch.setattr(udp, "_MAX_BATCH", 2)
    with bound_socket() as out, sockets(5) as peers:
        sender = open_sender(out)
        kernel = stand_in(sender, plan)
        room = addresses_of(peers)

        assert sender.send(b"chunked", room) == reached

        assert [len(call) for call in kernel.calls] == calls
        # Each call starts where the last one stopped.
        assert [port for index in range(len(calls)) for port in kernel.ports(index)] == [
            address[1] for address in room[: sum(calls)]
        ]
        assert_received(peers, [[b"chunked"]] * reached + [[]] * (5 - reached))


# -- the cache of prepared destinations ---------------------------------------------


def prepared_addresses(sender: BatchSender) -> int:
    return sum(len(prepared.addresses) for prepared in sender._prepared.values())


@needs_sendmmsg
@pytest.mark.parametrize(
    ("cap", "members", "moves"),
    [
        pytest.param(1_000, 150, 40, id="small-cap"),
        pytest.param(udp._MAX_PREPARED, 1_000, 70, id="documented-cap"),
    ],
)
def test_a_member_moving_ports_never_grows_the_cache_past_its_cap(
    monkeypatch: pytest.MonkeyPatch, cap: int, members: int, moves: int
) -> None:
    monkeypatch.setattr(udp, "_MAX_PREPARED", cap)
    with bound_socket() as out:
        sender = open_sender(out)
        kernel = KernelStandIn(None)  # nobody listens at these ports: send nothing
        sender._sendmmsg = kernel
        room = tuple((LOOPBACK, 20_000 + index) for index in range(members))
        for move in range(moves):
            # One member of the big room comes back from another port: a new tuple.
            room = (*room[:7], (LOOPBACK, 40_000 + move), *room[8:])

            assert sender.send(b"x", room) == members

            assert port_of(kernel.calls[-1][7][0]) == 40_000 + move  # not a stale list
            assert prepared_addresses(sender) <= cap
            assert sender._prepared_addresses == prepared_addresses(sender)
        assert moves * members > cap  # the test did go past the cap
        assert len(sender._prepared) <= cap // members


@needs_sendmmsg
def test_a_room_bigger_than_the_cap_is_never_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "_MAX_PREPARED", 4)
    with bound_socket() as out, sockets(5) as peers:
        sender = open_sender(out)
        kernel = stand_in(sender)

        assert sender.send(b"x", addresses_of(peers)) == 0  # the transport sends them all

        assert kernel.calls == []
        assert prepared_addresses(sender) == 0


@needs_sendmmsg
def test_a_room_new_address_tuple_is_used_not_a_stale_one() -> None:
    with bound_socket() as out, sockets(4) as stay:
        sender = open_sender(out)
        for round_ in range(10):
            # A new socket each round, the old tuple dropped: if the cache went by id()
            # alone, a tuple built at a freed tuple's address would find its old list.
            with bound_socket() as mover:
                room = (*addresses_of(stay[:2]), mover.getsockname(), *addresses_of(stay[2:]))
                text = f"round {round_}".encode()

                assert sender.send(text, room) == 5

                assert_received([*stay, mover], [[text]] * 5)
            del room


# -- RelayEndpoint ------------------------------------------------------------------


class FakeTransport(asyncio.DatagramTransport):
    """A datagram transport on a real socket whose queue the test controls.

    While ``holding`` (the kernel buffer is full, as far as the endpoint can tell) or
    while anything is queued, :meth:`sendto` queues, as asyncio's transport does;
    :meth:`flush` sends the queue in order."""

    def __init__(self, sock: socket.socket | None) -> None:
        super().__init__()
        self.sock = sock
        self.holding = False
        self.sent: list[tuple[bytes, Address]] = []  # every sendto, in call order
        self.queue: list[tuple[bytes, Address]] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data, _ in self.queue)

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))
        if self.holding or self.queue:
            self.queue.append((bytes(data), addr))
        else:
            assert self.sock is not None
            self.sock.sendto(data, addr)

    def flush(self) -> None:
        self.holding = False
        assert self.sock is not None
        for data, addr in self.queue:
            self.sock.sendto(data, addr)
        self.queue.clear()


def new_endpoint() -> RelayEndpoint:
    return RelayEndpoint(RelayCore(RoomRegistry()), time.monotonic)


@contextmanager
def connected(transport: FakeTransport) -> Iterator[RelayEndpoint]:
    endpoint = new_endpoint()
    endpoint.connection_made(transport)
    try:
        yield endpoint
    finally:
        endpoint.connection_lost(None)


def kernel_of(endpoint: RelayEndpoint, plan: tuple[int, ...] = ()) -> KernelStandIn:
    batch = endpoint._batch
    assert batch is not None, "needs_sendmmsg: the endpoint must batch here"
    return stand_in(batch, plan)


@needs_sendmmsg
def test_with_nothing_queued_the_endpoint_writes_to_the_socket() -> None:
    with bound_socket() as out, sockets(BATCH_FROM) as peers:
        transport = FakeTransport(out)
        with connected(transport) as endpoint:
            kernel = kernel_of(endpoint)
            room = addresses_of(peers)

            endpoint.send_to(b"batched", room)  # BATCH_FROM members: one sendmmsg
            endpoint.send_to(b"plain", room[:-1])  # one fewer: a sendto each

            assert [len(call) for call in kernel.calls] == [BATCH_FROM]
            assert transport.sent == []
            assert endpoint.sent == 2 * BATCH_FROM - 1  # each copy (ocm_datagrams_sent_total)
            assert_received(peers, [[b"batched", b"plain"]] * (BATCH_FROM - 1) + [[b"batched"]])


@needs_sendmmsg
@pytest.mark.parametrize("taken", [2, 0, -1], ids=["partial", "none", "error"])
def test_what_sendmmsg_refuses_goes_to_the_transport_in_order(taken: int) -> None:
    with bound_socket() as out, sockets(5) as peers:
        transport = FakeTransport(out)
        with connected(transport) as endpoint:
            kernel = kernel_of(endpoint, (taken,))
            room = addresses_of(peers)

            endpoint.send_to(b"hello", room)

            assert len(kernel.calls) == 1
            rest = room[max(taken, 0) :]
            assert transport.sent == [(b"hello", address) for address in rest]
            assert_received(peers, [[b"hello"]] * 5)  # each once: none lost, none twice
            assert endpoint.sent == 5  # by the socket and by the transport, each once


@needs_sendmmsg
def test_once_anything_is_queued_everything_goes_through_the_transport() -> None:
    with bound_socket() as out, sockets(5) as peers:
        transport = FakeTransport(out)
        with connected(transport) as endpoint:
            kernel = kernel_of(endpoint, (2,))
            room = addresses_of(peers)
            transport.holding = True  # the socket buffer is full: the transport queues

            endpoint.send_to(b"one", room)  # members 0 and 1 now, 2 to 4 queued
            endpoint.send_to(b"two", room)  # to the queue, behind "one"
            endpoint.send_to(b"three", room[3:])  # a small room, to the queue too

            assert len(kernel.calls) == 1
            assert [data for data, _ in transport.sent] == [b"one"] * 3 + [b"two"] * 5 + [
                b"three"
            ] * 2
            transport.flush()
            assert_received(peers, [[b"one", b"two"]] * 3 + [[b"one", b"two", b"three"]] * 2)

            endpoint.send_to(b"four", room)  # drained: back to the socket
            assert len(kernel.calls) == 2
            assert len(transport.sent) == 10
            assert_received(peers, [[b"four"]] * 5)


class RefusingSocket:
    """The endpoint's socket, refusing the sendto calls the test names."""

    def __init__(self, sock: socket.socket, refusals: dict[int, OSError]) -> None:
        self.sock = sock
        self.refusals = refusals  # call number -> what that call raises
        self.calls = 0

    def sendto(self, data: bytes, address: Address) -> int:
        self.calls += 1
        refusal = self.refusals.get(self.calls)
        if refusal is not None:
            raise refusal
        return self.sock.sendto(data, address)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("refused", [1, 2], ids=["first", "second"])
def test_what_plain_sendto_refuses_goes_to_the_transport_in_order(
    monkeypatch: pytest.MonkeyPatch, refused: int
) -> None:
    with bound_socket() as out, sockets(2) as peers:
        transport = FakeTransport(out)
        with connected(transport) as endpoint:
            assert endpoint._sock is not None
            full = RefusingSocket(endpoint._sock, {refused: BlockingIOError()})
            monkeypatch.setattr(endpoint, "_sock", full)
            room = addresses_of(peers)
            transport.holding = True  # what the socket refused, the transport queues

            endpoint.send_to(b"one", room)  # the refused member and any after it: queued
            endpoint.send_to(b"two", room)  # behind them in the queue

            assert full.calls == refused  # no sendto after a refusal
            assert transport.sent == [(b"one", a) for a in room[refused - 1 :]] + [
                (b"two", a) for a in room
            ]
            transport.flush()
            assert_received(peers, [[b"one", b"two"]] * 2)


def test_an_error_on_one_plain_sendto_costs_that_copy_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with bound_socket() as out, sockets(2) as peers:
        transport = FakeTransport(out)
        with connected(transport) as endpoint:
            assert endpoint._sock is not None
            unreachable = OSError("network is unreachable")
            monkeypatch.setattr(endpoint, "_sock", RefusingSocket(endpoint._sock, {1: unreachable}))
            errors: list[Exception] = []
            monkeypatch.setattr(endpoint, "error_received", errors.append)

            endpoint.send_to(b"one", addresses_of(peers))

            assert errors == [unreachable]
            assert transport.sent == []  # not retried: the transport would fail the same way
            assert_received(peers, [[], [b"one"]])
            assert endpoint.sent == 1  # the refused copy is not counted sent


@needs_sendmmsg
async def test_refusals_by_the_kernel_cost_only_the_refused_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real transport and real refusals: port 0 is EINVAL. First in the room, sendmmsg
    returns -1; in the middle, the count before it."""
    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(
        new_endpoint, local_addr=(LOOPBACK, 0)
    )
    errors: list[Exception] = []
    monkeypatch.setattr(endpoint, "error_received", errors.append)
    try:
        kernel = kernel_of(endpoint)
        with sockets(4) as peers:
            good = addresses_of(peers)
            bad = (LOOPBACK, 0)

            endpoint.send_to(b"bad first", (bad, *good))
            endpoint.send_to(b"bad between", (*good[:2], bad, *good[2:]))

            assert [len(call) for call in kernel.calls] == [5, 5]
            assert len(errors) == 2 and all(isinstance(e, OSError) for e in errors)
            want = [[b"bad first", b"bad between"]] * 4
            assert await asyncio.to_thread(received, peers, want) == want
    finally:
        transport.close()


class NoSendmmsg:
    """A C library without sendmmsg."""

    def __init__(self, name: str | None) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


SIMULATIONS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "macos": lambda m: m.setattr(sys, "platform", "darwin"),
    "musl": lambda m: m.setattr(platform, "libc_ver", lambda *a, **k: ("", "")),
    "no-sendmmsg": lambda m: m.setattr(ctypes, "PyDLL", NoSendmmsg),
}


@pytest.mark.parametrize("simulated", SIMULATIONS)
def test_without_sendmmsg_the_endpoint_relays_with_plain_sendto(
    monkeypatch: pytest.MonkeyPatch, simulated: str
) -> None:
    with bound_socket() as out, sockets(5) as peers:
        transport = FakeTransport(out)
        endpoint = new_endpoint()
        with monkeypatch.context() as patch:
            SIMULATIONS[simulated](patch)
            endpoint.connection_made(transport)
        try:
            assert endpoint._batch is None

            endpoint.send_to(b"one", addresses_of(peers))
            endpoint.send_to(b"two", addresses_of(peers))

            assert transport.sent == []  # straight to the socket all the same
            assert_received(peers, [[b"one", b"two"]] * 5)
        finally:
            endpoint.connection_lost(None)


@pytest.mark.parametrize("simulated", ["windows", "no-socket"])
def test_where_the_endpoint_cannot_own_the_socket_the_transport_sends_all(
    monkeypatch: pytest.MonkeyPatch, simulated: str
) -> None:
    with bound_socket() as out, sockets(5) as peers:
        transport = FakeTransport(out)
        endpoint = new_endpoint()
        with monkeypatch.context() as patch:
            if simulated == "windows":
                patch.setattr(sys, "platform", "win32")
            else:
                patch.setattr(transport, "get_extra_info", lambda name, default=None: None)
            endpoint.connection_made(transport)
        try:
            room = addresses_of(peers)

            endpoint.send_to(b"one", room)
            endpoint.send_to(b"two", room[:2])

            assert transport.sent == [(b"one", a) for a in room] + [(b"two", a) for a in room[:2]]
            assert_received(peers, [[b"one", b"two"]] * 2 + [[b"one"]] * 3)
        finally:
            endpoint.connection_lost(None)


def test_a_closing_transport_sends_nothing() -> None:
    with bound_socket() as out, sockets(3) as peers:
        transport = FakeTransport(out)
        with connected(transport) as endpoint:
            transport.is_closing = lambda: True  # type: ignore[method-assign]

            endpoint.send_to(b"late", addresses_of(peers))

            assert transport.sent == []
            assert_received(peers, [[]] * 3)


# -- the real server ----------------------------------------------------------------


def holds(queue: asyncio.Queue[bytes], count: int) -> Callable[[], bool]:
    return lambda: queue.qsize() >= count


def relayed(core: RelayCore, count: int) -> Callable[[], bool]:
    return lambda: core.relayed >= count


async def room_of(server: Any, size: int) -> list[Member]:
    members = [await enter(server, CreateRoom("lobby", "m0"))]
    for index in range(1, size):
        members.append(await enter(server, JoinRoom("lobby", f"m{index}")))
    for index, member in enumerate(members):  # the notices of those who joined later
        queue = member.peer.received
        await until(holds(queue, size - 1 - index))
        while not queue.empty():
            queue.get_nowait()
    return members


async def messages(member: Member, count: int) -> list[ServerDatagram]:
    got = [await member.peer.recv() for _ in range(count)]
    return got + await member.peer.drain(20 * MS)


async def test_an_exception_in_the_core_costs_one_datagram(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server() as server:
        members = await room_of(server, 3)
        answer = server.relay.answer

        def fragile(data: bytes, address: Address, now: float) -> Any:
            if data.endswith(b"boom"):
                raise RuntimeError("a bug in the core")
            return answer(data, address, now)

        server.relay.answer = fragile  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="ocm.server.udp"):
            members[0].say("before")
            members[1].say("boom")
            members[2].say("after")

            for member in members:
                got = await messages(member, 2)
                assert [(m.kind, m.sender, m.text) for m in got] == [
                    (Kind.MESSAGE, "m0", "before"),
                    (Kind.MESSAGE, "m2", "after"),
                ]
                assert got[1].seq == got[0].seq + 1
        assert [r.getMessage() for r in caplog.records] == [
            "unexpected error handling a datagram from 127.0.0.1"
        ]
        assert server._endpoint.failed == 1  # ocm_datagrams_dropped_total{reason="server_error"}


def count_sends(endpoint: RelayEndpoint) -> tuple[list[int], list[int]]:
    """Copies sent by sendmmsg (per call, where there is a batch) and by the transport."""
    by_sendmmsg: list[int] = []
    by_transport: list[int] = []
    batch = endpoint._batch
    if batch is not None:
        real = batch._sendmmsg

        def counted(fd: int, pointer: int, count: int, flags: int) -> int:
            done = real(fd, pointer, count, flags)
            by_sendmmsg.append(max(done, 0))
            return done

        batch._sendmmsg = counted
    transport = endpoint.transport
    assert transport is not None
    sendto = transport.sendto

    def counted_sendto(data: Any, addr: Any = None) -> None:
        by_transport.append(1)
        sendto(data, addr)

    transport.sendto = counted_sendto  # type: ignore[method-assign]
    return by_sendmmsg, by_transport


async def test_a_room_of_five_gets_200_quick_messages_once_each_in_seq_order() -> None:
    assert BATCH_FROM <= 5  # the room is batched where sendmmsg is to be had
    async with running_server() as server:
        members = await room_of(server, 5)
        by_sendmmsg, by_transport = count_sends(server._endpoint)
        sent = [f"line {index} from m{index % 5}" for index in range(200)]
        for burst in range(0, 200, 50):  # bursts well inside a default receive buffer
            for index in range(burst, burst + 50):
                members[index % 5].say(sent[index])
            await until(relayed(server.relay, burst + 50))

        for member in members:
            got = await messages(member, 200)
            assert [m.text for m in got] == sent  # each once, in the order sent
            assert all(m.kind is Kind.MESSAGE for m in got)
            seqs = [m.seq for m in got]
            assert seqs == list(range(seqs[0], seqs[0] + 200))
        assert sum(by_sendmmsg) + len(by_transport) == 200 * 5
        if sys.platform == "linux" and server._endpoint._batch is not None:
            assert by_sendmmsg and all(count == 5 for count in by_sendmmsg)


@needs_sendmmsg
@needs_dual_stack
async def test_a_dual_stack_server_batches_to_ipv4_members() -> None:
    async with running_server(host="::") as server:
        members = await room_of(server, 3)
        by_sendmmsg, _ = count_sends(server._endpoint)

        members[1].say("over a dual-stack socket")

        for member in members:
            got = await messages(member, 1)
            assert [(m.sender, m.text) for m in got] == [("m1", "over a dual-stack socket")]
        assert by_sendmmsg == [3]


class _FullTransport:
    """A transport whose queue already holds almost MAX_QUEUED_BYTES."""

    def __init__(self, queued: int) -> None:
        self.queued = queued
        self.sent: list[tuple[bytes, Any]] = []

    def get_write_buffer_size(self) -> int:
        return self.queued

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, address: Any) -> None:
        self.sent.append((data, address))
        self.queued += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_a_full_send_queue_drops_copies_instead_of_growing() -> None:
    endpoint = RelayEndpoint(RelayCore(RoomRegistry()), lambda: 0.0)
    datagram = b"x" * 1000
    transport = _FullTransport(MAX_QUEUED_BYTES - 2500)  # room for two more copies
    endpoint.connection_made(transport)  # type: ignore[arg-type]
    addresses = tuple(("127.0.0.1", port) for port in range(40000, 40010))

    endpoint.send_to(datagram, addresses)

    assert [address for _, address in transport.sent] == list(addresses[:2])
    assert endpoint.dropped == 8
    assert endpoint.sent == 2
    assert transport.get_write_buffer_size() <= MAX_QUEUED_BYTES
