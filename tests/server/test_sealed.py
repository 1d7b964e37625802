"""Sealed datagrams on the server (docs/protocol.md, section 5): the relay, the registry,
the TCRP handler's COMPLETE and the UDP endpoint, in process, time passed in, no sockets.

A :class:`Client` seals what it sends as the client library does (an extended datagram
of section 3, sealed whole with its member key) and opens what comes back with its own
room opener: each member has its own replay window, so a datagram meant for the whole
room must open once for each of them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocm.errors import ErrorCode, RoomError
from ocm.server.guards import ErrorReplyLimiter
from ocm.server.limits import Limits
from ocm.server.passwords import PasswordHash
from ocm.server.registry import CLOSED_RESENDS, Address, Member, Outgoing, RoomRegistry
from ocm.server.relay import Refused, RelayCore
from ocm.server.tcp import TcrpHandler
from ocm.server.udp import RelayEndpoint
from ocm.wire import ClientDatagram, Kind, ServerDatagram, encode_client_datagram
from ocm.wire.delivery import (
    DELIVERY,
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
from ocm.wire.sealed import (
    DOWN_HEADER_SIZE,
    KEY_ID_SIZE,
    KEY_SIZE,
    SEALED,
    SESSION_SIZE,
    UP_HEADER_SIZE,
    Refusal,
    Sealer,
    is_sealed_down,
    key_id_of,
    room_opener,
    up_prefix,
)
from ocm.wire.tcrp import (
    Admission,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    Resume,
    Resumed,
    Tunnel,
    Tunnelled,
    encode_reply,
    reply_message,
)
from ocm.wire.texts import RESTARTED_TEXT, ServerShutdown, UnknownToken, format_refusal
from ocm.wire.tunnel import RESUME, TUNNEL
from tests import strategies as ocm_st

IP = "127.0.0.1"
OTHER_IP = "127.0.0.2"
BOOT = bytes.fromhex("0011223344556677")
OTHER_BOOT = bytes.fromhex("8899aabbccddeeff")
UNKNOWN_TOKEN = format_refusal(UnknownToken())
IDLE = 60.0
RESEND = 1.0


class Client:
    """One sealed member as its client sees it: keys, a sealer, a room opener."""

    def __init__(self, member: Member, address: Address) -> None:
        assert member.session is not None
        self.member = member
        self.address = address
        self.sealer = Sealer(member.key, up_prefix(member.session))
        self.opener = room_opener(member.room.key)
        self.key_id = member.room.key_id
        self.msg_no = 0

    @property
    def token(self) -> str:
        return self.member.token

    def seal(self, datagram: Extended | bytes) -> bytes:
        inner = datagram if isinstance(datagram, bytes) else encode_extended(datagram)
        return self.sealer.seal(inner)

    def open(self, data: bytes) -> Received:
        """A datagram from the server, which must be sealed with the room key."""
        assert is_sealed_down(data), data
        assert key_id_of(data) == self.key_id
        inner = self.opener.open(data)
        assert not isinstance(inner, Refusal), inner
        return decode_received(inner)


class SealedRoom:
    """A relay with "lobby", a sealed room of ``size`` sealed delivery members, m0 the
    host, each on its own port of 127.0.0.1 and registered (a PING each)."""

    def __init__(self, size: int = 3, *, error_rate: float = 1000.0, **registry: Any) -> None:
        self.registry = RoomRegistry(
            idle_timeout=IDLE, boot=BOOT, closed_resend_interval=RESEND, **registry
        )
        self.relay = RelayCore(self.registry, ErrorReplyLimiter(rate=error_rate))
        host = self.registry.create_room("lobby", "m0", None, IP, 0.0, delivery=True, sealed=True)
        self.clients = [Client(host, (IP, 41000))]
        for index in range(1, size):
            member, _ = self.registry.join_room(
                "lobby", f"m{index}", None, IP, 0.0, delivery=True, sealed=True
            )
            self.clients.append(Client(member, (IP, 41000 + index)))
        self.room = self.registry.rooms["lobby"]
        for client in self.clients:
            status = self.ping(client)
            assert status.seq == self.room.seq
        assert self.room.sealer is not None

    def send(self, client: Client, datagram: Extended | bytes, now: float = 1.0) -> list[Outgoing]:
        return self.relay.datagram_received(client.seal(datagram), client.address, now)

    def ping(self, client: Client, nonce: int = 1, now: float = 1.0) -> Status:
        (out,) = self.send(client, Ping(client.token, nonce, BOOT), now)
        assert out.addresses == (client.address,)
        status = client.open(out.datagram)
        assert isinstance(status, Status) and status.nonce == nonce
        return status

    def say(self, client: Client, text: str, msg_no: int | None = None) -> list[Outgoing]:
        if msg_no is None:
            client.msg_no += 1
            msg_no = client.msg_no
        return self.send(client, Data(client.token, msg_no, text))

    @property
    def addresses(self) -> set[Address]:
        return {client.address for client in self.clients}

    def refused(self) -> dict[Refusal, int]:
        return {why: count for why, count in self.relay.sealed_refused.items() if count}


@pytest.fixture
def room() -> SealedRoom:
    return SealedRoom()


def everyone_opens(room: SealedRoom, out: Outgoing) -> Received:
    """``out`` goes to the whole room and opens alike for every member."""
    assert set(out.addresses) == room.addresses
    opened = {client.member.name: client.open(out.datagram) for client in room.clients}
    first = next(iter(opened.values()))
    assert all(value == first for value in opened.values()), opened
    return first


def plain(data: bytes) -> Received:
    assert not is_sealed_down(data)
    return decode_received(data)


# ---------------------------------------------------------------------------
# a chat line: opened, relayed, sealed once for the room
# ---------------------------------------------------------------------------


def test_a_chat_line_is_sealed_once_for_the_whole_room() -> None:
    room = SealedRoom(5)
    counter = room.room.sealer.counter  # type: ignore[union-attr]
    sender = room.clients[2]
    answer = room.relay.answer(
        sender.seal(Data(sender.token, 1, "secret plans")), sender.address, 1.0
    )
    # One datagram object and the room's address tuple: no copy per member.
    assert isinstance(answer, tuple)
    datagram, addresses = answer
    assert addresses is room.room.delivery_addresses and set(addresses) == room.addresses
    assert room.room.sealer.counter == counter + 1  # type: ignore[union-attr]
    assert b"secret plans" not in datagram and b"m2" not in datagram
    assert datagram[:DOWN_HEADER_SIZE] == bytes((16,)) + room.room.key_id + (counter + 1).to_bytes(
        8
    )
    # Every member opens it to the CHAT, the sender too: its own copy confirms message 1.
    for client in room.clients:
        assert client.open(datagram) == Chat(room.room.seq, "m2", 1, "secret plans")
    assert room.relay.relayed == 1


def test_chat_lines_through_datagram_received_carry_consecutive_counters(
    room: SealedRoom,
) -> None:
    seqs = []
    for text in ("one", "two", "three"):
        (out,) = room.say(room.clients[0], text)
        assert out.sealer is None  # sealed by the relay already: not to be sealed again
        chat = everyone_opens(room, out)
        assert isinstance(chat, Chat) and chat.text == text
        seqs.append(chat.seq)
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]


def test_the_slow_path_seals_each_line_it_releases(room: SealedRoom) -> None:
    """Message 2 overtook message 1: it waits; message 1 releases both, each sealed."""
    alice = room.clients[1]
    assert room.say(alice, "second", msg_no=2) == []
    counter = room.room.sealer.counter  # type: ignore[union-attr]
    first, second = room.say(alice, "first", msg_no=1)
    assert [everyone_opens(room, first), everyone_opens(room, second)] == [
        Chat(room.room.seq - 1, "m1", 1, "first"),
        Chat(room.room.seq, "m1", 2, "second"),
    ]
    assert room.room.sealer.counter == counter + 2  # type: ignore[union-attr]


def test_a_repeated_data_is_confirmed_sealed_to_its_sender_only(room: SealedRoom) -> None:
    bob = room.clients[1]
    (chat,) = room.say(bob, "hello", msg_no=1)
    seq = everyone_opens(room, chat).seq  # type: ignore[union-attr]
    (again,) = room.say(bob, "hello", msg_no=1)  # its copy was lost: sent again, anew
    assert again.addresses == (bob.address,)
    assert bob.open(again.datagram) == Accepted(seq, 1)
    assert room.relay.duplicates == 1 and room.relay.relayed == 1


def test_a_refused_line_is_answered_with_a_sealed_error(room: SealedRoom) -> None:
    bob = room.clients[1]
    token = bob.token.encode()
    inner = bytes((0, 1, len(token))) + token + (1).to_bytes(4) + b"\xff"  # not UTF-8
    (error,) = room.send(bob, inner)
    assert error.addresses == (bob.address,)
    reply = bob.open(error.datagram)
    assert isinstance(reply, ServerDatagram) and reply.kind is Kind.ERROR
    assert reply.seq == 1 and "UTF-8" in reply.text


# ---------------------------------------------------------------------------
# PING, REPAIR, LEAVE: answers to one member, sealed with the room key
# ---------------------------------------------------------------------------


def test_ping_is_answered_with_a_sealed_status(room: SealedRoom) -> None:
    carol = room.clients[2]
    (out,) = room.send(carol, Ping(carol.token, 77, BOOT), now=5.0)
    assert out.addresses == (carol.address,)
    assert carol.open(out.datagram) == Status(room.room.seq, 77)
    assert carol.member.last_seen == 5.0


def test_repairs_are_sealed_and_open_to_what_was_first_sent(room: SealedRoom) -> None:
    alice, bob = room.clients[0], room.clients[1]
    chats = [everyone_opens(room, room.say(alice, f"line {n}")[0]) for n in range(1, 4)]
    first = chats[0].seq  # type: ignore[union-attr]
    repairs = room.send(bob, Repair(bob.token, ((first, 3),)))
    assert [out.addresses for out in repairs] == [(bob.address,)] * 3
    counters = [out.datagram[DOWN_HEADER_SIZE - 8 : DOWN_HEADER_SIZE] for out in repairs]
    assert len(set(counters)) == 3  # each sealed anew: a Counter of its own
    # The repaired CHATs are the originals; bob's opener has seen those Counters already,
    # so the repairs are new datagrams, not the first ones sent again.
    assert [bob.open(out.datagram) for out in repairs] == chats


def test_a_repair_of_the_past_is_a_sealed_lost(room: SealedRoom) -> None:
    small = SealedRoom(2, history_messages=2)
    alice, bob = small.clients
    for n in range(5):
        small.say(alice, f"line {n}")
    latest = small.room.seq
    replies = small.send(bob, Repair(bob.token, ((1, latest),)))
    opened = [bob.open(out.datagram) for out in replies]
    assert opened[0] == Lost(1, latest - 2)
    assert [type(r) for r in opened[1:]] == [Chat, Chat]


def test_leave_is_answered_departed_and_the_room_told_sealed(room: SealedRoom) -> None:
    carol = room.clients[2]
    departed, notice = room.send(carol, Leave(carol.token), now=2.0)
    assert departed.addresses == (carol.address,)
    assert carol.open(departed.datagram) == Departed()
    rest = room.clients[:2]
    assert set(notice.addresses) == {c.address for c in rest}
    for client in rest:
        said = client.open(notice.datagram)
        assert isinstance(said, ServerDatagram) and said.kind is Kind.NOTICE
        assert "m2" in said.text
    assert carol.member.session not in room.registry.by_session


def test_a_gone_members_leave_again_is_still_opened_and_confirmed(room: SealedRoom) -> None:
    carol = room.clients[2]
    room.send(carol, Leave(carol.token), now=2.0)
    assert carol.member.session in room.registry.gone_sessions
    for now in (3.0, 2.0 + IDLE - 1):  # its DEPARTED was lost, and again
        (again,) = room.send(carol, Leave(carol.token), now=now)
        assert again.addresses == (carol.address,)
        assert carol.open(again.datagram) == Departed()
    # A replay of its LEAVE is still refused: the gone member keeps its window.
    replay = carol.seal(Leave(carol.token))
    assert room.relay.datagram_received(replay, carol.address, 4.0) != []
    assert room.relay.datagram_received(replay, carol.address, 4.0) == []
    assert room.refused() == {Refusal.REPLAYED: 1}
    # Once its token is forgotten, so is its Session: an unknown token, in clear.
    room.registry.expire(2.0 + IDLE + 1)
    assert carol.member.session not in room.registry.gone_sessions
    data = carol.seal(Leave(carol.token))
    (error,) = room.relay.datagram_received(data, carol.address, 2.0 + IDLE + 1)
    reply = plain(error.datagram)
    assert isinstance(reply, ServerDatagram) and reply.kind is Kind.ERROR


def test_a_gone_members_session_from_another_ip_is_unknown(room: SealedRoom) -> None:
    carol = room.clients[2]
    room.send(carol, Leave(carol.token), now=2.0)
    data = carol.seal(Leave(carol.token))
    (error,) = room.relay.datagram_received(data, (OTHER_IP, 41002), 3.0)
    assert plain(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)


# ---------------------------------------------------------------------------
# what the registry sends: NOTICE, CLOSED and its copies, sealed when sent
# ---------------------------------------------------------------------------


def test_a_join_notice_is_handed_over_with_the_room_sealer(room: SealedRoom) -> None:
    _, (notice,) = room.registry.join_room(
        "lobby", "dave", None, IP, 2.0, delivery=True, sealed=True
    )
    assert notice.sealer is room.room.sealer
    assert set(notice.addresses) == room.addresses
    assert plain(notice.datagram).kind is Kind.NOTICE  # type: ignore[union-attr]


def test_a_timed_out_members_notice_carries_the_sealer(room: SealedRoom) -> None:
    for client in room.clients[:2]:
        room.ping(client, now=IDLE - 1)
    outgoing = room.registry.expire(IDLE + 1.5)  # m2 was last heard at 1.0
    (notice,) = outgoing
    assert notice.sealer is room.room.sealer
    assert "timed out" in plain(notice.datagram).text  # type: ignore[union-attr]


def test_the_hosts_leave_closes_the_room_sealed_and_every_copy_is_sealed_anew(
    room: SealedRoom,
) -> None:
    host = room.clients[0]
    departed, closed = room.send(host, Leave(host.token), now=10.0)
    assert host.open(departed.datagram) == Departed()
    first = everyone_opens(room, closed)
    assert isinstance(first, ServerDatagram) and first.kind is Kind.CLOSED
    # The later copies come from the registry's schedule, unsealed, with the sealer.
    copies: list[bytes] = []
    for intervals in CLOSED_RESENDS:
        (again,) = room.registry.expire(10.0 + intervals * RESEND)
        assert again.sealer is room.room.sealer
        assert set(again.addresses) == room.addresses
        sealer = again.sealer
        assert sealer is not None
        copies.append(sealer.seal(again.datagram))
    assert len({copy[DOWN_HEADER_SIZE - 8 : DOWN_HEADER_SIZE] for copy in copies}) == 7
    for copy in copies:  # each copy opens (once) for every member, to the same CLOSED
        assert all(client.open(copy) == first for client in room.clients)
    # A member that missed it all asks: its token is answered with the CLOSED, sealed.
    bob = room.clients[1]
    (late,) = room.send(bob, Ping(bob.token, 3, BOOT), now=18.0)
    assert late.addresses == (bob.address,)
    assert bob.open(late.datagram) == first


# ---------------------------------------------------------------------------
# forged, replayed, malformed: dropped, counted, never answered
# ---------------------------------------------------------------------------


def test_an_altered_datagram_is_dropped_and_counted_forged(room: SealedRoom) -> None:
    bob = room.clients[1]
    seq, seen = room.room.seq, bob.member.last_seen
    sealed = bob.seal(Data(bob.token, 1, "hello"))
    for position in range(2, len(sealed)):  # Marker and Type name the path, not the key
        altered = bytearray(sealed)
        altered[position] ^= 0x20
        if position < UP_HEADER_SIZE - 8:  # the Session: another key, or none
            continue
        assert room.relay.datagram_received(bytes(altered), bob.address, 5.0) == []
    forged = len(sealed) - (UP_HEADER_SIZE - 8)
    assert room.refused() == {Refusal.FORGED: forged}
    assert room.relay.refused[Refused.SEALED_FORGED] == forged == room.relay.rejected
    assert (room.room.seq, bob.member.last_seen, room.relay.relayed) == (seq, seen, 0)
    (chat,) = room.relay.datagram_received(sealed, bob.address, 5.0)  # the genuine one
    assert isinstance(everyone_opens(room, chat), Chat)


@ocm_st.FAST
@given(st.binary(max_size=200), st.sampled_from([0, 1, 2]))
def test_a_datagram_that_does_not_open_is_never_answered(tail: bytes, who: int) -> None:
    """Anything after a member's clear header that its key does not open (a forger's
    bytes) is dropped: no answer, no Seq, no touch, the window unmoved."""
    room = SealedRoom(3)
    client = room.clients[who]
    seq, seen = room.room.seq, client.member.last_seen
    header = up_prefix(client.member.session or b"")
    for counter in (1, 2**40, 2**64 - 1):
        data = header + counter.to_bytes(8) + tail
        assert room.relay.datagram_received(data, client.address, 5.0) == []
    assert sum(room.relay.sealed_refused.values()) == 3
    assert (room.room.seq, client.member.last_seen) == (seq, seen)
    (status,) = room.send(client, Ping(client.token, 4, BOOT), now=6.0)  # Counter 2
    assert client.open(status.datagram) == Status(seq, 4)


def test_another_members_key_does_not_open(room: SealedRoom) -> None:
    alice, bob = room.clients[0], room.clients[1]
    # Bob's Session, alice's key: the server opens with bob's key, which fails.
    impostor = Sealer(alice.member.key, up_prefix(bob.member.session or b""))
    data = impostor.seal(encode_extended(Data(bob.token, 1, "it is me, bob")))
    assert room.relay.datagram_received(data, bob.address, 2.0) == []
    assert room.refused() == {Refusal.FORGED: 1}


def test_a_replayed_datagram_is_dropped_without_an_answer(room: SealedRoom) -> None:
    bob = room.clients[1]
    data = bob.seal(Data(bob.token, 1, "once"))
    assert len(room.relay.datagram_received(data, bob.address, 2.0)) == 1
    seq = room.room.seq
    # In clear this would be confirmed with ACCEPTED; sealed, a captured copy gets nothing.
    for _ in range(3):
        assert room.relay.datagram_received(data, bob.address, 3.0) == []
    ping = bob.seal(Ping(bob.token, 5, BOOT))
    assert len(room.relay.datagram_received(ping, bob.address, 3.0)) == 1
    assert room.relay.datagram_received(ping, bob.address, 3.0) == []
    assert room.refused() == {Refusal.REPLAYED: 4}
    assert room.relay.refused[Refused.SEALED_REPLAYED] == 4
    assert room.room.seq == seq and room.relay.duplicates == 0


def test_datagrams_that_crossed_on_the_way_are_each_taken_once(room: SealedRoom) -> None:
    bob = room.clients[1]
    sealed = [bob.seal(Data(bob.token, n, f"line {n}")) for n in range(1, 6)]
    answers = [room.relay.datagram_received(d, bob.address, 2.0) for d in reversed(sealed)]
    assert answers[:4] == [[]] * 4  # 5, 4, 3, 2 wait for 1 (relay order, not the window)
    assert [everyone_opens(room, out).text for out in answers[4]] == [  # type: ignore[union-attr]
        f"line {n}" for n in range(1, 6)
    ]
    assert room.refused() == {}


def test_too_short_a_datagram_of_a_known_session_is_malformed(room: SealedRoom) -> None:
    bob = room.clients[1]
    whole = bob.seal(Ping(bob.token, 1, BOOT))
    for size in (UP_HEADER_SIZE - 8, UP_HEADER_SIZE, UP_HEADER_SIZE + 15):
        assert room.relay.datagram_received(whole[:size], bob.address, 2.0) == []
    assert room.refused() == {Refusal.MALFORMED: 3}
    assert room.relay.refused[Refused.SEALED_MALFORMED] == 3


def test_a_sealed_datagram_must_hold_an_extended_one(room: SealedRoom) -> None:
    bob = room.clients[1]
    version_1 = encode_client_datagram(ClientDatagram("lobby", bob.token, "hi"))
    for inner in (b"", version_1):
        assert room.relay.datagram_received(bob.seal(inner), bob.address, 2.0) == []
    assert room.refused() == {Refusal.MALFORMED: 2}
    assert room.relay.relayed == 0


def test_a_malformed_extended_datagram_inside_is_answered_sealed(room: SealedRoom) -> None:
    """It is authentic: its sender is told (sealed), as it would be in clear."""
    bob = room.clients[1]
    (error,) = room.send(bob, bytes((0, 1, len(bob.token))) + bob.token.encode() + b"\x00")
    assert error.addresses == (bob.address,)
    reply = bob.open(error.datagram)
    assert isinstance(reply, ServerDatagram) and reply.kind is Kind.ERROR
    assert room.refused() == {}


# ---------------------------------------------------------------------------
# a Session the server does not know
# ---------------------------------------------------------------------------


def stranger(session: bytes, size: int = 100) -> bytes:
    """A sealed datagram of ``session`` under a key nobody holds."""
    inner = bytes(size - UP_HEADER_SIZE - 16)
    return Sealer(bytes(KEY_SIZE), up_prefix(session)).seal(inner)


def test_an_unknown_session_is_answered_unknown_token_in_clear() -> None:
    room = SealedRoom(2)
    session = room.registry.session_prefix + b"\x00\x00\x00\x00"
    assert session not in room.registry.by_session
    data = stranger(session)
    source = (OTHER_IP, 5000)
    (error,) = room.relay.datagram_received(data, source, 1.0)
    assert error.addresses == (source,)
    assert plain(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)
    # No larger than what came: a short one gets a cut ERROR, or nothing at all.
    short = data[:30]  # shorter than the whole ERROR (33 bytes)
    (cut,) = room.relay.datagram_received(short, source, 1.0)
    assert len(cut.datagram) == 30 < len(error.datagram)
    assert error.datagram.startswith(cut.datagram)
    session_only = data[: UP_HEADER_SIZE - 8]  # 10 bytes: Marker, Type, Session
    (bare,) = room.relay.datagram_received(session_only, source, 1.0)
    assert bare.datagram == error.datagram[:10]
    assert room.relay.datagram_received(data[:5], source, 1.0) == []  # < an ERROR header
    assert room.relay.sealed_refused[Refusal.UNKNOWN] == 4
    assert room.relay.refused[Refused.UNKNOWN_SESSION] == 4 == room.relay.rejected


def test_unknown_token_answers_to_unknown_sessions_are_rate_limited() -> None:
    room = SealedRoom(2, error_rate=2.0)
    data = stranger(room.registry.session_prefix + b"\x00\x00\x00\x00")
    source = (OTHER_IP, 5000)
    answers = [room.relay.datagram_received(data, source, 1.0) for _ in range(4)]
    assert [len(a) for a in answers] == [1, 1, 0, 0]  # two a second to that IP
    assert room.relay.datagram_received(data, source, 2.0) != []
    assert room.relay.sealed_refused[Refusal.UNKNOWN] == 5


def test_a_members_session_from_another_ip_is_unknown(room: SealedRoom) -> None:
    bob = room.clients[1]
    data = bob.seal(Data(bob.token, 1, "from elsewhere"))
    (error,) = room.relay.datagram_received(data, (OTHER_IP, 41001), 1.0)
    assert plain(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)
    assert room.room.seq == len(room.clients) - 1  # the joins' NOTICEs only
    assert room.refused() == {Refusal.UNKNOWN: 1}
    assert bob.member.address == bob.address


def test_a_session_of_an_earlier_server_is_answered_restarted() -> None:
    room = SealedRoom(2)
    room.relay.restarts = ErrorReplyLimiter(rate=1.0)
    earlier = OTHER_BOOT[:4] + b"\x01\x02\x03\x04"
    data = stranger(earlier)
    (out,) = room.relay.datagram_received(data, (OTHER_IP, 5000), 1.0)
    assert out.addresses == ((OTHER_IP, 5000),)
    assert plain(out.datagram) == Restarted(RESTARTED_TEXT)
    assert room.relay.datagram_received(data, (OTHER_IP, 5000), 1.0) == []  # rate-limited
    small = data[:UP_HEADER_SIZE]  # smaller than RESTARTED: no answer
    assert len(small) < len(out.datagram)
    assert room.relay.datagram_received(small, (OTHER_IP, 6000), 5.0) == []
    assert room.relay.sealed_refused[Refusal.UNKNOWN] == 3
    assert room.relay.refused[Refused.RESTARTED] == 3 == room.relay.rejected


# ---------------------------------------------------------------------------
# a sealed member's token counts only inside its own sealed datagrams
# ---------------------------------------------------------------------------


def test_a_sealed_members_token_in_clear_is_unknown_on_the_fast_path(room: SealedRoom) -> None:
    bob = room.clients[1]
    seq = room.room.seq
    # The next message in order, from its own address: what the fast path relays.
    clear = encode_extended(Data(bob.token, 1, "in clear"))
    (error,) = room.relay.datagram_received(clear, bob.address, 2.0)
    assert error.addresses == (bob.address,)
    assert plain(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)
    assert len(error.datagram) <= len(clear)
    assert room.room.seq == seq and room.relay.relayed == 0
    assert bob.member.relayed is not None and bob.member.relayed.next == 1


@pytest.mark.parametrize(
    "datagram",
    [
        lambda token: Data(token, 2, "out of order"),  # not its next message: the full path
        lambda token: Ping(token, 1, BOOT),
        lambda token: Repair(token, ((1, 3),)),
        lambda token: Leave(token),
    ],
    ids=["data", "ping", "repair", "leave"],
)
def test_a_sealed_members_token_in_clear_is_unknown_on_the_slow_path(
    room: SealedRoom, datagram: Any
) -> None:
    bob = room.clients[1]
    clear = encode_extended(datagram(bob.token))
    (error,) = room.relay.datagram_received(clear, bob.address, 2.0)
    reply = plain(error.datagram)  # no larger than what came: perhaps cut short
    assert isinstance(reply, ServerDatagram) and reply.kind is Kind.ERROR and reply.seq == 0
    assert reply.text and UNKNOWN_TOKEN.startswith(reply.text)
    assert len(error.datagram) <= len(clear)
    assert bob.member.session in room.registry.by_session  # a LEAVE in clear did nothing
    assert room.room.seq == 2 and bob.member.relayed is not None and not bob.member.relayed.held


def test_a_sealed_members_token_in_a_version_1_datagram_is_unknown(room: SealedRoom) -> None:
    bob = room.clients[1]
    v1 = encode_client_datagram(ClientDatagram("lobby", bob.token, "hello"))
    (error,) = room.relay.datagram_received(v1, bob.address, 2.0)
    assert plain(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)
    assert room.relay.relayed == 0
    heartbeat = encode_client_datagram(ClientDatagram("lobby", bob.token))
    assert room.relay.datagram_received(heartbeat, bob.address, 30.0) != []
    assert bob.member.last_seen == 1.0  # a heartbeat in clear does not keep it alive


@pytest.mark.parametrize("msg_no", [1, 2], ids=["fast path", "slow path"])
def test_a_token_inside_another_members_datagram_is_unknown(room: SealedRoom, msg_no: int) -> None:
    alice, bob = room.clients[0], room.clients[1]
    # Bob seals (with his own key) a DATA naming alice's token.
    (error,) = room.send(bob, Data(alice.token, msg_no, "i am alice"))
    assert error.addresses == (bob.address,)
    reply = bob.open(error.datagram)  # bob is a member: the ERROR is sealed
    assert reply == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)
    assert room.relay.relayed == 0 and room.room.seq == 2
    assert alice.member.relayed is not None and not alice.member.relayed.held


def test_a_gone_sealed_members_token_in_clear_is_unknown(room: SealedRoom) -> None:
    """Once it left, its token is answered (DEPARTED) inside its own sealed datagrams
    only: in clear it is unknown, as it was while it was in."""
    carol = room.clients[2]
    room.send(carol, Leave(carol.token), now=2.0)
    clear = encode_extended(Leave(carol.token))
    (error,) = room.relay.datagram_received(clear, carol.address, 3.0)
    reply = plain(error.datagram)
    assert isinstance(reply, ServerDatagram) and reply.kind is Kind.ERROR
    assert UNKNOWN_TOKEN.startswith(reply.text)
    (departed,) = room.send(carol, Leave(carol.token), now=3.0)  # sealed: confirmed
    assert carol.open(departed.datagram) == Departed()


def test_a_closed_rooms_sealed_members_token_in_clear_is_unknown(room: SealedRoom) -> None:
    """Nor is the room's CLOSED (its text, its last Seq) told in clear to its token."""
    host, bob = room.clients[0], room.clients[1]
    room.send(host, Leave(host.token), now=2.0)
    clear = encode_extended(Ping(bob.token, 1, BOOT))
    (error,) = room.relay.datagram_received(clear, bob.address, 3.0)
    assert plain(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)


