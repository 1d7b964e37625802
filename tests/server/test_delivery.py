"""Unit tests of the delivery extension on the server (docs/protocol.md, section 3):
the relay and the registry with delivery members, time passed in, no sockets.

Each test drives RelayCore with encoded datagrams from a source address and decodes
what comes out with ocm.wire.delivery.
"""

from __future__ import annotations

import asyncio

import pytest

from ocm.client.exchange import read_message
from ocm.server.guards import ErrorReplyLimiter
from ocm.server.history import HELD_BYTES, HELD_MESSAGES, PENDING
from ocm.server.registry import Address, Member, Outgoing, RoomRegistry
from ocm.server.relay import RESTARTED_RATE, Refused, RelayCore
from ocm.wire import (
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    Left,
    ServerDatagram,
    decode_server_datagram,
    encode_client_datagram,
    encode_request,
)
from ocm.wire.delivery import (
    Accepted,
    Chat,
    Data,
    Departed,
    Extended,
    Leave,
    Lost,
    Ping,
    Received,
    Repair,
    Restarted,
    Status,
    decode_received,
    encode_extended,
)
from ocm.wire.texts import ServerShutdown
from tests.kit import LOOPBACK, MS, TcrpConnection, UdpPeer, admit, call, running_server

IP = "127.0.0.1"
OTHER_IP = "127.0.0.2"
ALICE = (IP, 40001)
BOB = (OTHER_IP, 40002)
CAROL = (IP, 40003)
BOOT = bytes.fromhex("0011223344556677")


class Room:
    """A relay with "lobby": alice (host) and bob speak delivery, carol (optional)
    version 1; everyone registered (one datagram each)."""

    def __init__(self, *, carol: bool = False, **registry: int | float) -> None:
        self.registry = RoomRegistry(idle_timeout=60.0, boot=BOOT, **registry)  # type: ignore[arg-type]
        self.relay = RelayCore(self.registry, ErrorReplyLimiter(rate=1000.0))
        self.alice = self.registry.create_room("lobby", "alice", None, IP, 0.0, delivery=True)
        self.bob, _ = self.registry.join_room("lobby", "bob", None, OTHER_IP, 0.0, delivery=True)
        self.ping(self.alice, ALICE)
        self.ping(self.bob, BOB)
        self.carol: Member | None = None
        if carol:
            self.carol, _ = self.registry.join_room("lobby", "carol", None, IP, 0.0)
            v1 = encode_client_datagram(ClientDatagram("lobby", self.carol.token))
            assert self.relay.datagram_received(v1, CAROL, 0.0) == []

    def send(self, datagram: Extended, source: Address, now: float = 1.0) -> list[Outgoing]:
        return self.relay.datagram_received(encode_extended(datagram), source, now)

    def ping(self, member: Member, source: Address, nonce: int = 1) -> Status:
        (status,) = replies(self.send(Ping(member.token, nonce, BOOT), source))
        assert isinstance(status, Status) and status.nonce == nonce
        return status

    def say(self, member: Member, source: Address, msg_no: int, text: str) -> list[Outgoing]:
        return self.send(Data(member.token, msg_no, text), source)


def replies(outgoing: list[Outgoing]) -> list[Received]:
    return [decode_received(out.datagram) for out in outgoing]


def test_a_message_is_relayed_once_however_often_it_arrives() -> None:
    room = Room()
    (chat,) = room.say(room.alice, ALICE, 1, "hi")
    assert decode_received(chat.datagram) == Chat(2, "alice", 1, "hi")  # Seq 1: bob joined
    assert set(chat.addresses) == {ALICE, BOB}
    for _ in range(3):  # the retransmissions, or the network's duplicates
        (accepted,) = room.say(room.alice, ALICE, 1, "hi")
        assert decode_received(accepted.datagram) == Accepted(2, 1)
        assert accepted.addresses == (ALICE,)
    assert (room.registry.rooms["lobby"].seq, room.relay.relayed, room.relay.duplicates) == (
        2,
        1,
        3,
    )


def test_each_members_lines_keep_their_order() -> None:
    """Message 2 overtook message 1 on the way: it waits, and the room sees 1 then 2."""
    room = Room()
    assert room.say(room.bob, BOB, 2, "second") == []
    assert room.say(room.bob, BOB, 2, "second") == []  # a copy of the waiting one
    assert replies(room.say(room.bob, BOB, 1, "first")) == [
        Chat(2, "bob", 1, "first"),
        Chat(3, "bob", 2, "second"),
    ]
    assert replies(room.say(room.bob, BOB, 2, "second")) == [Accepted(3, 2)]


