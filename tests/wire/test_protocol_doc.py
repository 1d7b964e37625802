"""docs/protocol.md's byte examples decode, and re-encode to the same bytes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ocm.errors import ErrorCode
from ocm.wire import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    State,
    decode_client_datagram,
    decode_server_datagram,
    decode_tcrp,
    encode_client_datagram,
    encode_reply,
    encode_request,
    encode_server_datagram,
    parse_reply,
    parse_request,
)
from ocm.wire.delivery import (
    ClientType,
    DeliveryKind,
    Departed,
    decode_extended,
    decode_received,
    encode_extended,
    encode_received,
)
from ocm.wire.e2e import derive_keys, open_text
from ocm.wire.sealed import (
    DOWN_HEADER_SIZE,
    UP_HEADER_SIZE,
    Opener,
    Sealer,
    is_sealed_down,
    is_sealed_up,
    member_opener,
    room_opener,
)
from ocm.wire.tcrp import Left, RoomDetails
from ocm.wire.tunnel import FrameReader, encode_frame

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) ([\w-]+) -->\n```text\n(.*?)\n```", re.S)
EXAMPLES = EXAMPLE.findall(DOC.read_text(encoding="utf-8"))


def reencode(kind: str, data: bytes) -> bytes:
    if kind == "tcrp":
        message = decode_tcrp(data)
        if message.state is State.REQUEST:
            return encode_request(parse_request(message))
        return encode_reply(parse_reply(message))
    if kind == "client":
        return encode_client_datagram(decode_client_datagram(data))
    if kind == "extended":
        return encode_extended(decode_extended(data))
    if kind == "received":
        return encode_received(decode_received(data))
    if kind in ("upframe", "downframe"):  # section 4: one datagram in a frame, each way
        frames = FrameReader(data)
        datagram = frames.next_frame()
        assert datagram is not None and not frames.started  # exactly one whole frame
        inner = "extended" if kind == "upframe" else "received"
        return encode_frame(reencode(inner, datagram))
    if kind in ("sealedup", "sealeddown"):  # section 5, with the examples' keys
        up = kind == "sealedup"
        assert is_sealed_up(data) if up else is_sealed_down(data)
        header_size = UP_HEADER_SIZE if up else DOWN_HEADER_SIZE
        opener: Opener = member_opener(MEMBER_KEY) if up else room_opener(ROOM_KEY)
        opened = opener.open(data)
        assert isinstance(opened, bytes), opened
        counter = int.from_bytes(data[header_size - 8 : header_size])
        sealer = Sealer(
            MEMBER_KEY if up else ROOM_KEY, data[: header_size - 8], counter=counter - 1
        )
        return sealer.seal(reencode("extended" if up else "received", opened))
    assert kind == "server"
    return encode_server_datagram(decode_server_datagram(data))


# Section 5's examples: the keys that the join-sealed-complete example gives out.
MEMBER_KEY = bytes(range(32))
ROOM_KEY = bytes(range(32, 64))


def test_every_message_kind_has_an_example() -> None:
    names = {name for _, name, _ in EXAMPLES}
    assert {"create-request", "join-request", "list-request", "leave-request"} <= names
    assert {"create-ack", "join-error-ack", "create-complete", "list-complete"} <= names
    assert {"heartbeat", "chat", "message", "notice", "closed", "error"} <= names


def test_every_delivery_datagram_has_an_example() -> None:
    """Section 3: each extended Type and each new Kind, and the negotiation."""
    examples = {(kind, name) for kind, name, _ in EXAMPLES}
    types = {("extended", t.name.lower()) for t in ClientType}
    kinds = {("received", k.name.lower()) for k in DeliveryKind}
    negotiation = {("tcrp", "join-delivery-request"), ("tcrp", "join-delivery-complete")}
    assert types | kinds | negotiation <= examples


def test_the_relayed_examples_say_how_far_the_messages_went() -> None:
    examples = {(kind, name): h for kind, name, h in EXAMPLES}
    departed = decode_received(bytes.fromhex(examples["received", "departed-relayed"]))
    assert departed == Departed(12)
    left = parse_reply(decode_tcrp(bytes.fromhex(examples["tcrp", "leave-relayed-complete"])))
    assert left == Left("lobby", 12)
    assert decode_received(bytes.fromhex(examples["received", "departed"])) == Departed(None)


def test_the_delivery_complete_example_grants_delivery() -> None:
    (hex_dump,) = [h for _, name, h in EXAMPLES if name == "join-delivery-complete"]
    admission = parse_reply(decode_tcrp(bytes.fromhex(hex_dump)))
    assert isinstance(admission, Admission)
    assert (admission.features, admission.seq, admission.history) == (("delivery",), 12, 1024)


def test_every_tunnel_and_resume_message_has_an_example() -> None:
    """Section 4: the negotiation, both operations each way, a frame each way."""
    examples = {(kind, name) for kind, name, _ in EXAMPLES}
    tcrp = {"join-tunnel-request", "join-tunnel-complete", "tunnel-request", "tunnel-complete"}
    tcrp |= {"resume-request", "resume-complete"}
    frames = {("upframe", "ping"), ("downframe", "status")}
    assert {("tcrp", name) for name in tcrp} | frames <= examples


def test_the_tunnel_complete_example_grants_both_and_carries_a_secret() -> None:
    (hex_dump,) = [h for _, name, h in EXAMPLES if name == "join-tunnel-complete"]
    admission = parse_reply(decode_tcrp(bytes.fromhex(hex_dump)))
    assert isinstance(admission, Admission)
    assert admission.features == ("delivery", "tunnel", "resume")
    assert admission.resume is not None and len(admission.resume) == 32


def test_the_sealed_examples_use_the_keys_of_the_sealed_complete() -> None:
    """Section 5: the COMPLETE grants sealed and gives out the keys the examples use;
    its Session names the PING example's key and starts with the server's boot id."""
    examples = {(kind, name): h for kind, name, h in EXAMPLES}
    admission = parse_reply(decode_tcrp(bytes.fromhex(examples["tcrp", "join-sealed-complete"])))
    assert isinstance(admission, Admission) and admission.sealed is not None
    assert admission.features == ("delivery", "sealed")
    keys = admission.sealed
    assert (keys.key, keys.room_key) == (MEMBER_KEY, ROOM_KEY)
    assert admission.boot is not None and keys.session[:4] == bytes.fromhex(admission.boot)[:4]
    ping = bytes.fromhex(examples["sealedup", "ping"])
    status = bytes.fromhex(examples["sealeddown", "status"])
    assert ping[2:10] == keys.session and status[1:5] == keys.room_key_id
    request = parse_request(decode_tcrp(bytes.fromhex(examples["tcrp", "join-sealed-request"])))
    assert isinstance(request, JoinRoom) and request.features == ("delivery", "sealed")


@pytest.mark.parametrize(("kind", "name", "hex_dump"), EXAMPLES, ids=[e[1] for e in EXAMPLES])
def test_example_round_trips(kind: str, name: str, hex_dump: str) -> None:
    data = bytes.fromhex(hex_dump)
    assert reencode(kind, data) == data


def test_every_end_to_end_message_has_an_example() -> None:
    """Section 5: LOOKUP_ROOM both ways, CREATE and JOIN of an e2e room, the refusal of
    a join without the feature, and a MESSAGE that carries an envelope."""
    examples = {(kind, name) for kind, name, _ in EXAMPLES}
    tcrp = {"lookup-request", "lookup-complete", "create-e2e-request", "join-e2e-request"}
    tcrp |= {"join-e2e-required-ack"}
    assert {("tcrp", name) for name in tcrp} | {("server", "e2e-message")} <= examples


def test_the_end_to_end_examples_agree_with_each_other_and_the_derivation() -> None:
    dumps = {name: bytes.fromhex(h) for _, name, h in EXAMPLES}
    create = parse_request(decode_tcrp(dumps["create-e2e-request"]))
    join = parse_request(decode_tcrp(dumps["join-e2e-request"]))
    details = parse_reply(decode_tcrp(dumps["lookup-complete"]))
    refusal = parse_reply(decode_tcrp(dumps["join-e2e-required-ack"]))
    assert isinstance(create, CreateRoom) and isinstance(join, JoinRoom)
    assert isinstance(details, RoomDetails) and isinstance(refusal, Ack)
    assert create.e2e is not None and create.e2e == details.e2e
    assert (create.e2e.memory_kib, create.e2e.iterations, create.e2e.lanes) == (65536, 3, 4)
    # The password both carry is the auth key of the page's password with those params.
    auth = derive_keys("correct horse battery staple", create.e2e).auth_password
    assert create.password == join.password == auth
    assert "e2e" in create.features and "e2e" in join.features
    assert refusal.error is ErrorCode.E2E_REQUIRED
    # The MESSAGE carries the test vector's envelope, which opens as alice's in vault.
    message = decode_server_datagram(dumps["e2e-message"])
    key = bytes.fromhex("9651a819eed3d3204930106d33e0a16d2a3160638103a19283585cd100c898f2")
    assert open_text(key, "vault", message.sender, message.text) == "hello, bob"