def test_a_gone_members_token_inside_another_members_datagram_is_unknown(
    room: SealedRoom,
) -> None:
    alice, carol = room.clients[1], room.clients[2]
    room.send(carol, Leave(carol.token), now=2.0)
    (error,) = room.send(alice, Leave(carol.token), now=3.0)  # sealed by alice
    assert error.addresses == (alice.address,)
    assert alice.open(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)


def test_a_plaintext_members_token_inside_a_sealed_datagram_is_unknown() -> None:
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    relay = RelayCore(registry, ErrorReplyLimiter(rate=1000.0))
    plain_host = registry.create_room("open", "p", None, IP, 0.0, delivery=True)
    relay.datagram_received(encode_extended(Ping(plain_host.token, 1, BOOT)), (IP, 1), 0.0)
    sealed_host = registry.create_room("shut", "s", None, IP, 0.0, delivery=True, sealed=True)
    client = Client(sealed_host, (IP, 2))
    (error,) = relay.datagram_received(
        client.seal(Data(plain_host.token, 1, "borrowed")), client.address, 1.0
    )
    assert client.open(error.datagram) == ServerDatagram(Kind.ERROR, 0, "", UNKNOWN_TOKEN)
    assert registry.rooms["open"].seq == 0


# ---------------------------------------------------------------------------
# the registry: keys, Sessions, who may join which room
# ---------------------------------------------------------------------------


