"""Unit tests of ocm.server.relay: the UDP core with a real registry and time passed in.

Datagrams go in as bytes with a source address, :class:`Outgoing` comes out; every
reply is decoded with ocm.wire to check kind, Seq, sender and text.
"""

from __future__ import annotations

import pytest

from ocm.server.guards import ErrorReplyLimiter
from ocm.server.registry import Address, Member, Outgoing, RoomRegistry
from ocm.server.relay import Refused, RelayCore
from ocm.wire import (
    MAX_DATAGRAM,
    ClientDatagram,
    Kind,
    ServerDatagram,
    decode_server_datagram,
    encode_client_datagram,
)

IP = "127.0.0.1"
OTHER_IP = "127.0.0.2"
ALICE = (IP, 40001)
BOB = (OTHER_IP, 40002)


class Room:
    """A relay with one room: alice (host, 127.0.0.1) and bob (127.0.0.2), both registered."""

    def __init__(self, *, alice: str = "alice", error_rate: float = 5.0) -> None:
        self.registry = RoomRegistry(idle_timeout=60.0)
        self.relay = RelayCore(self.registry, ErrorReplyLimiter(rate=error_rate))
        self.alice = self.registry.create_room("lobby", alice, None, IP, 0.0)
        self.bob, joined = self.registry.join_room("lobby", "bob", None, OTHER_IP, 0.0)
        assert decode_server_datagram(joined[0].datagram).seq == 1
        assert self.send(self.alice, ALICE, "") == []
        assert self.send(self.bob, BOB, "") == []

    def send(
        self, member: Member, address: Address, text: str | bytes, now: float = 1.0
    ) -> list[Outgoing]:
        return self.relay.datagram_received(datagram(member, text), address, now)


