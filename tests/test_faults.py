"""The fault proxy (tests/faults.py) does what it says, against a real server on loopback.

Each fault is checked end to end (a raw client, the proxy, a real OCMServer, and back)
or against a tiny fake server where the server's side must be seen exactly; the
decision function and the udp_port rewrite are also tested alone.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ocm.client import ChatClient, Gap, Message
from ocm.server.app import OCMServer
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Admission,
    CreateRoom,
    JoinRoom,
    Kind,
    ListRooms,
    Operation,
    RoomList,
    State,
    TcrpMessage,
    TcrpReader,
    encode_header,
    encode_tcrp,
    parse_reply,
)
from tests.faults import (
    PLAINTEXT,
    TUNNEL,
    Counters,
    Decision,
    FaultProxy,
    Faults,
    ReplyRewriter,
    decide,
    rewrite_udp_port,
)
from tests.kit import (
    LOOPBACK,
    MS,
    Member,
    RawStream,
    TcrpConnection,
    UdpPeer,
    admit,
    call,
    has_loopback_alias,
    ready,
    running_server,
    settle,
    until,
)

Address = tuple[str, int]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


_PEERS: list[UdpPeer] = []


@pytest.fixture(autouse=True)
async def _close_peers() -> AsyncIterator[None]:
    """Every peer a test opened is closed after it, passed or failed."""
    yield
    while _PEERS:
        _PEERS.pop().close()
    await asyncio.sleep(0)  # the transports finish closing on the next loop turn


async def open_peer(proxy: FaultProxy) -> UdpPeer:
    """A raw UDP client of the proxy, closed after the test."""
    peer = await UdpPeer.open(proxy.udp_port)
    _PEERS.append(peer)
    return peer


async def enter_via(proxy: FaultProxy, server: OCMServer, request: CreateRoom | JoinRoom) -> Member:
    """Create or join through the proxy's TCP port, then register through its UDP port."""
    admission = await admit(proxy.tcp_port, request)
    assert admission.udp_port == proxy.udp_port != server.udp_port
    member = Member(admission, await open_peer(proxy))
    await member.registered(server)
    return member


def local_address(peer: UdpPeer) -> Address:
    assert peer.transport is not None
    host, port = peer.transport.get_extra_info("sockname")[:2]
    return (host, port)


def server_address(server: OCMServer, member: Member) -> Any:
    """Where the server sends this member's datagrams."""
    return server.registry.by_token[member.token.encode()].address


async def messages(peer: UdpPeer, count: int, timeout: float = 2000 * MS) -> list[str]:
    """The texts of the next ``count`` MESSAGE datagrams (NOTICEs skipped)."""
    texts: list[str] = []
    async with asyncio.timeout(timeout):
        while len(texts) < count:
            datagram = await peer.recv(timeout)
            if datagram.kind is Kind.MESSAGE:
                texts.append(datagram.text)
    return texts


class Echo(asyncio.DatagramProtocol):
    """A fake UDP server: records each datagram's source and echoes it back."""

    def __init__(self) -> None:
        self.sources: list[Address] = []
        self.data: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sources.append((addr[0], addr[1]))
        self.data.append(data)
        assert self.transport is not None
        self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port


@asynccontextmanager
async def echo_server() -> AsyncIterator[Echo]:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(Echo, local_addr=(LOOPBACK, 0))
    try:
        yield echo
    finally:
        transport.close()


RESUME = 6  # the TCRP operation byte; the wire's Operation enum may not have it yet
MOVED_HOST = "127.0.0.3"  # where move() takes the proxy: not kit.OTHER_HOST, a client's


def frame(datagram: bytes) -> bytes:
    """A relay datagram as a tunnel carries it: its size (uint16, big-endian), then it."""
    return len(datagram).to_bytes(2, "big") + datagram


async def read_frame(stream: RawStream) -> bytes:
    """One frame as the proxy passes it, cut by its uint16 size by hand: FrameReader
    would refuse the empty frame these tests send to show nothing is judged."""
    size = int.from_bytes(await stream.exactly(2), "big")
    return await stream.exactly(size)