def test_each_member_has_its_own_session_and_key_and_shares_the_room_key() -> None:
    room = SealedRoom(4)
    members = [client.member for client in room.clients]
    sessions = {m.session for m in members}
    keys = {m.key for m in members}
    assert len(sessions) == len(keys) == 4
    for member in members:
        assert member.session is not None and len(member.session) == SESSION_SIZE
        assert member.session.startswith(BOOT[:4]) == member.session.startswith(
            room.registry.session_prefix
        )
        assert member.session[:4] == BOOT[:4]
        assert len(member.key) == KEY_SIZE and member.key != room.room.key
        assert room.registry.by_session[member.session] is member
        assert member.opener is not None
    assert len(room.room.key) == KEY_SIZE and len(room.room.key_id) == KEY_ID_SIZE
    assert room.room.sealed


def test_a_sealed_room_admits_only_sealed_joiners() -> None:
    registry = RoomRegistry(boot=BOOT)
    registry.create_room("shut", "host", None, IP, 0.0, delivery=True, sealed=True)
    for delivery in (False, True):
        with pytest.raises(RoomError) as refused:
            registry.join_room("shut", "plain", None, IP, 0.0, delivery=delivery)
        assert refused.value.code is ErrorCode.ENCRYPTION_REQUIRED
    assert list(registry.rooms["shut"].members) == ["host"]