def datagram(member: Member, text: str | bytes = "", room: str | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return encode_client_datagram(ClientDatagram(room or member.room.name, member.token)) + raw


def only(outgoing: list[Outgoing]) -> tuple[ServerDatagram, tuple[Address, ...]]:
    assert len(outgoing) == 1, outgoing
    return decode_server_datagram(outgoing[0].datagram), outgoing[0].addresses


@pytest.fixture
def room() -> Room:
    return Room()


# ---------------------------------------------------------------------------
# relaying and heartbeats
# ---------------------------------------------------------------------------


def test_chat_is_relayed_to_every_member_with_consecutive_seq(room: Room) -> None:
    sent, addresses = only(room.send(room.alice, ALICE, "hello ☕"))
    assert sent == ServerDatagram(Kind.MESSAGE, 2, "alice", "hello ☕")
    assert set(addresses) == {ALICE, BOB}  # the sender gets its own copy
    sent, addresses = only(room.send(room.bob, BOB, "hi"))
    assert sent == ServerDatagram(Kind.MESSAGE, 3, "bob", "hi")
    assert set(addresses) == {ALICE, BOB}
    sent, _ = only(room.send(room.alice, ALICE, "again"))
    assert sent.seq == 4
    assert room.relay.relayed == 3
    assert room.relay.rejected == 0


def test_relayed_bytes_are_exact(room: Room) -> None:
    outgoing = room.send(room.bob, BOB, "hi")
    assert outgoing[0].datagram == b"\x01\x00\x00\x00\x02\x03bobhi"


def test_heartbeat_registers_and_is_not_relayed() -> None:
    registry = RoomRegistry()
    relay = RelayCore(registry)
    alice = registry.create_room("lobby", "alice", None, IP, 0.0)
    assert alice.address is None
    assert relay.datagram_received(datagram(alice), ALICE, 5.0) == []
    assert alice.address == ALICE
    assert alice.last_seen == 5.0
    assert alice.room.addresses == (ALICE,)
    assert relay.datagram_received(datagram(alice), ALICE, 7.0) == []
    assert alice.last_seen == 7.0
    assert registry.next_deadline() == 67.0
    assert relay.relayed == 0
    assert alice.room.seq == 0  # a heartbeat takes no sequence number


def test_a_chat_message_also_refreshes_the_member(room: Room) -> None:
    room.send(room.bob, BOB, "still here", now=30.0)
    assert room.bob.last_seen == 30.0


def test_new_port_from_the_same_ip_replaces_the_address(room: Room) -> None:
    moved = (OTHER_IP, 50000)
    assert room.send(room.bob, moved, "") == []
    assert room.bob.address == moved
    _, addresses = only(room.send(room.alice, ALICE, "where are you"))
    assert set(addresses) == {ALICE, moved}
    # A chat datagram from a third port moves it again.
    _, addresses = only(room.send(room.bob, (OTHER_IP, 50001), "here"))
    assert set(addresses) == {ALICE, (OTHER_IP, 50001)}


def test_valid_token_from_another_ip_is_refused(room: Room) -> None:
    data = datagram(room.bob, "i am bob, honest")
    seen = room.bob.last_seen
    outgoing = room.relay.datagram_received(data, (IP, 40009), 2.0)
    reply, addresses = only(outgoing)
    assert reply.kind is Kind.ERROR
    assert reply.seq == 0
    assert addresses == ((IP, 40009),)
    assert len(outgoing[0].datagram) <= len(data)
    assert room.bob.address == BOB  # not hijacked
    assert room.bob.last_seen == seen
    assert room.registry.rooms["lobby"].seq == 1  # nothing relayed


def test_ipv4_mapped_source_is_the_same_ip(room: Room) -> None:
    mapped = ("::ffff:127.0.0.2", 40002)
    sent, _ = only(room.send(room.bob, mapped, "dual stack"))
    assert sent.kind is Kind.MESSAGE
    assert room.bob.address == mapped


def test_token_for_another_room_is_refused(room: Room) -> None:
    room.registry.create_room("other", "oscar", None, IP, 0.0)
    data = datagram(room.alice, "wrong room", room="other")
    reply, _ = only(room.relay.datagram_received(data, ALICE, 1.0))
    assert reply == ServerDatagram(Kind.ERROR, 0, "", "unknown token for this room")


def test_closed_room_tokens_stop_working(room: Room) -> None:
    room.registry.leave("lobby", room.alice.token, IP, 0.0)
    reply, _ = only(room.send(room.bob, BOB, "anyone?", now=3.0))
    assert reply.kind is Kind.ERROR


# ---------------------------------------------------------------------------
# Seq across NOTICE, MESSAGE and CLOSED
# ---------------------------------------------------------------------------


def test_seq_is_consecutive_across_all_room_datagrams(room: Room) -> None:
    carol, joined = room.registry.join_room("lobby", "carol", None, IP, 1.0)
    room.send(carol, (IP, 40003), "")
    stream = [*joined]
    stream += room.send(room.alice, ALICE, "hi carol")
    stream += room.registry.leave("lobby", carol.token, IP, 0.0)
    stream += room.send(room.bob, BOB, "bye carol")
    stream += room.registry.leave("lobby", room.alice.token, IP, 0.0)
    decoded = [decode_server_datagram(o.datagram) for o in stream]
    assert [(d.kind, d.seq) for d in decoded] == [
        (Kind.NOTICE, 2),
        (Kind.MESSAGE, 3),
        (Kind.NOTICE, 4),
        (Kind.MESSAGE, 5),
        (Kind.CLOSED, 6),
    ]


def test_relayed_seq_wraps(room: Room) -> None:
    room.registry.rooms["lobby"].seq = 2**32 - 2
    seqs = [only(room.send(room.alice, ALICE, "x"))[0].seq for _ in range(3)]
    assert seqs == [2**32 - 1, 1, 2]


# ---------------------------------------------------------------------------
# refusals and reflection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x05\x05lobbyguess",  # unknown token, 12 bytes
        b"\x05\x05lobbyguess" + b"x" * 100,
        b"\x01\x01xy",  # 4 bytes: too short for even a bare ERROR header
        b"\x00\x00",
        b"\x01",
        b"",
        b"\x00\x05lobby",
        b"\xff\xff" + b"x" * 20,  # sizes past the end
        b"\x01\x01rt" + b"x" * MAX_DATAGRAM,  # too large
    ],
)
def test_unauthenticated_reply_is_never_larger_than_the_datagram(room: Room, data: bytes) -> None:
    source = ("10.9.8.7", 1234)
    outgoing = room.relay.datagram_received(data, source, 1.0)
    if len(data) < 6:
        assert outgoing == []
    else:
        assert len(outgoing) == 1
        assert outgoing[0].addresses == (source,)
        assert len(outgoing[0].datagram) <= len(data)
        assert outgoing[0].datagram[:6] == b"\x04\x00\x00\x00\x00\x00"  # ERROR, Seq 0
    assert room.relay.rejected == 1
    assert room.relay.relayed == 0


def test_error_text_is_cut_to_the_datagram_size(room: Room) -> None:
    source = ("10.9.8.7", 1234)
    reply, _ = only(room.relay.datagram_received(b"\x01\x01xyz123", source, 1.0))
    assert reply == ServerDatagram(Kind.ERROR, 0, "", "un")
    reply, _ = only(room.relay.datagram_received(b"\x01\x01xy" + b"z" * 200, source, 1.0))
    assert reply.text == "unknown token for this room"


def test_error_reply_names_the_problem(room: Room) -> None:
    source = ("10.9.8.7", 1234)
    data = b"\x01\x01rt" + b"x" * MAX_DATAGRAM
    reply, _ = only(room.relay.datagram_received(data, source, 1.0))
    assert reply.text == f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}"