class FakeTcp:
    """A fake server's TCP side: notes the host each connection comes from and echoes
    every TCRP message back as it came, until a TUNNEL request. That gets an ok ACK and
    a COMPLETE, written at once with ``after_complete``; then every byte is echoed."""

    def __init__(self, after_complete: bytes = b"") -> None:
        self.after_complete = after_complete
        self.peers: asyncio.Queue[str] = asyncio.Queue()
        self.port = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.peers.put_nowait(writer.get_extra_info("peername")[0])
        try:
            stream = RawStream(reader)  # cut raw: RESUME and TUNNEL echo as they came
            while (message := await stream.message())[1] != TUNNEL:
                writer.write(message)
            writer.write(
                hand_encoded("", TUNNEL, State.ACK, '{"status":"ok"}')
                + hand_encoded("", TUNNEL, State.COMPLETE, "{}")
                + self.after_complete
                + stream.take_rest()
            )
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the proxy went away
        finally:
            writer.close()
            self.tasks.discard(task)

    async def next_peer(self) -> str:
        async with asyncio.timeout(1000 * MS):
            return await self.peers.get()


@asynccontextmanager
async def fake_tcp(after_complete: bytes = b"") -> AsyncIterator[FakeTcp]:
    fake = FakeTcp(after_complete)
    listener = await asyncio.start_server(fake.serve, LOOPBACK, 0)
    fake.port = listener.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        listener.close()
        for task in fake.tasks:
            task.cancel()
        await asyncio.gather(*fake.tasks, return_exceptions=True)


# ---------------------------------------------------------------------------
# The decision function
# ---------------------------------------------------------------------------


def test_decisions_repeat_with_the_seed_and_keep_their_rates() -> None:
    faults = Faults(loss=0.5, duplicate=0.25, reorder=0.1, reorder_min=0.01, reorder_max=0.02)
    first = [decide(random.Random(42), faults) for _ in range(1)]
    rng_a, rng_b = random.Random(42), random.Random(42)
    run_a = [decide(rng_a, faults) for _ in range(2000)]
    run_b = [decide(rng_b, faults) for _ in range(2000)]
    assert run_a == run_b and run_a[0] == first[0]
    assert run_a != [decide(random.Random(43), faults) for _ in range(2000)]
    kept = [d for d in run_a if not d.drop]
    assert 900 <= len(kept) <= 1100  # loss 0.5 of 2000
    assert 150 <= sum(d.duplicate_after is not None for d in kept) <= 350
    held = [d for d in kept if d.reordered]
    assert 50 <= len(held) <= 150
    assert all(0.01 <= d.delay <= 0.02 for d in held)
    assert all(d.delay == 0 for d in kept if not d.reordered)


def test_each_datagram_draws_the_same_numbers_whatever_the_faults() -> None:
    """Turning duplicate or reorder on does not shift which datagrams are lost."""
    plain = [decide(random.Random(7), Faults(loss=0.3)) for _ in range(1)]
    rng_a, rng_b = random.Random(7), random.Random(7)
    lost_a = [decide(rng_a, Faults(loss=0.3)).drop for _ in range(500)]
    lost_b = [decide(rng_b, Faults(loss=0.3, duplicate=0.9, reorder=0.9)).drop for _ in range(500)]
    assert lost_a == lost_b and lost_a[0] == plain[0].drop
    always = random.Random(1)
    assert all(decide(always, Faults(loss=1.0)).drop for _ in range(500))
    assert not any(decide(always, Faults()).drop for _ in range(500))
    assert decide(always, Faults(duplicate=1.0, delay=0.2)) == Decision(False, 0.2, False, 0.201)


def test_faults_refuse_bad_values_even_at_run_time() -> None:
    faults = Faults(loss=0.1)
    for bad in ({"loss": 1.5}, {"duplicate": -0.1}, {"delay": 60.0}, {"reorder": float("nan")}):
        with pytest.raises(ValueError):
            Faults(**bad)
    with pytest.raises(ValueError):
        faults.loss = 2.0
    with pytest.raises(TypeError):
        faults.reorder = True
    assert faults.loss == 0.1
    assert Counters(received=3, dropped=1).as_dict()["dropped"] == 1