def test_a_plaintext_room_admits_only_plaintext_joiners() -> None:
    registry = RoomRegistry(boot=BOOT)
    registry.create_room("open", "host", None, IP, 0.0, delivery=True)
    with pytest.raises(RoomError) as refused:
        registry.join_room("open", "sealed", None, IP, 0.0, delivery=True, sealed=True)
    assert refused.value.code is ErrorCode.NOT_ENCRYPTED
    assert not registry.by_session


def test_the_wrong_kind_of_joiner_is_refused_before_any_password_hash() -> None:
    registry = RoomRegistry(boot=BOOT)
    password = PasswordHash.create("pw")
    registry.create_room("shut", "host", password, IP, 0.0, delivery=True, sealed=True)
    registry.create_room("open", "host", password, IP, 0.0, delivery=True)
    with pytest.raises(RoomError) as plain_one:
        registry.begin_join("shut", "x", IP, 0.0)
    with pytest.raises(RoomError) as sealed_one:
        registry.begin_join("open", "x", IP, 0.0, sealed=True)
    assert (plain_one.value.code, sealed_one.value.code) == (
        ErrorCode.ENCRYPTION_REQUIRED,
        ErrorCode.NOT_ENCRYPTED,
    )
    assert not registry.failures.blocked(IP, 0.0)