def test_a_refused_line_does_not_hold_up_the_next() -> None:
    room = Room()
    name = "n" * 200  # a long name: a DATA that fits can make a CHAT that does not
    long, _ = room.registry.join_room("lobby", name, None, IP, 1.0, delivery=True)
    too_long = "x" * (4096 - 3 - len(long.token) - 4)
    assert room.say(long, ALICE, 2, "after") == []  # waits for 1
    out = replies(room.say(long, ALICE, 1, too_long))
    assert out[0] == Chat(3, name, 2, "after")
    assert isinstance(out[1], ServerDatagram) and (out[1].kind, out[1].seq) == (Kind.ERROR, 1)


def test_a_refused_message_is_refused_again_never_confirmed() -> None:
    """Its ERROR may be lost: a resend must get the ERROR again, not ACCEPTED."""
    room = Room()
    long, _ = room.registry.join_room("lobby", "n" * 200, None, IP, 1.0, delivery=True)
    too_long = "x" * (4096 - 3 - len(long.token) - 4)
    for _ in range(2):
        (error,) = replies(room.say(long, ALICE, 1, too_long))
        assert isinstance(error, ServerDatagram) and (error.kind, error.seq) == (Kind.ERROR, 1)


def test_a_refusal_that_cannot_wait_is_not_answered_so_it_is_sent_again() -> None:
    """Message 1 lost, 2..33 waiting (the limit), 34 refused: with no room to remember
    the refusal, the server says nothing, the sender resends 34, and nothing stalls."""
    room = Room()
    name = "n" * 200
    long, _ = room.registry.join_room("lobby", name, None, IP, 1.0, delivery=True)
    too_long = "x" * (4096 - 3 - len(long.token) - 4)
    for n in range(2, 2 + HELD_MESSAGES):
        assert room.say(long, ALICE, n, f"m{n}") == []
    assert room.say(long, ALICE, 2 + HELD_MESSAGES, too_long) == []  # no room: silence
    assert room.relay.not_held == 1  # counted (ocm_datagrams_dropped_total)
    released = replies(room.say(long, ALICE, 1, "m1"))
    assert [r.msg_no for r in released if isinstance(r, Chat)] == list(range(1, 2 + HELD_MESSAGES))
    (error,) = replies(room.say(long, ALICE, 2 + HELD_MESSAGES, too_long))  # the resend
    assert isinstance(error, ServerDatagram) and error.kind is Kind.ERROR
    assert replies(room.say(long, ALICE, 3 + HELD_MESSAGES, "next")) != []  # not stalled


def test_early_arrivals_are_bounded_per_member_and_in_all() -> None:
    room = Room()
    assert room.registry.held_bytes == 0
    room.say(room.bob, BOB, 2, "x" * 100)
    assert room.registry.held_bytes == 100
    room.say(room.bob, BOB, 1, "y")
    assert room.registry.held_bytes == 0
    room.say(room.bob, BOB, 4, "x" * 100)
    room.send(Leave(room.bob.token), BOB)  # what bob had waiting is let go
    assert room.registry.held_bytes == 0


def test_early_arrivals_are_bounded() -> None:
    room = Room()
    assert all(room.say(room.bob, BOB, n, "x" * 2000) == [] for n in range(2, 20))
    log = room.bob.relayed
    assert log is not None and log.held_bytes <= HELD_BYTES and len(log.held) <= HELD_MESSAGES
    assert room.say(room.bob, BOB, 1000, "far ahead") == [] and 1000 not in log.held


def test_a_mixed_room_gets_chat_and_message() -> None:
    room = Room(carol=True)
    assert room.carol is not None
    out = room.say(room.alice, ALICE, 1, "hi")
    by_kind = {decode_received(o.datagram).__class__: o for o in out}
    assert decode_received(by_kind[Chat].datagram) == Chat(3, "alice", 1, "hi")
    assert set(by_kind[Chat].addresses) == {ALICE, BOB}
    assert decode_server_datagram(by_kind[ServerDatagram].datagram) == ServerDatagram(
        Kind.MESSAGE, 3, "alice", "hi"
    )
    assert by_kind[ServerDatagram].addresses == (CAROL,)
    # And carol's version 1 message reaches everyone as one MESSAGE, which delivery
    # members read too (a CHAT would not fit a line at the version 1 limit).
    v1 = encode_client_datagram(ClientDatagram("lobby", room.carol.token, "yo"))
    (message,) = room.relay.datagram_received(v1, CAROL, 1.0)
    assert decode_received(message.datagram) == ServerDatagram(Kind.MESSAGE, 4, "carol", "yo")
    assert set(message.addresses) == {ALICE, BOB, CAROL}