async def test_the_proxy_refuses_addresses_off_loopback() -> None:
    for host in ("192.0.2.1", "0.0.0.0", "localhost", "2001:db8::1"):
        with pytest.raises(ValueError, match="loopback"):
            async with FaultProxy.start(1, 2, seed=0, server_host=host):
                pass
    with pytest.raises(ValueError, match="loopback"):
        async with FaultProxy.start(1, 2, seed=0, host="10.0.0.1"):
            pass


# ---------------------------------------------------------------------------
# TCP: the udp_port rewrite
# ---------------------------------------------------------------------------


ADMISSION = {
    "token": "k3Vq9XbT0wZr6mJ2pL8sYc4nHd1fGa7e",
    "udp_port": 9001,
    "host": "alice",
    "members": ["alice"],
    "idle_timeout": 60.0,
    "future_field": {"nested": [1, "two", None]},
}


def hand_encoded(room: str, operation: int, state: int, payload_text: str) -> bytes:
    """A message whose JSON is spelled by hand (spaces and all), not by encode_tcrp."""
    room_bytes, payload = room.encode(), payload_text.encode()
    return encode_header(len(room_bytes), operation, state, len(payload)) + room_bytes + payload


def test_the_rewrite_changes_udp_port_only_and_keeps_unknown_fields() -> None:
    create = TcrpMessage(Operation.CREATE_ROOM, State.COMPLETE, "lobby", ADMISSION)
    changed = rewrite_udp_port(create, 4242)
    assert changed is not None
    assert changed.payload == {**ADMISSION, "udp_port": 4242}
    assert create.payload["udp_port"] == 9001  # the original is not touched
    join = TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", ADMISSION)
    assert rewrite_udp_port(join, 4242) is not None
    for untouched in (
        TcrpMessage(Operation.CREATE_ROOM, State.ACK, "lobby", {"status": "ok"}),
        TcrpMessage(Operation.LIST_ROOMS, State.COMPLETE, "", {"rooms": [], "udp_port": 1}),
        TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", {"token": "t"}),
    ):
        assert rewrite_udp_port(untouched, 4242) is None