def test_sealed_is_granted_only_with_delivery() -> None:
    registry = RoomRegistry(boot=BOOT)
    with pytest.raises(ValueError):
        registry.create_room("shut", "host", None, IP, 0.0, sealed=True)
    assert not registry.rooms


def test_a_closed_rooms_sessions_are_remembered_then_forgotten(room: SealedRoom) -> None:
    room.registry.close_all(ServerShutdown(), 5.0)
    sessions = [client.member.session for client in room.clients]
    assert not room.registry.by_session
    assert list(room.registry.gone_sessions) == sessions
    room.registry.expire(5.0 + IDLE + 1)
    assert not room.registry.gone_sessions


def test_a_closed_rooms_history_is_not_kept_alive_by_its_gone_sessions(
    room: SealedRoom,
) -> None:
    """A gone member's Session keeps its member (the key of its resent LEAVE) and so its
    room (whose sealer seals the answer): not the room's lines, up to --history-bytes,
    for as long as the Session is remembered. Nothing else holds a closed room."""
    for n in range(20):
        room.say(room.clients[0], f"line {n} " + "x" * 200)
    history = room.room.history
    assert history is not None and history.bytes > 4000
    room.registry.close_all(ServerShutdown(), 5.0)
    gone = room.registry.gone_sessions[room.clients[1].member.session or b""]
    assert gone.room is room.room and room.room.history is None
    bob = room.clients[1]  # and its token is still answered with the CLOSED, sealed
    (late,) = room.send(bob, Ping(bob.token, 3, BOOT), now=6.0)
    closed = bob.open(late.datagram)
    assert isinstance(closed, ServerDatagram) and closed.kind is Kind.CLOSED