def test_a_ping_is_answered_with_the_latest_seq() -> None:
    room = Room()
    room.say(room.bob, BOB, 1, "a")
    room.say(room.bob, BOB, 2, "b")
    assert room.ping(room.alice, ALICE, nonce=77) == Status(3, 77)


def test_a_ping_from_an_earlier_incarnation_is_told_restarted() -> None:
    room = Room()
    # Any token, a boot that is not ours: the server restarted since that member joined.
    ping = encode_extended(Ping("x" * 32, 5, bytes(8)))
    (reply,) = replies(room.relay.datagram_received(ping, ("10.0.0.1", 5), 1.0))
    assert isinstance(reply, Restarted)
    assert len(room.relay.datagram_received(ping, ("10.0.0.1", 5), 1.0)[0].datagram) <= len(ping)


def test_restarted_reaches_a_whole_office_behind_one_address() -> None:
    """150 clients behind one NAT address all learn it within a second; the version 1
    ERROR budget (5 a second) would have told 5."""
    room = Room()
    told = 0
    for n in range(150):
        ping = encode_extended(Ping(f"{n:032d}", 1, bytes(8)))
        told += len(room.relay.datagram_received(ping, ("10.0.0.1", 1000 + n), 0.5))
    assert told == min(150, int(RESTARTED_RATE))
    assert RESTARTED_RATE >= 100


def test_a_repair_sends_the_datagrams_again_as_first_sent() -> None:
    room = Room()
    for n in range(1, 4):
        room.say(room.bob, BOB, n, f"m{n}")
    out = room.send(Repair(room.alice.token, ((2, 2), (4, 10))), ALICE)
    assert [o.addresses for o in out] == [(ALICE,)] * 3
    assert replies(out) == [
        Chat(2, "bob", 1, "m1"),
        Chat(3, "bob", 2, "m2"),
        Chat(4, "bob", 3, "m3"),  # and nothing for Seqs 5 to 13: not sent yet
    ]
    # The join NOTICE (Seq 1) comes back as it was.
    (notice,) = replies(room.send(Repair(room.alice.token, ((1, 1),)), ALICE))
    assert notice == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")


def test_a_repair_of_forgotten_seqs_is_answered_lost() -> None:
    room = Room(history_messages=3)
    for n in range(1, 7):  # Seqs 2..7; the history keeps 5, 6, 7
        room.say(room.bob, BOB, n, f"m{n}")
    out = replies(room.send(Repair(room.alice.token, ((1, 6),)), ALICE))
    assert out == [Lost(1, 4), Chat(5, "bob", 4, "m4"), Chat(6, "bob", 5, "m5")]


def test_repairs_are_paced_and_the_work_is_bounded() -> None:
    room = Room(repair_rate=5)
    for n in range(1, 21):
        room.say(room.bob, BOB, n, "x")
    ask = Repair(room.alice.token, ((1, 0xFFFF),) * 64)  # millions of Seqs asked
    assert len(room.send(ask, ALICE, now=2.0)) == 5  # the burst
    assert room.send(ask, ALICE, now=2.0) == []  # spent
    assert len(room.send(ask, ALICE, now=2.5)) == 2  # 5 a second


def test_a_member_can_fetch_what_came_before_it_entered() -> None:
    room = Room()
    room.say(room.alice, ALICE, 1, "before dave")
    dave, _ = room.registry.join_room("lobby", "dave", None, IP, 2.0, delivery=True)
    # Dave has sent nothing yet: the server does not know his address, but he can ask.
    out = room.send(Repair(dave.token, ((1, 3),)), ("127.0.0.1", 40009), now=3.0)
    texts = [r.text for r in replies(out)]  # type: ignore[union-attr]
    assert texts == ["bob joined", "before dave", "dave joined"]


