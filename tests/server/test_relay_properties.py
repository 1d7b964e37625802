"""Property tests (hypothesis) of the relay core: any datagrams, from any source.

Whatever arrives, the relay never crashes, never answers an unauthenticated sender with
more bytes than it sent, relays a chat line verbatim under the room's next Seq to every
registered member, and never relays a heartbeat.
"""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from ocm.errors import ProtocolError
from ocm.server.registry import Address, RoomRegistry
from ocm.server.relay import RelayCore
from ocm.wire import (
    MAX_DATAGRAM,
    SERVER_HEADER_SIZE,
    ClientDatagram,
    Kind,
    decode_server_datagram,
    encode_client_datagram,
    split_client_datagram,
)
from ocm.wire.delivery import Restarted, decode_received
from tests import strategies as ocm_st

HEAVY = ocm_st.HEAVY


# ---------------------------------------------------------------------------
# the relay core
# ---------------------------------------------------------------------------

IP = "127.0.0.1"
OTHER_IP = "127.0.0.2"
# Fixed tokens so that the strategies can build datagrams that authenticate.
TOKENS = ["A" * 32, "B" * 32, "C" * 32]
# alice (host of "lobby") and carol (host of "other") from IP, bob (lobby) from OTHER_IP.
MEMBERS = [("lobby", TOKENS[0], IP), ("lobby", TOKENS[1], OTHER_IP), ("other", TOKENS[2], IP)]
SOURCES: list[Address] = [
    (IP, 1001),
    (IP, 1002),
    (OTHER_IP, 2001),
    ("::ffff:127.0.0.1", 1003),
    ("10.0.0.9", 4001),
]


def relay_with_rooms() -> RelayCore:
    tokens: Iterator[str] = iter(TOKENS)
    registry = RoomRegistry(idle_timeout=60.0, token_factory=lambda: next(tokens))
    registry.create_room("lobby", "alice", None, IP, 0.0)
    registry.join_room("lobby", "b" * 250, None, OTHER_IP, 0.0)  # a long name: long relays
    registry.create_room("other", "carol", None, IP, 0.0)
    return RelayCore(registry)


@st.composite
def member_datagrams(draw: st.DrawFn) -> bytes:
    room, token, _ = draw(st.sampled_from(MEMBERS))
    room = draw(st.sampled_from([room, room, "lobby", "other", "Lobby"]))
    text = draw(ocm_st.texts(MAX_DATAGRAM - 2 - len(room) - len(token)))
    return encode_client_datagram(ClientDatagram(room, token, text))


relay_inputs = st.one_of(
    st.binary(max_size=64),
    ocm_st.repeated(MAX_DATAGRAM + 64),
    member_datagrams(),
    ocm_st.mutated(member_datagrams()),
    ocm_st.mutated(ocm_st.client_datagrams().map(encode_client_datagram)),
)


def _authenticates(relay: RelayCore, data: bytes, address: Address) -> bool:
    try:
        room, token, _ = split_client_datagram(data)
    except ProtocolError:
        return False
    return relay.registry.authenticate(room, token, address[0]) is not None


@HEAVY
@given(st.lists(st.tuples(relay_inputs, st.sampled_from(SOURCES)), min_size=1, max_size=6))
def test_relay_never_crashes_and_never_amplifies(
    datagrams: list[tuple[bytes, Address]],
) -> None:
    relay = relay_with_rooms()
    seqs = {name: room.seq for name, room in relay.registry.rooms.items()}
    for step, (data, source) in enumerate(datagrams):
        authenticated = _authenticates(relay, data, source)
        outgoing = relay.datagram_received(data, source, 1.0 + step * 0.01)
        assert isinstance(outgoing, list)
        for out in outgoing:
            assert len(out.datagram) <= MAX_DATAGRAM
            if isinstance(decode_received(out.datagram), Restarted):
                # Section 5: a sealed datagram (Marker 0, Type 5) of an unknown Session.
                assert not authenticated and out.addresses == (source,)
                assert len(out.datagram) <= len(data)
                continue
            reply = decode_server_datagram(out.datagram)  # always well-formed
            if reply.kind is Kind.ERROR:
                assert out.addresses == (source,)
                assert reply.seq == 0
            if not authenticated:
                assert reply.kind is Kind.ERROR
                assert len(out.datagram) <= len(data)
        if not authenticated:
            assert len(data) >= SERVER_HEADER_SIZE or outgoing == []
            continue
        room_name, _, text = split_client_datagram(data)
        room = relay.registry.rooms[room_name.decode()]
        messages = [decode_server_datagram(o.datagram) for o in outgoing]
        if not text:
            assert outgoing == []  # a heartbeat is never relayed
        elif messages and messages[0].kind is Kind.MESSAGE:
            # Relayed verbatim, with the room's next Seq, to every registered member.
            (message,) = messages
            assert message.text.encode() == text
            seqs[room.name] += 1
            assert message.seq == room.seq == seqs[room.name]
            assert set(outgoing[0].addresses) == set(room.addresses)
            assert source in outgoing[0].addresses
        else:
            assert room.seq == seqs[room.name]  # a refused text takes no Seq
            assert [m.kind for m in messages] in ([Kind.ERROR], [])
    # Every refusal is counted under one reason (ocm_datagrams_dropped_total).
    assert sum(relay.refused.values()) == relay.rejected