def test_the_rewriter_passes_other_bytes_exactly_even_fed_a_byte_at_a_time() -> None:
    ack = hand_encoded("lobby", Operation.CREATE_ROOM, State.ACK, '{ "status" : "ok" }')
    complete = encode_tcrp(TcrpMessage(Operation.CREATE_ROOM, State.COMPLETE, "lobby", ADMISSION))
    listing = hand_encoded("", Operation.LIST_ROOMS, State.COMPLETE, '{"rooms": []}')
    stream = ack + complete + listing
    rewriter = ReplyRewriter(4242)
    out = b"".join(rewriter.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert rewriter.rewritten == 1
    assert out.startswith(ack) and out.endswith(listing)  # byte for byte
    framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
    framer.feed(out[len(ack) : len(out) - len(listing)])
    message = framer.next_message()
    assert message is not None and framer.next_message() is None
    assert message.payload == {**ADMISSION, "udp_port": 4242}
    admission = parse_reply(message)
    assert isinstance(admission, Admission) and admission.udp_port == 4242


def test_the_rewriter_passes_a_broken_stream_untouched() -> None:
    garbage = bytes([5, 1, 9]) + bytes(29) + b"lobby"  # state 9: not TCRP
    rewriter = ReplyRewriter(4242)
    assert rewriter.feed(garbage) == garbage
    assert rewriter.feed(b"more") == b"more"
    cut = encode_tcrp(TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", ADMISSION))[:40]
    other = ReplyRewriter(4242)
    assert other.feed(cut) == b""  # held until whole...
    assert other.flush() == cut  # ...or passed as it came when the stream ends


def test_the_rewriter_passes_resume_and_nothing_but_raw_bytes_after_a_tunnel() -> None:
    admission = encode_tcrp(TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", ADMISSION))
    resume = hand_encoded("lobby", RESUME, State.ACK, '{"status":"ok"}') + hand_encoded(
        "lobby", RESUME, State.COMPLETE, '{"secret": "s3cr3t", "seq": 12}'
    )
    refused = hand_encoded("", TUNNEL, State.ACK, '{"status":"error","error":"no"}')
    rewriter = ReplyRewriter(4242)
    out = rewriter.feed(resume + refused + admission)
    assert out.startswith(resume + refused)  # unchanged, and the stream is still read:
    assert rewriter.rewritten == 1 and not rewriter.tunnelled  # the admission after it
    tunnel = hand_encoded("", TUNNEL, State.ACK, '{"status":"ok"}') + hand_encoded(
        "", TUNNEL, State.COMPLETE, "{}"
    )
    # Datagrams that read like TCRP: an admission, framed and bare, and a broken header.
    after = frame(admission) + admission + bytes([0, 1, 9]) + admission[:40]
    stream = tunnel + after
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        rewriter = ReplyRewriter(4242)
        assert b"".join(rewriter.feed(chunk) for chunk in chunks) + rewriter.flush() == stream
        assert rewriter.tunnelled and rewriter.rewritten == 0


async def test_a_tunnel_passes_raw_both_ways_while_udp_is_blocked() -> None:
    admission = encode_tcrp(TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", ADMISSION))
    lookalike = frame(admission)  # sent in the same write as the COMPLETE
    async with (
        fake_tcp(after_complete=lookalike) as fake,
        FaultProxy.start(fake.port, 9, seed=13, drop_all_udp=True) as proxy,
    ):
        connection = await TcrpConnection.open(proxy.tcp_port)
        stream, writer = RawStream(connection.reader), connection.writer
        try:
            writer.write(hand_encoded("", TUNNEL, State.REQUEST, '{"token":"T"}'))
            async with asyncio.timeout(1000 * MS):
                ack, complete = await stream.message(), await stream.message()
                assert (ack[1], ack[2], complete[1], complete[2]) == (5, 1, 5, 2)
                assert await stream.exactly(len(lookalike)) == lookalike  # not rewritten
                for datagram in (admission, bytes(range(256)) * 4, b""):
                    writer.write(frame(datagram))
                    assert await read_frame(stream) == datagram
            assert proxy.tunnels == 1 and proxy.counters.up.received == 0
            proxy.blackhole()  # TCP stops, tunnel or not
            writer.write(frame(b"held"))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(50 * MS):
                    await stream.exactly(1)
            proxy.restore()
            async with asyncio.timeout(1000 * MS):
                assert await read_frame(stream) == b"held"
        finally:
            await connection.close()


async def test_an_unknown_field_survives_the_proxy_from_a_fake_server() -> None:
    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the request
        writer.write(
            hand_encoded("lobby", Operation.JOIN_ROOM, State.ACK, '{"status":"ok"}')
            + encode_tcrp(TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", ADMISSION))
        )
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(fake, LOOPBACK, 0)
    fake_port = listener.sockets[0].getsockname()[1]
    try:
        async with FaultProxy.start(fake_port, 9, seed=0) as proxy:
            ack, complete = await call(proxy.tcp_port, JoinRoom("lobby", "bob"))
            assert ack.ok
            assert isinstance(complete, Admission) and complete.udp_port == proxy.udp_port
            connection = await TcrpConnection.open(proxy.tcp_port)
            try:
                connection.writer.write(b"x")
                framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
                received: list[TcrpMessage] = []
                async with asyncio.timeout(1000 * MS):
                    while len(received) < 2:
                        framer.feed(await connection.reader.read(4096))
                        while (message := framer.next_message()) is not None:
                            received.append(message)
            finally:
                await connection.close()
            assert received[0].payload == {"status": "ok"}
            assert received[1].payload == {**ADMISSION, "udp_port": proxy.udp_port}
    finally:
        listener.close()


# ---------------------------------------------------------------------------
# UDP through a real server
# ---------------------------------------------------------------------------


async def test_a_clean_proxy_relays_everything_in_order_both_ways() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=1) as proxy,
    ):
        alice = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        bob = await enter_via(proxy, server, JoinRoom("lobby", "bob"))
        for member in (alice, bob):  # one upstream socket, one server-side address each
            client = local_address(member.peer)
            assert server_address(server, member) == (LOOPBACK, proxy.upstream_port(client))
        assert server_address(server, alice) != server_address(server, bob)
        texts = [f"m{i}" for i in range(50)]
        for text in texts:
            alice.say(text)
        assert await messages(bob.peer, 50) == texts
        assert await messages(alice.peer, 50) == texts
        up, down = proxy.counters.up, proxy.counters.down
        assert (up.received, up.forwarded, up.dropped) == (52, 52, 0)
        await until(lambda: down.forwarded == 100 + 1)  # two copies each, "bob joined"
        assert (down.dropped, down.duplicated, down.reordered, proxy.pending) == (0, 0, 0, 0)


async def test_the_library_client_works_through_the_proxy_and_sees_its_losses() -> None:
    """Version 1 clients (delivery=False) see the loss as a Gap; tests/test_delivery_faults.py
    shows delivery clients getting the same message back by repair."""
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=2) as proxy,
    ):
        alice = await ready(
            server,
            await ChatClient.create(
                proxy.address,
                "lobby",
                "alice",
                linger=50 * MS,
                confirm_timeout=200 * MS,
                delivery=False,
                security=PLAINTEXT,
            ),
        )
        bob = await ready(
            server,
            await ChatClient.join(
                proxy.address, "lobby", "bob", delivery=False, security=PLAINTEXT
            ),
        )
        async with alice, bob:
            assert alice.udp_port == proxy.udp_port
            await alice.send("hello")
            assert Message("alice", "hello", 2) in await settle(bob)
            proxy.down.loss = 1.0
            await alice.send("lost")
            await until(lambda: proxy.counters.down.dropped == 2)
            proxy.down.loss = 0.0
            await alice.send("after")
            events = await settle(bob)
            assert [type(e) for e in events] == [Gap, Message]
            assert events[1] == Message("alice", "after", 4)
            assert Message("alice", "hello", 2) in await settle(alice)


async def test_total_loss_delivers_nothing() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=3, loss=1.0) as proxy,
    ):
        admission = await admit(proxy.tcp_port, CreateRoom("lobby", "alice"))  # TCP: reliable
        member = Member(admission, await open_peer(proxy))
        member.heartbeat()
        for i in range(20):
            member.say(f"m{i}")
        await member.peer.expect_silence(100 * MS)
        assert server_address(server, member) is None
        assert proxy.counters.up.as_dict() == {
            "received": 21,
            "forwarded": 0,
            "dropped": 21,
            "duplicated": 0,
            "reordered": 0,
        }
        assert proxy.clients == ()  # nothing crossed, so no mapping was made