def test_error_replies_are_capped_per_source_ip_and_refill() -> None:
    room = Room(error_rate=5.0)
    guess = b"\x05\x05lobbyguess"
    attacker = ("10.0.0.1", 1000)

    def replies(source: Address, now: float, count: int) -> int:
        return sum(len(room.relay.datagram_received(guess, source, now)) for _ in range(count))

    assert replies(attacker, 10.0, 100) == 5
    # Another port of the same IP shares the cap; another IP has its own.
    assert replies(("10.0.0.1", 1001), 10.0, 10) == 0
    assert replies(("10.0.0.2", 1000), 10.0, 10) == 5
    # Refilled at 5 per second (times exact in binary floating point).
    assert replies(attacker, 10.25, 10) == 1
    assert replies(attacker, 10.75, 10) == 2
    assert replies(attacker, 20.0, 10) == 5
    assert room.relay.rejected == 100 + 10 + 10 + 10 + 10 + 10
    # Members keep chatting meanwhile.
    sent, _ = only(room.send(room.alice, ALICE, "still fine", now=20.0))
    assert sent.seq == 2


def test_error_reply_limiter_defaults_are_bounded() -> None:
    limiter = RelayCore(RoomRegistry()).errors
    assert limiter.max_tracked <= 100_000
    assert 1.0 <= limiter.rate <= 10.0  # "a few per second per source address"


def test_error_reply_limiter_is_bounded() -> None:
    limiter = ErrorReplyLimiter(rate=1.0, max_tracked=10)
    for i in range(1000):
        assert limiter.allow(f"10.1.{i // 256}.{i % 256}", 0.0)
        assert len(limiter._buckets) <= 10
    # A remembered IP is still capped; a forgotten one starts afresh.
    assert not limiter.allow("10.1.3.231", 0.0)
    assert limiter.allow("10.1.0.0", 0.0)


def test_error_reply_limiter_bucket_does_not_overfill() -> None:
    limiter = ErrorReplyLimiter(rate=3.0)
    assert limiter.allow("a", 0.0)
    # An hour of silence buys 3 replies, not 10,800.
    assert [limiter.allow("a", 3600.0) for _ in range(5)] == [True, True, True, False, False]


def test_too_long_relayed_text_is_refused() -> None:
    name = "n" * 200  # a long sender name leaves less room for the text
    room = Room(alice=name)
    limit = MAX_DATAGRAM - 6 - len(name)
    outgoing = room.send(room.alice, ALICE, "x" * limit)
    sent, addresses = only(outgoing)
    assert sent == ServerDatagram(Kind.MESSAGE, 2, name, "x" * limit)
    assert len(outgoing[0].datagram) == MAX_DATAGRAM
    assert set(addresses) == {ALICE, BOB}

    reply, addresses = only(room.send(room.alice, ALICE, "x" * (limit + 1)))
    assert reply == ServerDatagram(Kind.ERROR, 0, "", f"message too long: max {limit} bytes")
    assert addresses == (ALICE,)  # only the sender hears about it, never cut or split
    assert room.relay.refused[Refused.TOO_LONG] == 1 == room.relay.rejected
    # The refused message took no sequence number.
    sent, _ = only(room.send(room.bob, BOB, "next"))
    assert sent.seq == 3


@pytest.mark.parametrize("text", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\x80"])
def test_invalid_utf8_text_is_refused(room: Room, text: bytes) -> None:
    reply, addresses = only(room.send(room.alice, ALICE, text))
    assert reply == ServerDatagram(Kind.ERROR, 0, "", "message text is not valid UTF-8")
    assert addresses == (ALICE,)
    assert room.relay.relayed == 0
    sent, _ = only(room.send(room.alice, ALICE, "fine"))
    assert sent.seq == 2


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"\xff" * 4096, b"\x05\x05lobby\xff\xff\xff", b"\x05\x20lobby" + b"A" * 32],
)
def test_a_malformed_datagram_does_not_affect_the_next(room: Room, garbage: bytes) -> None:
    room.relay.datagram_received(garbage, ALICE, 1.0)
    sent, addresses = only(room.send(room.alice, ALICE, "after garbage"))
    assert sent == ServerDatagram(Kind.MESSAGE, 2, "alice", "after garbage")
    assert set(addresses) == {ALICE, BOB}
    assert room.alice.address == ALICE
    assert room.registry.list_rooms()[0].members == 2


def test_each_refusal_is_counted_under_its_reason(room: Room) -> None:
    """RelayCore.refused says why each datagram was refused (ocm_datagrams_dropped_total),
    and its reasons add up to ``rejected``."""
    stranger = ("10.0.0.9", 1000)
    room.relay.datagram_received(b"\x05\x05lobbyguess", stranger, 1.0)  # a guessed token
    room.relay.datagram_received(b"\x01\x01rt" + b"x" * MAX_DATAGRAM, stranger, 1.0)
    room.relay.datagram_received(b"\x05\x20lobby", stranger, 1.0)  # token past the end
    room.send(room.alice, ALICE, b"\xff")
    room.send(room.alice, ALICE, "relayed")
    assert {reason: n for reason, n in room.relay.refused.items() if n} == {
        Refused.UNKNOWN_TOKEN: 1,
        Refused.TOO_LARGE: 1,
        Refused.MALFORMED: 1,
        Refused.NOT_UTF8: 1,
    }
    assert sum(room.relay.refused.values()) == room.relay.rejected == 4
    assert set(room.relay.refused) == set(Refused)  # every reason, from 0: a steady series