def test_departed_says_how_far_a_relayed_members_messages_went() -> None:
    """With ``relayed``: bob's 1 and 2 were relayed, 4 waits for the lost 3. DEPARTED
    says 2, every time it is asked; 4 is dropped with bob, never relayed; a resend of 3
    after the leave finds no member."""
    room = Room()
    room.registry.grant_relayed(room.bob)
    room.say(room.bob, BOB, 1, "one")
    room.say(room.bob, BOB, 2, "two")
    assert room.say(room.bob, BOB, 4, "four") == []  # waits for 3
    seq = room.registry.rooms["lobby"].seq
    out = room.send(Leave(room.bob.token), BOB)
    assert replies(out) == [Departed(2), ServerDatagram(Kind.NOTICE, seq + 1, "", "bob left")]
    assert replies(room.send(Leave(room.bob.token), BOB)) == [Departed(2)]
    assert replies(room.say(room.bob, BOB, 3, "three")) == [Departed(2)]
    assert room.registry.rooms["lobby"].seq == seq + 1  # nothing of bob's after "two"


def test_a_message_still_in_a_clusters_queue_makes_relayed_unknown() -> None:
    """A cluster node hands a message to its store before it is numbered, and the
    store may still refuse it: until then DEPARTED cannot say it was relayed."""
    room = Room()
    room.registry.grant_relayed(room.bob)
    assert room.bob.relayed is not None
    room.bob.relayed.dealt_with(PENDING)  # message 1, queued for Redis
    assert replies(room.send(Leave(room.bob.token), BOB))[0] == Departed(None)


def test_a_relayed_member_that_said_nothing_departs_with_zero() -> None:
    room = Room()
    room.registry.grant_relayed(room.bob)
    assert replies(room.send(Leave(room.bob.token), BOB))[0] == Departed(0)


def test_relayed_is_granted_only_with_delivery() -> None:
    room = Room(carol=True)
    assert room.carol is not None
    with pytest.raises(ValueError, match="only with delivery"):
        room.registry.grant_relayed(room.carol)


def test_leave_is_confirmed_every_time_it_arrives() -> None:
    room = Room()
    out = room.send(Leave(room.bob.token), BOB)
    assert replies(out) == [Departed(), ServerDatagram(Kind.NOTICE, 2, "", "bob left")]
    assert out[0].addresses == (BOB,)
    # The DEPARTED was lost: bob asks again, and is told again, and nobody else hears.
    assert replies(room.send(Leave(room.bob.token), BOB)) == [Departed()]
    # From another address, the token is just unknown.
    (error,) = replies(room.send(Leave(room.bob.token), ("10.9.9.9", 1)))
    assert isinstance(error, ServerDatagram) and error.kind is Kind.ERROR


def test_a_closed_rooms_members_are_told_closed_again_and_again() -> None:
    room = Room(closed_resend_interval=0.2)
    room.registry.deadline_moved = False
    out = room.send(Leave(room.alice.token), ALICE, now=5.0)  # the host leaves
    assert room.registry.deadline_moved  # the adapter must re-arm for the copies
    closed = ServerDatagram(Kind.CLOSED, 2, "", "host alice left; the room is closed")
    assert replies(out) == [Departed(), closed]
    # Bob missed it; his next datagram is answered with the room's CLOSED.
    (again,) = replies(room.say(room.bob, BOB, 1, "anyone?"))
    assert again == closed
    # And the registry sends it again, every 0.2 s until 1.4 s: eight copies in all.
    registry = room.registry
    assert registry.next_deadline() == pytest.approx(5.2)
    (first,) = registry.expire(5.2)
    assert decode_received(first.datagram) == closed and set(first.addresses) == {ALICE, BOB}
    for n in range(2, 8):
        due = registry.next_deadline()
        assert due is not None and due == pytest.approx(5.0 + 0.2 * n)
        assert len(registry.expire(due)) == 1
    assert registry.next_deadline() is None


def test_shutdown_resends_closed_to_delivery_members_only() -> None:
    room = Room(carol=True, closed_resend_interval=0.1)
    (closed,) = room.registry.close_all(ServerShutdown(), 3.0)
    assert set(closed.addresses) == {ALICE, BOB, CAROL}
    assert room.registry.next_deadline() == 3.1
    (again,) = room.registry.expire(3.1)
    assert set(again.addresses) == {ALICE, BOB}  # version 1 gets version 1: one copy


def test_a_version_1_room_keeps_no_history() -> None:
    registry = RoomRegistry(idle_timeout=60.0)
    registry.create_room("old", "alice", None, IP, 0.0)
    registry.join_room("old", "bob", None, IP, 0.0)
    assert registry.rooms["old"].history is None
    registry.join_room("old", "carol", None, IP, 0.0, delivery=True)
    history = registry.rooms["old"].history
    assert history is not None and len(history) == 0  # from carol's entry on