async def half_loss_run(seed: int) -> tuple[list[int], Counters]:
    """200 chat lines with up loss 0.5; which of them came back, and the up counters."""
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=seed) as proxy,
    ):
        member = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        proxy.up.loss = 0.5
        for i in range(200):
            member.say(str(i))
        up = proxy.counters.up
        await until(lambda: up.received == 201)  # the heartbeat and the 200 lines
        await until(lambda: proxy.counters.down.forwarded == up.forwarded - 1)
        delivered = [int(text) for text in await messages(member.peer, up.forwarded - 1)]
        await member.peer.expect_silence(30 * MS)
        return delivered, up


async def test_half_loss_drops_about_half_and_the_seed_repeats_the_choice() -> None:
    delivered, up = await half_loss_run(seed=42)
    assert 60 <= up.dropped <= 140
    assert len(delivered) == 200 - up.dropped == up.forwarded - 1
    assert delivered == sorted(delivered)  # loss alone does not reorder
    again, _ = await half_loss_run(seed=42)
    assert again == delivered
    other, _ = await half_loss_run(seed=43)
    assert other != delivered


async def test_duplicate_one_doubles_each_direction() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=4, duplicate=1.0) as proxy,
    ):
        member = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        for i in range(5):
            member.say(f"m{i}")
        texts = await messages(member.peer, 20)  # x2 up, then x2 down
        assert sorted(texts) == sorted(f"m{i}" for i in range(5) for _ in range(4))
        await member.peer.expect_silence(30 * MS)
        up, down = proxy.counters.up, proxy.counters.down
        assert (up.received, up.duplicated, up.forwarded) == (6, 6, 12)
        assert (down.received, down.duplicated, down.forwarded) == (10, 10, 20)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
async def test_an_ipv6_server_sees_the_proxy_from_its_own_loopback() -> None:
    async with (
        running_server(host="::1") as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=12, server_host="::1") as proxy,
    ):
        member = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        assert server_address(server, member)[:2] == ("::1", proxy.upstream_port(proxy.clients[0]))
        member.say("hi")
        assert await messages(member.peer, 1) == ["hi"]