# ---------------------------------------------------------------------------
# the COMPLETE: the keys go to a member over TLS only
# ---------------------------------------------------------------------------


def handler(registry: RoomRegistry, sent: list[Outgoing], **options: Any) -> TcrpHandler:
    """A handler as a server with --allow-plaintext has, unless ``options`` say else."""
    options.setdefault("allow_plaintext", True)
    return TcrpHandler(
        registry,
        Limits(),
        udp_port=lambda: 4321,
        send=sent.extend,
        clock=lambda: 1.0,
        hash_executor=ThreadPoolExecutor(1),
        **options,
    )


async def test_the_complete_over_tls_holds_the_members_and_the_rooms_keys() -> None:
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    sent: list[Outgoing] = []
    tcrp = handler(registry, sent)
    features = (DELIVERY, SEALED)
    host = await tcrp._handle(CreateRoom("lobby", "alice", None, features), IP, True)
    guest = await tcrp._handle(JoinRoom("lobby", "bob", None, features), IP, True)
    assert isinstance(host, Admission) and isinstance(guest, Admission)
    room = registry.rooms["lobby"]
    for admission in (host, guest):
        assert SEALED in admission.features and DELIVERY in admission.features
        keys = admission.sealed
        assert keys is not None
        member = registry.by_token[admission.token.encode()]
        assert (keys.session, keys.key) == (member.session, member.key)
        assert (keys.room_key_id, keys.room_key) == (room.key_id, room.key)
    assert host.sealed.session != guest.sealed.session  # type: ignore[union-attr]
    # The join NOTICE went to the endpoint with the room's sealer.
    assert [out.sealer for out in sent] == [room.sealer]
    # The keys travel in the COMPLETE's JSON, in hex.
    payload = reply_message(guest).payload["sealed"]
    assert payload == {
        "session": guest.sealed.session.hex(),  # type: ignore[union-attr]
        "key": guest.sealed.key.hex(),  # type: ignore[union-attr]
        "room_key_id": room.key_id.hex(),
        "room_key": room.key.hex(),
    }
    assert guest.sealed is not None
    assert guest.sealed.key.hex().encode() in encode_reply(guest)
    # And with them a client speaks to the relay: its PING opens, its STATUS opens.
    relay = RelayCore(registry)
    bob = Client(registry.by_token[guest.token.encode()], (IP, 5555))
    (status,) = relay.datagram_received(bob.seal(Ping(bob.token, 9, BOOT)), bob.address, 2.0)
    assert bob.open(status.datagram) == Status(room.seq, 9)


