"""End-to-end rooms (section 5 of docs/protocol.md) through real sockets: a real server
on loopback, library clients, raw TCRP where a test must say exactly what is sent.

Rooms are created at the client's floor (19456 KiB, 2 passes, 1 lane): tens of
milliseconds per derivation.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from typing import Any

import pytest

from ocm.client import ChatClient, Message, Notice, Undelivered
from ocm.client.e2e import undecryptable_text
from ocm.client.session import text_limit
from ocm.errors import (
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    ServerError,
)
from ocm.server.app import OCMServer
from ocm.server.registry import Room, RoomRegistry
from ocm.wire import (
    Admission,
    CreateRoom,
    JoinRoom,
    Operation,
    encode_error_ack,
    parse_request,
)
from ocm.wire.e2e import (
    FLOOR_ITERATIONS,
    FLOOR_MEMORY_KIB,
    derive_keys,
    envelope_size,
    open_text,
    seal_text,
)
from ocm.wire.framer import TcrpReader
from ocm.wire.tcrp import E2eParams, LookupRoom, RoomDetails, StartTls
from tests.faults import PLAINTEXT
from tests.kit import (
    LOOPBACK,
    MS,
    TcrpConnection,
    admit,
    call,
    fake_server,
    ready,
    running_server,
    server_of,
    settle,
    until,
)

PASSWORD = "correct horse battery staple"
FLOOR = E2eParams(bytes(range(16)), FLOOR_MEMORY_KIB, FLOOR_ITERATIONS, 1)
KEYS = derive_keys(PASSWORD, FLOOR)


async def e2e_pair(server: OCMServer, **options: Any) -> tuple[ChatClient, ChatClient]:
    """alice hosts the end-to-end room "vault", bob joins it with the password."""
    where = server_of(server)
    alice = await ChatClient.create(where, "vault", "alice", PASSWORD, e2e=FLOOR, **options)
    bob = await ChatClient.join(where, "vault", "bob", PASSWORD, **options)
    return await ready(server, alice), await ready(server, bob)


def messages(events: list[Any]) -> list[tuple[str, str, bool]]:
    return [(e.sender, e.text, e.action) for e in events if isinstance(e, Message)]


def room_of(server: OCMServer, name: str = "vault") -> Room:
    return server.registry.rooms[name]


# ---------------------------------------------------------------------------
# Chatting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("delivery", [True, False])
async def test_members_chat_in_plaintext_while_the_wire_carries_envelopes(
    delivery: bool,
) -> None:
    async with running_server() as server:
        alice, bob = await e2e_pair(server, delivery=delivery)
        async with alice, bob:
            assert alice.e2e and bob.e2e
            await alice.send("hello bob")
            await bob.send("hi alice")
            await bob.send_action("waves")
            await alice.send_action("waves back")
            assert await alice.flush(2) and await bob.flush(2)
            expected = [
                ("alice", "hello bob", False),
                ("bob", "hi alice", False),
                ("bob", "waves", True),
                ("alice", "waves back", True),
            ]
            assert messages(await settle(alice)) == expected
            assert messages(await settle(bob)) == expected
            assert alice.undecryptable == bob.undecryptable == 0


async def test_history_on_joining_comes_out_decrypted() -> None:
    async with running_server() as server:
        where = server_of(server)
        alice = await ready(
            server, await ChatClient.create(where, "vault", "alice", PASSWORD, e2e=FLOOR)
        )
        async with alice:
            await alice.send("before you came")
            await alice.send_action("hums")
            assert await alice.flush(2)
            bob = await ChatClient.join(where, "vault", "bob", PASSWORD, history=10)
            async with bob:
                assert await bob.catch_up(2)
                events = await settle(bob)
                history = [(e.text, e.action) for e in events if isinstance(e, Message)]
                assert history == [("before you came", False), ("hums", True)]
                assert all(e.history for e in events if isinstance(e, Message))


async def test_the_server_holds_no_plaintext_and_nothing_it_holds_opens_a_message() -> None:
    async with running_server() as server:
        alice, bob = await e2e_pair(server)
        async with alice, bob:
            await alice.send("the secret plan")
            await bob.send_action("nods")
            assert await alice.flush(2) and await bob.flush(2)
            room = room_of(server)
            assert room.e2e == FLOOR
            # Every chat datagram the server keeps for history and repair is an envelope.
            history = room.history
            assert history is not None
            kept = [history.get(seq) for seq in range(history.first_seq, room.seq + 1)]
            chats = [d for d in kept if d is not None and b"e2e1:" in d]
            assert len(chats) == 2
            for datagram in kept:
                assert datagram is not None
                assert b"secret plan" not in datagram and b"nods" not in datagram
            # The stored password hash is of the auth key, not of the password.
            assert room.password is not None
            assert room.password.verify(KEYS.auth_password)
            assert not room.password.verify(PASSWORD)
            # What the server holds or received opens nothing: the auth key (raw, in
            # hex, hashed), the salt, the room's parameters.
            envelope = seal_text(KEYS.message, "vault", "alice", "the secret plan", bytes(12))
            assert open_text(KEYS.message, "vault", "alice", envelope) == "the secret plan"
            held = [
                KEYS.auth,
                KEYS.auth_password.encode()[:32],
                hashlib.sha256(KEYS.auth_password.encode()).digest(),
                hashlib.sha256(FLOOR.salt).digest(),
            ]
            for key in held:
                with pytest.raises(RemoteProtocolError):
                    open_text(key, "vault", "alice", envelope)


async def test_too_long_a_text_is_refused_before_it_is_sealed_and_sent() -> None:
    async with running_server() as server:
        alice, bob = await e2e_pair(server)
        async with alice, bob:
            plain = await ChatClient.create(server_of(server), "open", "carol")
            async with plain:
                assert alice.max_text_bytes < plain.max_text_bytes
            wire_limit = text_limit("vault", alice.token, "alice", delivery=alice.delivery)
            assert envelope_size(alice.max_text_bytes) <= wire_limit
            assert envelope_size(alice.max_text_bytes + 1) > wire_limit
            longest = "é" * (alice.max_text_bytes // 2)
            assert alice.fit("é" * 5000) == longest
            assert alice.check_text(longest)
            await alice.send(longest)
            assert await alice.flush(2)
            with pytest.raises(LocalProtocolError) as caught:
                await alice.send("x" * (alice.max_text_bytes + 1))
            assert caught.value.code is ErrorCode.TOO_LARGE
            assert [e.text for e in await settle(bob) if isinstance(e, Message)] == [longest]


# ---------------------------------------------------------------------------
# Who gets in
# ---------------------------------------------------------------------------


async def test_a_wrong_password_is_wrong_password() -> None:
    async with running_server() as server:
        alice = await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=FLOOR)
        async with alice:
            with pytest.raises(ServerError) as caught:
                await ChatClient.join(server_of(server), "vault", "mallory", "guess")
            assert caught.value.code is ErrorCode.WRONG_PASSWORD
            with pytest.raises(ServerError) as caught:  # no password: nothing to derive
                await ChatClient.join(server_of(server), "vault", "mallory")
            assert caught.value.code is ErrorCode.E2E_REQUIRED


async def test_a_join_without_the_feature_is_refused_before_the_password_and_not_counted() -> None:
    async with running_server(max_password_failures=1) as server:
        port = server.tcp_port
        alice = await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=FLOOR)
        async with alice:
            sealed = ("delivery", "sealed")  # all a sealed room asks (section 5), but e2e
            for password in (PASSWORD, KEYS.auth_password, "guess", None):
                ack, _ = await call(port, JoinRoom("vault", "old", password, sealed), tls=True)
                assert ack.error is ErrorCode.E2E_REQUIRED, password
                assert ack.message == (
                    'room "vault" is end-to-end encrypted; join it with an OCM client'
                )
            # None of those counted as a failure (one would block us): the right auth
            # key with the feature gets in.
            request = JoinRoom("vault", "bob", KEYS.auth_password, (*sealed, "e2e"))
            admission = await admit(port, request, tls=True)
            assert admission.features == (*sealed, "e2e")


async def test_lookup_room_tells_the_parameters_of_an_e2e_room_only() -> None:
    async with running_server() as server:
        port = server.tcp_port
        alice = await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=FLOOR)
        plain = await ChatClient.create(server_of(server), "secret", "carol", "pw")
        async with alice, plain:
            connection = await TcrpConnection.open(port, tls=True)
            try:  # several lookups, then a join, on one connection
                _, details = await connection.call(LookupRoom("vault"))
                assert details == RoomDetails("vault", 1, True, FLOOR)
                _, details = await connection.call(LookupRoom("secret"))
                assert details == RoomDetails("secret", 1, True, None)
                ack, _ = await connection.call(LookupRoom("nowhere"))
                assert ack.error is ErrorCode.NO_SUCH_ROOM
                features = ("delivery", "sealed", "e2e")
                request = JoinRoom("vault", "bob", KEYS.auth_password, features)
                ack, admission = await connection.call(request)
                assert ack.ok and isinstance(admission, Admission)
                assert admission.features == features
                _, details = await connection.call(LookupRoom("vault"))
                assert isinstance(details, RoomDetails) and details.members == 2
            finally:
                await connection.close()
            assert plain.e2e is False


async def test_an_e2e_create_needs_a_password_on_both_ends() -> None:
    async with running_server() as server:
        ack, _ = await call(server.tcp_port, CreateRoom("vault", "alice", None, (), FLOOR))
        assert (ack.error, ack.message) == (
            ErrorCode.BAD_REQUEST,
            "an end-to-end room needs a password",
        )
        for password in (None, ""):
            with pytest.raises(LocalProtocolError, match="needs a password"):
                await ChatClient.create(server_of(server), "vault", "alice", password, e2e=True)
        assert server.registry.rooms == {}


async def test_a_creator_refuses_parameters_below_the_floor_before_sending() -> None:
    async with running_server() as server:
        weak = replace(FLOOR, iterations=1)
        with pytest.raises(LocalProtocolError, match="too weak"):
            await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=weak)
        assert server.registry.rooms == {}


async def test_a_creator_uses_the_default_parameters_with_a_fresh_salt() -> None:
    async with running_server() as server:
        where = server_of(server)
        one = await ChatClient.create(where, "one", "alice", PASSWORD, e2e=True)
        two = await ChatClient.create(where, "two", "alice", PASSWORD, e2e=True)
        async with one, two:
            first, second = room_of(server, "one").e2e, room_of(server, "two").e2e
            assert first is not None and second is not None
            assert (first.memory_kib, first.iterations, first.lanes) == (65536, 3, 4)
            assert len(first.salt) == 16 and first.salt != second.salt
            bob = await ChatClient.join(where, "one", "bob", PASSWORD)
            async with bob:
                assert bob.e2e


async def test_a_creator_leaves_a_room_the_server_did_not_make_end_to_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that ignores CREATE_ROOM's e2e field makes a plain protected room, which
    joiners would enter with the password itself: the creator leaves it and says so."""
    original = RoomRegistry.begin_create

    def ignoring(self: RoomRegistry, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **{**kwargs, "e2e": None})

    monkeypatch.setattr(RoomRegistry, "begin_create", ignoring)
    async with running_server() as server:
        with pytest.raises(RemoteProtocolError, match="does not support end-to-end rooms"):
            await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=FLOOR)
        await until(lambda: not server.registry.rooms)