async def test_reorder_lets_a_later_datagram_overtake() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=5) as proxy,
    ):
        member = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        proxy.up = Faults(reorder=1.0, reorder_min=80 * MS, reorder_max=80 * MS)
        member.say("first")
        await until(lambda: proxy.pending == 1)
        proxy.up.reorder = 0.0
        member.say("second")
        assert await messages(member.peer, 2) == ["second", "first"]
        assert proxy.counters.up.reordered == 1 and proxy.pending == 0


async def test_a_fixed_delay_delays_but_keeps_the_order() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=6) as proxy,
    ):
        member = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        proxy.down.delay = 40 * MS
        loop = asyncio.get_running_loop()
        started = loop.time()
        texts = [f"m{i}" for i in range(30)]
        for text in texts:
            member.say(text)
        await member.peer.expect_silence(20 * MS)
        assert await messages(member.peer, 30) == texts
        assert loop.time() - started >= 40 * MS


async def test_rebind_gives_the_server_a_new_source_port() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=7) as proxy,
    ):
        alice = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        bob = await enter_via(proxy, server, JoinRoom("lobby", "bob"))
        assert [d.text for d in await alice.peer.drain()] == ["bob joined"]
        client = local_address(alice.peer)
        before = proxy.upstream_port(client)
        assert server_address(server, alice) == (LOOPBACK, before)
        bob_port = proxy.upstream_port(local_address(bob.peer))
        proxy.rebind(client)
        after = proxy.upstream_port(client)
        assert after != before and proxy.upstream_port(local_address(bob.peer)) == bob_port
        bob.say("to the old mapping")  # the server still sends alice's copy to `before`
        assert await messages(bob.peer, 1) == ["to the old mapping"]
        await alice.peer.expect_silence(50 * MS)
        alice.heartbeat()  # the next datagram: the server takes the new port
        await until(lambda: server_address(server, alice) == (LOOPBACK, after))
        bob.say("to the new one")
        assert await messages(alice.peer, 1) == ["to the new one"]


async def test_blackhole_stops_udp_and_tcp_until_restored() -> None:
    async with (
        running_server() as server,
        FaultProxy.start(server.tcp_port, server.udp_port, seed=8) as proxy,
    ):
        member = await enter_via(proxy, server, CreateRoom("lobby", "alice"))
        connection = await TcrpConnection.open(proxy.tcp_port)  # open before the blackhole
        try:
            proxy.blackhole()
            assert proxy.blackholed
            member.say("into the void")
            await member.peer.expect_silence(50 * MS)
            assert proxy.counters.up.dropped == 1
            with pytest.raises(TimeoutError):  # a new connection: accepted, never answered
                async with asyncio.timeout(100 * MS):
                    await call(proxy.tcp_port, ListRooms())
            with pytest.raises(TimeoutError):  # an open one: stops forwarding
                async with asyncio.timeout(100 * MS):
                    await connection.call(ListRooms())
            proxy.restore()
            # The held request goes on once the path is back: nothing was lost.
            async with asyncio.timeout(1000 * MS):
                assert (await connection.replies.next()).ok  # type: ignore[union-attr]
                assert isinstance(await connection.replies.next(), RoomList)
        finally:
            await connection.close()
        ack, rooms = await call(proxy.tcp_port, ListRooms())
        assert ack.ok and isinstance(rooms, RoomList) and len(rooms.rooms) == 1
        member.say("back")
        assert await messages(member.peer, 1) == ["back"]


async def test_drop_all_udp_drops_every_datagram_while_set() -> None:
    async with (
        echo_server() as echo,
        FaultProxy.start(1, echo.port, seed=9, drop_all_udp=True) as proxy,
    ):
        peer = await open_peer(proxy)
        for _ in range(10):
            peer.send_raw(b"blocked")
        await peer.expect_silence(50 * MS)
        assert echo.data == [] and proxy.counters.up.dropped == 10
        proxy.drop_all_udp = False
        peer.send_raw(b"open")
        assert await peer.recv_raw() == b"open"


