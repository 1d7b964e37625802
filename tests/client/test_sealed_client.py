"""A sealed member's receiving side (section 5): what ``ChatClient._unseal`` lets through.

Mostly without sockets: a ChatClient is made from an Admission that grants ``sealed`` (its
constructor opens nothing), and datagrams are handed to it as its endpoint would.
"""

from __future__ import annotations

import pytest

from ocm.client.chat import ChatClient
from ocm.client.delivery import REFUSED_HERE, DeliveryState
from ocm.client.exchange import Link
from ocm.wire import Admission, Kind, Operation, server_datagram_prefix
from ocm.wire.delivery import Restarted, Status, encode_received
from ocm.wire.sealed import Refusal, Sealer, down_prefix
from ocm.wire.tcrp import SealedKeys
from ocm.wire.texts import UnknownToken, format_refusal
from tests.kit import ready, running_server, server_of

MEMBER_KEY = bytes(range(32))
ROOM_KEY = bytes(range(32, 64))
KEY_ID = bytes.fromhex("a1b2c3d4")
BOOT = "5c2b7e0a91d3f468"
UNKNOWN = server_datagram_prefix(Kind.ERROR, 0) + format_refusal(UnknownToken()).encode()


def sealed_client(
    features: tuple[str, ...] = ("delivery", "tunnel", "resume", "sealed"),
) -> ChatClient:
    admission = Admission(
        Operation.JOIN_ROOM,
        "lobby",
        "k3Vq9XbT0wZr6mJ2pL8sYc4nHd1fGa7e",
        9001,
        "alice",
        ("alice", "bob"),
        60.0,
        features,
        12,
        BOOT,
        1024,
        "s3cret-ABCDEFGHIJKLMNOPQRSTUVWX" if "resume" in features else None,
        SealedKeys(bytes.fromhex(BOOT)[:4] + bytes(4), MEMBER_KEY, KEY_ID, ROOM_KEY),
    )
    return ChatClient(("127.0.0.1", 9001), admission, "bob", Link("127.0.0.1", "127.0.0.1"))


async def test_the_rooms_datagrams_open_once_and_nothing_else_sealed_does() -> None:
    chat = sealed_client()
    assert chat.encrypted
    room = Sealer(ROOM_KEY, down_prefix(KEY_ID))
    status = encode_received(Status(12, 1))
    sealed = room.seal(status)
    assert chat._unseal(sealed) == status
    assert chat._unseal(sealed) is None  # the same datagram again: a replay
    fresh = room.seal(status)
    assert chat._unseal(fresh[:-1] + bytes([fresh[-1] ^ 1])) is None  # altered: forged
    other_room = Sealer(ROOM_KEY, down_prefix(bytes(4))).seal(status)
    assert chat._unseal(other_room) is None
    assert chat.sealed_refused == {
        Refusal.MALFORMED: 0,
        Refusal.UNKNOWN: 1,
        Refusal.FORGED: 1,
        Refusal.REPLAYED: 1,
    }


async def test_in_clear_only_the_two_hints_get_through_and_neither_ends_the_chat() -> None:
    chat = sealed_client()
    state = chat._state
    assert isinstance(state, DeliveryState)
    # Any other datagram in clear, even an ERROR, never reaches the person.
    fake_error = server_datagram_prefix(Kind.ERROR, 0) + b"message too long: max 1 bytes"
    fake_chat = server_datagram_prefix(Kind.MESSAGE, 13, b"alice") + b"believe me"
    for datagram in (fake_error, fake_chat, encode_received(Status(99, 1))):
        assert chat._unseal(datagram) is None
    assert chat.sealed_refused[Refusal.MALFORMED] == 3
    # The server's unknown token, whole, goes to the core: a doubt that RESUME settles.
    assert chat._unseal(UNKNOWN) == UNKNOWN
    # RESTARTED in clear is not handed on: the path is doubted, and remembered.
    assert chat._unseal(encode_received(Restarted("the server restarted"))) is None
    assert chat._restart_hinted and state.path_trouble == REFUSED_HERE
    assert state.ended is None
    chat._stop_timers()


@pytest.mark.parametrize("features", [("delivery", "sealed")], ids=["no resume, no tunnel"])
async def test_without_resume_an_unknown_token_in_clear_is_dropped(
    features: tuple[str, ...],
) -> None:
    """Nothing could check it: an ERROR anyone can send must not end the chat."""
    chat = sealed_client(features)
    assert chat._unseal(UNKNOWN) is None
    assert chat.sealed_refused[Refusal.MALFORMED] == 1
    assert chat._state.ended is None


async def test_a_restarted_in_clear_that_resume_disproves_is_forgotten() -> None:
    """Anyone can send RESTARTED in clear: the RESUME it starts succeeds, and a drop
    much later must not be told as a restart."""
    async with running_server() as server:
        chat = await ready(server, await ChatClient.create(server_of(server), "lobby", "bob"))
        try:
            chat._datagram_received(encode_received(Restarted("the server restarted")))
            assert chat._restart_hinted and chat._recovery is not None
            await chat._recovery
            assert not chat._restart_hinted and chat.closed is None
        finally:
            await chat.close()