async def test_without_tls_nothing_is_sealed() -> None:
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    tcrp = handler(registry, [])
    admission = await tcrp._handle(
        CreateRoom("lobby", "alice", None, (DELIVERY, SEALED)), IP, False
    )
    assert isinstance(admission, Admission)
    assert admission.features == (DELIVERY,) and admission.sealed is None
    assert "sealed" not in reply_message(admission).payload
    assert not registry.rooms["lobby"].sealed and not registry.by_session


async def test_sealed_needs_delivery_and_asking() -> None:
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    tcrp = handler(registry, [])
    only_sealed = await tcrp._handle(CreateRoom("a", "alice", None, (SEALED,)), IP, True)
    not_asked = await tcrp._handle(CreateRoom("b", "alice", None, (DELIVERY,)), IP, True)
    for admission in (only_sealed, not_asked):
        assert isinstance(admission, Admission) and admission.sealed is None
        assert SEALED not in admission.features
    assert not registry.by_session


async def test_a_server_without_plaintext_refuses_what_would_not_be_sealed() -> None:
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    tcrp = handler(registry, [], allow_plaintext=False)
    for features, secure in (((DELIVERY, SEALED), False), ((DELIVERY,), True), ((), True)):
        with pytest.raises(RoomError) as refused:
            await tcrp._handle(CreateRoom("lobby", "alice", None, features), IP, secure)
        assert refused.value.code is ErrorCode.ENCRYPTION_REQUIRED
    assert not registry.rooms
    admission = await tcrp._handle(CreateRoom("lobby", "alice", None, (DELIVERY, SEALED)), IP, True)
    assert isinstance(admission, Admission) and admission.sealed is not None