def test_gone_tokens_are_forgotten_after_the_idle_timeout() -> None:
    room = Room()
    room.send(Leave(room.bob.token), BOB, now=1.0)
    room.registry.expire(61.0)
    (error,) = replies(room.send(Leave(room.bob.token), BOB, now=61.0))
    assert isinstance(error, ServerDatagram) and error.kind is Kind.ERROR


def test_a_too_long_message_is_refused_with_its_number() -> None:
    """A CHAT carries the sender's name: with a long name, a DATA that fits can make a
    CHAT that does not."""
    room = Room()
    name = "n" * 200
    long, _ = room.registry.join_room("lobby", name, None, IP, 1.0, delivery=True)
    text = "x" * (4096 - 3 - len(long.token) - 4)
    (error,) = replies(room.say(long, ALICE, 7, text))
    assert isinstance(error, ServerDatagram) and error.kind is Kind.ERROR
    assert error.seq == 7 and error.text.startswith("message too long: max ")


def test_strangers_get_no_more_bytes_than_they_sent() -> None:
    room = Room()
    for datagram in (
        Data("t" * 8, 1, "x"),
        Repair("t", ((1, 1),)),
        Leave("t"),
        Ping("t" * 20, 1, BOOT),
    ):
        data = encode_extended(datagram)
        for out in room.relay.datagram_received(data, ("10.0.0.7", 9), 1.0):
            assert len(out.datagram) <= len(data)
    for data in (b"\x00", b"\x00\x01", b"\x00\x09\x01t", b"\x00\x01\x05tok"):
        for out in room.relay.datagram_received(data, ("10.0.0.7", 9), 1.0):
            assert len(out.datagram) <= len(data)


def test_a_version_1_member_cannot_speak_the_extension() -> None:
    room = Room(carol=True)
    assert room.carol is not None
    (error,) = replies(room.send(Ping(room.carol.token, 1, BOOT), CAROL))
    assert isinstance(error, ServerDatagram) and error.kind is Kind.ERROR


def test_malformed_bodies_from_a_member_are_refused_and_the_relay_goes_on() -> None:
    room = Room()
    token = room.alice.token.encode()
    for body in (b"\x00\x01\x20" + token, b"\x00\x02\x20" + token + b"\x00"):
        (error,) = replies(room.relay.datagram_received(body, ALICE, 1.0))
        assert error == ServerDatagram(Kind.ERROR, 0, "", "malformed extended datagram")
    # An unknown Type is dropped and counted (shared PROTOCOL.md, section 3).
    assert room.relay.datagram_received(b"\x00\x07\x20" + token, ALICE, 1.0) == []
    assert room.relay.unknown == 1
    assert room.relay.refused[Refused.MALFORMED] == 2
    assert replies(room.say(room.alice, ALICE, 1, "still here")) == [
        Chat(2, "alice", 1, "still here")
    ]


# ---------------------------------------------------------------------------
# Over real sockets
# ---------------------------------------------------------------------------


async def test_delivery_is_granted_to_those_who_ask_and_v1_stays_byte_exact() -> None:
    async with running_server() as server:
        asked = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, ("delivery",)))
        assert (asked.features, asked.seq, asked.history) == (("delivery",), 0, 1024)
        assert asked.boot == server.registry.boot.hex()
        plain = TcrpConnection(*await asyncio.open_connection(LOOPBACK, server.tcp_port))
        try:
            plain.writer.write(encode_request(JoinRoom("lobby", "bob")))
            await plain.writer.drain()
            await plain.replies.next()  # the ACK
            message = await read_message(plain.reader, plain.replies.framer)
        finally:
            await plain.close()
        # Version 1: exactly the fields of section 1 and OCM's idle_timeout.
        assert set(message.payload) == {"token", "udp_port", "host", "members", "idle_timeout"}
        unknown = await admit(server.tcp_port, JoinRoom("lobby", "carol", None, ("teleport",)))
        assert unknown.features == () and unknown.seq is None