async def test_a_joiner_refuses_weak_parameters_from_the_server_and_sends_nothing() -> None:
    async with running_server(max_password_failures=1) as server:
        alice = await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=FLOOR)
        async with alice:
            room = room_of(server)
            # A server that wants to guess the password hands joiners a cheap KDF.
            room.e2e = replace(FLOOR, memory_kib=64, iterations=1)
            with pytest.raises(RemoteProtocolError, match="too weak"):
                await ChatClient.join(server_of(server), "vault", "bob", PASSWORD)
            assert [m.name for m in room.members.values()] == ["alice"]
            # No JOIN_ROOM reached the server: not even counted as a wrong password.
            assert not server.registry.failures.blocked(LOOPBACK, asyncio.get_running_loop().time())


async def test_a_joiner_of_a_server_without_lookup_joins_as_before() -> None:
    """An older server answers LOOKUP_ROOM with unknown_operation and closes the
    connection: the join goes on a new one, with the password as given."""
    async with fake_server() as fake:
        old_handle = fake.handle

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            framer = TcrpReader()
            data = await reader.read(64 * 1024)
            framer.feed(data)
            message = framer.next_message()
            assert message is not None
            if message.operation is Operation.LOOKUP_ROOM:
                fake.requests.append(parse_request(message))
                writer.write(encode_error_ack(8, "", ErrorCode.UNKNOWN_OPERATION, "unknown"))
                await writer.drain()
                writer.close()
                return
            replay = asyncio.StreamReader()
            replay.feed_data(data)
            await old_handle(replay, writer)

        listener = await asyncio.start_server(handle, LOOPBACK, 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            chat = await ChatClient.join(
                (LOOPBACK, port), "lobby", "bob", "pw", delivery=False, security=PLAINTEXT
            )
            async with chat:
                assert not chat.e2e
        finally:
            listener.close()
        lookup, join = fake.requests[:2]
        assert lookup == LookupRoom("lobby")
        assert isinstance(join, JoinRoom) and join.password == "pw"
        assert "e2e" not in join.features


async def test_a_joiner_never_sends_the_password_to_an_e2e_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every request the server parses is recorded: the lookup and the join carry the
    auth key, never the password."""
    import ocm.server.tcp

    parsed: list[Any] = []

    def recording(message: Any) -> Any:
        request = ocm.wire.tcrp.parse_request(message)
        parsed.append(request)
        return request

    monkeypatch.setattr(ocm.server.tcp, "parse_request", recording)
    async with running_server() as server:
        alice = await ChatClient.create(server_of(server), "vault", "alice", PASSWORD, e2e=FLOOR)
        bob = await ChatClient.join(server_of(server), "vault", "bob", PASSWORD)
        async with alice, bob:
            assert bob.e2e
    create, lookup, join = [r for r in parsed if not isinstance(r, StartTls)][:3]
    assert isinstance(create, CreateRoom) and create.e2e == FLOOR
    assert lookup == LookupRoom("vault")
    assert isinstance(join, JoinRoom) and "e2e" in join.features
    assert create.password == join.password == KEYS.auth_password
    assert all(PASSWORD not in repr(request) for request in parsed)


# ---------------------------------------------------------------------------
# What does not open
# ---------------------------------------------------------------------------


async def test_a_message_that_does_not_open_is_dropped_counted_and_reported_once() -> None:
    """A member with the auth key but not the message key (as a server could add one)
    sends texts not sealed with the room's key: readers see one notice, never the text.
    mallory is a sealed member like any other (section 5 seals the datagrams), whose
    texts skip the room's envelope."""
    async with running_server() as server:
        where = server_of(server)
        alice = await ready(
            server, await ChatClient.create(where, "vault", "alice", PASSWORD, e2e=FLOOR)
        )
        mallory = await ready(server, await ChatClient.join(where, "vault", "mallory", PASSWORD))
        async with alice, mallory:
            mallory._cipher = None  # what it sends goes as it is, and comes back as it is
            wrong = derive_keys("another password", FLOOR).message
            texts = [
                "plain text",  # not sealed
                seal_text(wrong, "vault", "mallory", "other key", bytes(12)),
                seal_text(KEYS.message, "vault", "alice", "as alice", bytes(12)),  # forged
                seal_text(KEYS.message, "vault", "mallory", "sealed right", bytes(12)),
            ]
            for text in texts:
                await mallory.send(text)
            await until(lambda: alice.undecryptable == 3)
            events = await settle(alice, 100 * MS)
            shown = [e for e in events if isinstance(e, Message | Notice)]
            assert shown[-2:] == [
                Notice(undecryptable_text("mallory"), shown[-2].seq),
                Message("mallory", "sealed right", shown[-1].seq),
            ]
            assert all("plain text" not in str(e) for e in events)
            # What the room carried: the texts as mallory sent them, envelopes or not.
            chat = [e.text for e in await settle(mallory, 100 * MS) if isinstance(e, Message)]
            assert chat[0] == "plain text" and chat[-1].startswith("e2e1:")


async def test_undelivered_texts_come_back_in_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_server() as server:
        alice, bob = await e2e_pair(server, delivery=False, confirm_timeout=50 * MS)
        async with alice, bob:
            # Lost on the way (version 1 does not resend): her copy never comes back.
            transport = alice._transport
            assert transport is not None
            monkeypatch.setattr(transport, "sendto", lambda data, address=None: None)
            await alice.send_action("shouts into the void")
            events = await settle(alice, 200 * MS)
            assert Undelivered("\x01ACTION shouts into the void\x01") in events


async def test_an_e2e_room_is_never_entered_in_plaintext() -> None:
    """Its auth key would cross the network in clear, and anyone on the path could
    guess the password from it offline: refused before it is sent, create and join."""
    async with running_server() as server:
        where = server_of(server)
        with pytest.raises(LocalProtocolError, match="not entered without encryption"):
            await ChatClient.create(
                where, "vault", "alice", PASSWORD, e2e=FLOOR, security=PLAINTEXT
            )
        assert server.registry.rooms == {}
        async with await ChatClient.create(where, "vault", "alice", PASSWORD, e2e=FLOOR):
            for e2e in (True, False):  # insisting, or finding out from LOOKUP_ROOM
                with pytest.raises(LocalProtocolError, match="not entered without encryption"):
                    await ChatClient.join(
                        where, "vault", "bob", PASSWORD, e2e=e2e, security=PLAINTEXT
                    )
            assert list(server.registry.rooms["vault"].members) == ["alice"]