async def test_a_sealed_members_token_is_refused_over_plaintext_tcrp() -> None:
    """LEAVE_ROOM, TUNNEL and RESUME name the token: over plaintext TCRP it would leak,
    so a sealed member's is refused there (and works over TLS)."""
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    tcrp = handler(registry, [])
    features = (DELIVERY, SEALED, TUNNEL, RESUME)
    admission = await tcrp._handle(CreateRoom("lobby", "alice", None, features), IP, True)
    assert isinstance(admission, Admission) and admission.resume is not None
    token, secret = admission.token, admission.resume
    for request in (
        LeaveRoom("lobby", token),
        Tunnel("lobby", token),
        Resume("lobby", token, secret),
    ):
        with pytest.raises(RoomError) as refused:
            await tcrp._handle(request, IP, False)
        assert refused.value.code is ErrorCode.ENCRYPTION_REQUIRED, request
    assert "lobby" in registry.rooms
    assert isinstance(await tcrp._handle(Tunnel("lobby", token), IP, True), Tunnelled)
    assert isinstance(await tcrp._handle(Resume("lobby", token, secret), IP, True), Resumed)
    await tcrp._handle(LeaveRoom("lobby", token), IP, True)
    assert "lobby" not in registry.rooms


async def test_the_wrong_kind_of_joiner_is_refused_through_tcrp() -> None:
    registry = RoomRegistry(idle_timeout=IDLE, boot=BOOT)
    tcrp = handler(registry, [])
    await tcrp._handle(CreateRoom("shut", "alice", None, (DELIVERY, SEALED)), IP, True)
    await tcrp._handle(CreateRoom("open", "alice", None, (DELIVERY,)), IP, True)
    attempts = (
        (JoinRoom("shut", "bob", None, (DELIVERY, SEALED)), False, ErrorCode.ENCRYPTION_REQUIRED),
        (JoinRoom("shut", "bob", None, (DELIVERY,)), True, ErrorCode.ENCRYPTION_REQUIRED),
        (JoinRoom("open", "bob", None, (DELIVERY, SEALED)), True, ErrorCode.NOT_ENCRYPTED),
    )
    for request, secure, code in attempts:
        with pytest.raises(RoomError) as refused:
            await tcrp._handle(request, IP, secure)
        assert refused.value.code is code, request
    assert [len(room.members) for room in registry.rooms.values()] == [1, 1]


# ---------------------------------------------------------------------------
# the UDP endpoint: an Outgoing with a sealer is sealed when it is sent
# ---------------------------------------------------------------------------


class FakeTransport:
    """Just enough of a datagram transport: it records what is sent. Without
    ``get_write_buffer_size`` the endpoint hands every datagram to it."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def sendto(self, data: bytes, address: Address) -> None:
        self.sent.append((data, address))


def endpoint() -> tuple[RelayEndpoint, FakeTransport]:
    registry = RoomRegistry(boot=BOOT)
    udp = RelayEndpoint(RelayCore(registry), clock=lambda: 0.0)
    transport = FakeTransport()
    udp.connection_made(transport)  # type: ignore[arg-type]
    return udp, transport


def test_the_endpoint_seals_an_outgoing_once_for_every_address() -> None:
    udp, transport = endpoint()
    key, key_id = bytes(range(32)), b"kid!"
    sealer = Sealer(key, bytes((16,)) + key_id)
    to = ((IP, 1), (IP, 2), (IP, 3))
    notice = b"\x02\x00\x00\x00\x07\x00alice joined"
    udp.send([Outgoing(notice, to, sealer), Outgoing(b"plain", ((IP, 9),))])
    assert [address for _, address in transport.sent] == [*to, (IP, 9)]
    sealed = [data for data, _ in transport.sent[:3]]
    assert sealed[0] is sealed[1] is sealed[2]  # sealed once: the same bytes object
    assert sealer.counter == 1
    for _ in to:  # each member opens it with its own opener
        assert room_opener(key).open(sealed[0]) == notice
    assert transport.sent[3] == (b"plain", (IP, 9))  # no sealer: left alone


def test_each_send_of_a_sealed_outgoing_takes_a_new_counter() -> None:
    """A CLOSED's later copies are one Outgoing sent again: each sealed anew."""
    udp, transport = endpoint()
    key = bytes(range(32))
    sealer = Sealer(key, bytes((16,)) + b"kid!")
    closed = Outgoing(b"\x03\x00\x00\x00\x09\x00the host left", ((IP, 1),), sealer)
    for _ in range(3):
        udp.send([closed])
    copies = [data for data, _ in transport.sent]
    assert len(set(copies)) == 3 and sealer.counter == 3
    opener = room_opener(key)
    assert [opener.open(copy) for copy in copies] == [closed.datagram] * 3


def test_an_outgoing_to_nobody_is_not_sealed() -> None:
    udp, transport = endpoint()
    sealer = Sealer(bytes(32), bytes((16,)) + b"kid!")
    udp.send([Outgoing(b"\x02\x00\x00\x00\x01\x00x", (), sealer)])
    assert transport.sent == [] and sealer.counter == 0


def test_the_endpoint_sends_the_relays_sealed_answers_as_they_are() -> None:
    """What the relay sealed is not sealed again on the way out."""
    room = SealedRoom(3)
    udp = RelayEndpoint(room.relay, clock=lambda: 2.0)
    transport = FakeTransport()
    udp.connection_made(transport)  # type: ignore[arg-type]
    bob = room.clients[1]
    udp.datagram_received(bob.seal(Data(bob.token, 1, "via the endpoint")), bob.address)
    assert {address for _, address in transport.sent} == room.addresses
    (datagram,) = {data for data, _ in transport.sent}
    for client in room.clients:
        assert client.open(datagram) == Chat(room.room.seq, "m1", 1, "via the endpoint")
