"""The registry's cluster side, no Redis: a room whose bus is a recording fake.

What a replica says goes to the bus (op and entry) and nothing reaches its members
until the cluster gives it back numbered (:meth:`RoomRegistry.apply`); REPAIR is served
from the entries a replica was loaded with; LocalBackend answers from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ocm.errors import ErrorCode, RoomError
from ocm.server.cluster.backend import LocalBackend
from ocm.server.cluster.entries import Entry
from ocm.server.guards import ErrorReplyLimiter
from ocm.server.registry import Address, Member, Outgoing, Room, RoomRegistry
from ocm.server.relay import RelayCore
from ocm.wire import ClientDatagram, Kind, ServerDatagram, encode_client_datagram
from ocm.wire.delivery import (
    Accepted,
    Chat,
    Data,
    DeliveryKind,
    Extended,
    Lost,
    Ping,
    Received,
    Repair,
    Status,
    decode_received,
    encode_extended,
)
from ocm.wire.tcrp import RoomDetails, RoomInfo

IP = "127.0.0.1"
OTHER_IP = "127.0.0.2"
ALICE = (IP, 40001)
BOB = (OTHER_IP, 40002)
CAROL = (IP, 40003)
DAVE = (OTHER_IP, 40004)
BOOT = bytes.fromhex("0011223344556677")


@dataclass
class Published:
    room: str
    rid: str
    op: str
    entry: Entry
    member: str


@dataclass
class FakeBus:
    """Records every publish; ``accepting`` False plays a full queue."""

    calls: list[Published] = field(default_factory=list)
    accepting: bool = True

    def publish(self, room: Room, op: str, entry: Entry, member: str = "") -> bool:
        self.calls.append(Published(room.name, room.rid, op, entry, member))
        return self.accepting

    def take(self) -> list[Published]:
        calls, self.calls = self.calls, []
        return calls


class Node:
    """A node's registry and relay with a fake bus; "lobby" hosted here by alice
    (delivery), bob (delivery) and carol (version 1), each registered."""

    def __init__(self) -> None:
        self.bus = FakeBus()
        self.registry = RoomRegistry(idle_timeout=60.0, boot=BOOT)
        self.registry.bus = self.bus
        self.relay = RelayCore(self.registry, ErrorReplyLimiter(rate=1000.0))

    def host_lobby(self) -> tuple[Room, Member, Member, Member]:
        registry = self.registry
        pending = registry.begin_create("lobby", "alice", IP)
        alice = registry.finish_create(pending, None, 0.0, delivery=True)
        bob, bob_notice = registry.join_room("lobby", "bob", None, OTHER_IP, 0.0, delivery=True)
        carol, carol_notice = registry.join_room("lobby", "carol", None, IP, 0.0)
        assert bob_notice == carol_notice == []  # said through the bus, not here
        self.ping(alice, ALICE)
        self.ping(bob, BOB)
        v1 = encode_client_datagram(ClientDatagram("lobby", carol.token))
        assert self.relay.datagram_received(v1, CAROL, 0.0) == []
        room = registry.rooms["lobby"]
        assert room.bus is self.bus and room.rid == pending.rid
        return room, alice, bob, carol

    def send(self, datagram: Extended, source: Address, now: float = 1.0) -> list[Outgoing]:
        return self.relay.datagram_received(encode_extended(datagram), source, now)

    def ping(self, member: Member, source: Address) -> Status:
        (status,) = replies(self.send(Ping(member.token, 1, BOOT), source))
        assert isinstance(status, Status)
        return status

    def say_v1(self, member: Member, source: Address, text: str) -> list[Outgoing]:
        v1 = encode_client_datagram(ClientDatagram(member.room.name, member.token, text))
        return self.relay.datagram_received(v1, source, 1.0)


def replies(outgoing: list[Outgoing]) -> list[Received]:
    return [decode_received(out.datagram) for out in outgoing]


def fan_out(outgoing: list[Outgoing]) -> dict[Address, list[Received]]:
    """What each address gets."""
    by_address: dict[Address, list[Received]] = {}
    for out in outgoing:
        for address in out.addresses:
            by_address.setdefault(address, []).append(decode_received(out.datagram))
    return by_address


def test_a_create_and_joins_publish_their_notices_and_nothing_is_sent_here() -> None:
    node = Node()
    room, *_ = node.host_lobby()
    calls = node.bus.take()
    assert [(c.room, c.rid, c.op, c.entry, c.member) for c in calls] == [
        ("lobby", room.rid, "say", Entry(Kind.NOTICE, b"bob joined"), ""),
        ("lobby", room.rid, "say", Entry(Kind.NOTICE, b"carol joined"), ""),
    ]
    assert room.counter == 0 and room.seq == 0


def test_a_delivery_line_waits_for_the_cluster_then_reaches_everyone_in_its_form() -> None:
    node = Node()
    room, alice, _, _ = node.host_lobby()
    node.bus.take()

    assert node.send(Data(alice.token, 1, "hi"), ALICE) == []
    (call,) = node.bus.take()
    assert (call.op, call.entry) == ("say", Entry(DeliveryKind.CHAT, b"hi", b"alice", 1))
    # Sent again before the cluster numbered it: dropped silently, not published twice.
    assert node.send(Data(alice.token, 1, "hi"), ALICE) == []
    assert node.bus.take() == []

    outgoing = node.registry.apply(room, 3, call.entry, 1.0)

    assert fan_out(outgoing) == {
        ALICE: [Chat(3, "alice", 1, "hi")],
        BOB: [Chat(3, "alice", 1, "hi")],
        CAROL: [ServerDatagram(Kind.MESSAGE, 3, "alice", "hi")],
    }
    assert (room.counter, room.seq) == (3, 3)
    # Numbered now: a retransmission is confirmed with its Seq, and not published.
    assert replies(node.send(Data(alice.token, 1, "hi"), ALICE)) == [Accepted(3, 1)]
    assert node.bus.take() == []


def test_a_version_1_line_and_a_notice_are_published_then_sent_to_every_address() -> None:
    node = Node()
    room, _, _, carol = node.host_lobby()
    node.bus.take()

    assert node.say_v1(carol, CAROL, "yo") == []
    (call,) = node.bus.take()
    assert (call.op, call.entry) == ("say", Entry(Kind.MESSAGE, b"yo", b"carol"))

    message = fan_out(node.registry.apply(room, 1, call.entry, 1.0))
    notice = fan_out(node.registry.apply(room, 2, Entry(Kind.NOTICE, b"zed joined"), 1.0))

    for address in (ALICE, BOB, CAROL):
        assert message[address] == [ServerDatagram(Kind.MESSAGE, 1, "carol", "yo")]
        assert notice[address] == [ServerDatagram(Kind.NOTICE, 2, "", "zed joined")]


def test_a_full_bus_leaves_a_delivery_line_unrelayed_so_its_retransmission_is_published() -> None:
    node = Node()
    _, alice, _, _ = node.host_lobby()
    node.bus.take()
    node.bus.accepting = False
    assert node.send(Data(alice.token, 1, "hi"), ALICE) == []
    assert len(node.bus.take()) == 1
    node.bus.accepting = True
    assert node.send(Data(alice.token, 1, "hi"), ALICE) == []
    (call,) = node.bus.take()
    assert call.entry == Entry(DeliveryKind.CHAT, b"hi", b"alice", 1)


def test_leaves_publish_leave_and_close_and_an_applied_closed_tears_the_room_down() -> None:
    node = Node()
    registry = node.registry
    room, alice, bob, carol = node.host_lobby()
    node.bus.take()

    assert registry.leave_member(bob, 1.0) == []
    (left,) = node.bus.take()
    assert (left.op, left.entry, left.member) == ("leave", Entry(Kind.NOTICE, b"bob left"), "bob")
    assert "bob" not in room.members and "lobby" in registry.rooms

    assert registry.leave_member(alice, 1.0) == []
    (closed,) = node.bus.take()
    assert (closed.op, closed.entry.kind) == ("close", Kind.CLOSED)
    assert closed.entry.text == b"host alice left; the room is closed"
    # Closing: no longer joinable nor listed as open, but kept until its CLOSED comes back.
    assert room.closing and registry.rooms["lobby"] is room
    with pytest.raises(RoomError) as refused:
        registry.lookup("lobby")
    assert refused.value.code is ErrorCode.NO_SUCH_ROOM

    outgoing = registry.apply(room, 7, closed.entry, 1.0)

    assert fan_out(outgoing) == {
        CAROL: [ServerDatagram(Kind.CLOSED, 7, "", "host alice left; the room is closed")]
    }
    assert "lobby" not in registry.rooms
    assert carol.token_bytes not in registry.by_token
    assert registry.list_rooms() == []


def test_a_closed_from_another_node_closes_the_replica_for_its_members_here() -> None:
    node = Node()
    registry = node.registry
    room = registry.add_replica(
        "lobby", "r1", None, e2e=None, sealed=False, host_key="zed", host_name="zed",
        host_ip=OTHER_IP, counter=4, history=[],
    )  # fmt: skip
    dave, _ = registry.join_room("lobby", "dave", None, OTHER_IP, 0.0, delivery=True)
    node.ping(dave, DAVE)
    text = b"host zed timed out; the room is closed"

    outgoing = registry.apply(room, 5, Entry(Kind.CLOSED, text), 2.0)

    assert fan_out(outgoing) == {DAVE: [ServerDatagram(Kind.CLOSED, 5, "", text.decode())]}
    assert registry.rooms == {} and registry.by_token == {}


def test_a_replica_serves_repair_from_its_loaded_entries_and_lost_before_a_skip() -> None:
    node = Node()
    registry = node.registry
    history = [
        (3, Entry(Kind.NOTICE, b"bob joined")),
        (4, Entry(DeliveryKind.CHAT, b"hi", b"alice", 1)),
        (5, Entry(Kind.MESSAGE, b"yo", b"carol")),
    ]
    room = registry.add_replica(
        "lobby", "r1", None, e2e=None, sealed=False, host_key="alice", host_name="alice",
        host_ip=IP, counter=5, history=history,
    )  # fmt: skip
    assert (room.counter, room.seq, room.host_name) == (5, 5, "alice")
    dave, _ = registry.join_room("lobby", "dave", None, OTHER_IP, 0.0, delivery=True)
    assert node.ping(dave, DAVE).seq == 5

    assert replies(node.send(Repair(dave.token, ((3, 3),)), DAVE)) == [
        ServerDatagram(Kind.NOTICE, 3, "", "bob joined"),
        Chat(4, "alice", 1, "hi"),
        ServerDatagram(Kind.MESSAGE, 5, "carol", "yo"),
    ]
    assert replies(node.send(Repair(dave.token, ((1, 2),)), DAVE)) == [Lost(1, 2)]

    registry.skip_to(room, 10)  # 6 .. 9 are lost to this node
    assert room.counter == 9
    registry.apply(room, 10, Entry(Kind.NOTICE, b"erin joined"), 1.0)

    assert replies(node.send(Repair(dave.token, ((4, 7),)), DAVE, 2.0)) == [
        Lost(4, 6),
        ServerDatagram(Kind.NOTICE, 10, "", "erin joined"),
    ]


def test_a_gap_in_the_loaded_entries_restarts_the_replicas_history() -> None:
    node = Node()
    history = [
        (2, Entry(Kind.NOTICE, b"bob joined")),
        (4, Entry(Kind.NOTICE, b"carol joined")),
    ]
    room = node.registry.add_replica(
        "lobby", "r1", None, e2e=None, sealed=False, host_key="alice", host_name="alice",
        host_ip=IP, counter=4, history=history,
    )  # fmt: skip
    assert room.history is not None and len(room.history) == 1
    assert room.history.get(4) is not None and room.history.get(2) is None


async def test_the_local_backend_answers_from_the_registry() -> None:
    registry = RoomRegistry()
    backend = LocalBackend(registry)
    registry.create_room("lobby", "alice", None, IP, 0.0)
    registry.join_room("lobby", "bob", None, IP, 0.0)
    await backend.start()

    assert await backend.list_rooms() == [RoomInfo("lobby", 2, protected=False)]
    assert await backend.lookup("lobby") == RoomDetails("lobby", 2, False, None)
    with pytest.raises(RoomError) as refused:
        await backend.lookup("attic")
    assert refused.value.code is ErrorCode.NO_SUCH_ROOM
    assert backend.state() is None
    await backend.load_room("attic")  # a server on its own has nothing more to load
    await backend.close()