async def test_a_delivery_member_over_udp() -> None:
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, ("delivery",)))
        boot = bytes.fromhex(alice.boot or "")
        peer = await UdpPeer.open(alice.udp_port)
        try:
            peer.send_raw(encode_extended(Ping(alice.token, 9, boot)))
            assert decode_received(await peer.recv_raw()) == Status(0, 9)
            peer.send_raw(encode_extended(Data(alice.token, 1, "hi")))
            assert decode_received(await peer.recv_raw()) == Chat(1, "alice", 1, "hi")
            peer.send_raw(encode_extended(Data(alice.token, 1, "hi")))
            assert decode_received(await peer.recv_raw()) == Accepted(1, 1)
            peer.send_raw(encode_extended(Leave(alice.token)))
            assert decode_received(await peer.recv_raw()) == Departed()
            closed = decode_received(await peer.recv_raw())
            assert isinstance(closed, ServerDatagram) and closed.kind is Kind.CLOSED
        finally:
            peer.close()
        assert server.registry.rooms == {}


async def test_shutdown_tells_delivery_members_eight_times() -> None:
    async with running_server(closed_resend_interval=20 * MS) as server:
        bob = await admit(server.tcp_port, CreateRoom("lobby", "bob", None, ("delivery",)))
        peer = await UdpPeer.open(bob.udp_port)
        try:
            peer.send_raw(encode_extended(Ping(bob.token, 1, bytes.fromhex(bob.boot or ""))))
            await peer.recv_raw()  # STATUS
            await server.close()
            copies = [decode_received(await peer.recv_raw()) for _ in range(8)]
            assert copies == [ServerDatagram(Kind.CLOSED, 1, "", "server shutting down")] * 8
        finally:
            peer.close()


async def test_shutdown_copies_keep_their_schedule_while_the_store_closes() -> None:
    """A slow close of what the server holds (a cluster's store, a hash under way) must
    not bunch the CLOSED copies together: bunched, they are lost together."""
    async with running_server(closed_resend_interval=50 * MS) as server:
        bob = await admit(server.tcp_port, CreateRoom("lobby", "bob", None, ("delivery",)))
        peer = await UdpPeer.open(bob.udp_port)
        close_store = server.backend.close

        async def slow_close() -> None:
            await asyncio.sleep(600 * MS)
            await close_store()

        server.backend.close = slow_close  # type: ignore[method-assign]
        try:
            peer.send_raw(encode_extended(Ping(bob.token, 1, bytes.fromhex(bob.boot or ""))))
            await peer.recv_raw()  # STATUS
            loop = asyncio.get_running_loop()
            started = loop.time()
            closing = asyncio.create_task(server.close())
            arrivals = []
            for _ in range(8):
                await peer.recv_raw(2000 * MS)
                arrivals.append(loop.time() - started)
            await closing
            # On schedule, 50 ms apart: the fourth copy is due at 150 ms, long before the
            # store is closed (600 ms).
            assert arrivals[3] < 450 * MS, arrivals
        finally:
            peer.close()


async def test_a_host_leaving_over_udp_gets_its_closed_copies_on_time() -> None:
    """The datagram that closed the room brought the registry's deadline closer: the
    server re-arms its timer, so the copies do not wait for the next idle deadline."""
    async with running_server(closed_resend_interval=20 * MS) as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, ("delivery",)))
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery",)))
        boot = bytes.fromhex(alice.boot or "")
        host, member = await UdpPeer.open(alice.udp_port), await UdpPeer.open(bob.udp_port)
        try:
            for peer, who in ((host, alice), (member, bob)):
                peer.send_raw(encode_extended(Ping(who.token, 1, boot)))
                await peer.recv_raw()  # STATUS
            host.send_raw(encode_extended(Leave(alice.token)))
            copies = [decode_received(await member.recv_raw(500 * MS)) for _ in range(8)]
            assert {c.kind for c in copies if isinstance(c, ServerDatagram)} == {Kind.CLOSED}
            assert len(copies) == 8
        finally:
            host.close()
            member.close()


async def test_leave_room_says_how_far_a_relayed_members_messages_went() -> None:
    """The real server: ``relayed`` is granted to whoever asks with delivery, and its
    LEAVE_ROOM's COMPLETE carries the number; anyone else's is as in version 1."""
    async with running_server() as server:
        features = ("delivery", "relayed")
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, features))
        assert alice.features == features
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery",)))
        assert bob.features == ("delivery",)
        peer = await UdpPeer.open(alice.udp_port)
        try:
            peer.send_raw(encode_extended(Data(alice.token, 1, "hi")))
            assert isinstance(decode_received(await peer.recv_raw()), Chat)
        finally:
            peer.close()
        _, left = await call(server.tcp_port, LeaveRoom("lobby", bob.token))
        assert left == Left("lobby", None)
        _, left = await call(server.tcp_port, LeaveRoom("lobby", alice.token))
        assert left == Left("lobby", 1)