async def test_the_nat_gives_each_client_its_own_port_and_is_bounded() -> None:
    async with (
        echo_server() as echo,
        FaultProxy.start(1, echo.port, seed=10, max_clients=2) as proxy,
    ):
        peers = [await open_peer(proxy) for _ in range(3)]
        for i, peer in enumerate(peers):
            peer.send_raw(b"hello %d" % i)
            assert await peer.recv_raw() == b"hello %d" % i  # the echo found its client
        assert len(set(echo.sources)) == 3
        assert all(host == LOOPBACK for host, _ in echo.sources)
        assert proxy.clients == (local_address(peers[1]), local_address(peers[2]))
        assert proxy.evicted == 1
        ports = [proxy.upstream_port(c) for c in proxy.clients]
        proxy.rebind()
        assert all(proxy.upstream_port(c) != p for c, p in zip(proxy.clients, ports, strict=True))
        peers[2].send_raw(b"rebound")
        assert await peers[2].recv_raw() == b"rebound"
        assert echo.sources[-1][1] == proxy.upstream_port(local_address(peers[2]))
        for _ in range(5):  # again and again, before the new sockets are even open
            proxy.rebind()
        peers[1].send_raw(b"after")
        assert await peers[1].recv_raw() == b"after"
        assert echo.sources[-1][1] == proxy.upstream_port(local_address(peers[1]))
        assert len(set(echo.sources)) == 5  # each mapping a port of its own


async def test_close_cancels_pending_sends_and_closes_everything() -> None:
    async with echo_server() as echo:
        async with FaultProxy.start(1, echo.port, seed=11, delay=100 * MS) as proxy:
            proxy.up.duplicate = 1.0
            peer = await open_peer(proxy)
            for i in range(5):
                peer.send_raw(b"late %d" % i)
            await until(lambda: proxy.counters.up.received == 5)
            assert proxy.pending == 10  # five queued, five duplicate copies
            await proxy.close()
            assert proxy.closed and proxy.pending == 0
            await proxy.close()  # idempotent
        await asyncio.sleep(150 * MS)
        assert echo.data == [] and proxy.counters.up.forwarded == 0
        with pytest.raises(OSError):
            await asyncio.open_connection(LOOPBACK, proxy.tcp_port)


async def test_move_refuses_a_host_off_loopback_or_of_another_family() -> None:
    async with echo_server() as echo, FaultProxy.start(1, echo.port, seed=14) as proxy:
        for host in ("10.0.0.1", "0.0.0.0", "localhost", "::1"):
            with pytest.raises(ValueError, match=r"loopback|IPv4"):
                proxy.move(host)
        assert proxy.upstream_host == LOOPBACK
        proxy.move(LOOPBACK)  # to where it is: still drops the mappings
        peer = await open_peer(proxy)
        peer.send_raw(b"still here")
        assert await peer.recv_raw() == b"still here"


@pytest.mark.skipif(
    not has_loopback_alias(MOVED_HOST), reason=f"{MOVED_HOST} is not usable as loopback here"
)
async def test_move_makes_the_server_see_the_proxy_from_the_new_host() -> None:
    ping = hand_encoded("", Operation.LIST_ROOMS, State.REQUEST, "{}")  # FakeTcp echoes it
    async with (
        echo_server() as echo,
        fake_tcp() as fake,
        FaultProxy.start(fake.port, echo.port, seed=15) as proxy,
    ):
        peer = await open_peer(proxy)
        peer.send_raw(b"before")
        assert await peer.recv_raw() == b"before"
        old = await TcrpConnection.open(proxy.tcp_port)
        try:
            assert await fake.next_peer() == LOOPBACK
            proxy.move(MOVED_HOST)
            assert proxy.clients == () and proxy.upstream_host == MOVED_HOST
            peer.send_raw(b"after")  # a new mapping, from the new host
            assert await peer.recv_raw() == b"after"
            assert [host for host, _ in echo.sources] == [LOOPBACK, MOVED_HOST]
            assert echo.sources[-1][1] == proxy.upstream_port(local_address(peer))
            new = await TcrpConnection.open(proxy.tcp_port)
            try:
                assert await fake.next_peer() == MOVED_HOST
                for connection in (old, new):  # the old connection stays open
                    connection.writer.write(ping)
                    async with asyncio.timeout(1000 * MS):
                        assert await RawStream(connection.reader).message() == ping
            finally:
                await new.close()
        finally:
            await old.close()
        assert proxy.counters.up.dropped == 0
