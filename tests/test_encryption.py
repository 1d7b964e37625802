"""Section 5 of docs/protocol.md end to end, over real sockets: a real server on
loopback, the real client library, and what an observer of the path sees.

* Nothing readable on the wire: a whole room's life (a password, chat lines and actions,
  a tunnel, a resume, everyone leaving) through a capturing :class:`FaultProxy`, and not
  one byte of the password, the texts, the tokens or the resume secrets in what it
  captured; the same scenario in plaintext shows them all (so the check can fail).
* Replay and alteration against a live server, both ways: counted, dropped, never
  relayed twice.
* The plaintext policy on a live server, and a sealed member's token sent in clear.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from ocm.client import ChatClient, Message
from ocm.errors import ErrorCode
from ocm.server.app import OCMServer
from ocm.wire import (
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    ServerDatagram,
    decode_server_datagram,
    encode_client_datagram,
)
from ocm.wire.delivery import Data, Ping, decode_received, encode_extended
from ocm.wire.e2e import FLOOR_ITERATIONS, FLOOR_MEMORY_KIB
from ocm.wire.sealed import Refusal, is_sealed_down, is_sealed_up
from ocm.wire.tcrp import E2eParams
from ocm.wire.texts import UnknownToken, format_refusal
from tests.faults import MODES, PROXY_HOST, FaultProxy, proxy_options, security_for
from tests.kit import (
    LOOPBACK,
    MS,
    OTHER_HOST,
    UdpPeer,
    call,
    enter,
    has_loopback_alias,
    ready,
    running_server,
    server_of,
    settle,
    until,
)

pytestmark = pytest.mark.skipif(
    not has_loopback_alias(PROXY_HOST), reason=f"{PROXY_HOST} is not loopback here"
)

PASSWORD = "hunter2 is not a password"
MOVED_HOST = "127.0.0.3"
FLOOR = E2eParams(bytes(range(16)), FLOOR_MEMORY_KIB, FLOOR_ITERATIONS, 1)
# Chat lines and actions, one of them not ASCII (so its JSON-escaped form differs).
LINES = (
    ("alice", "the launch codes are 0000", False),
    ("bob", "meet me at the old mill", False),
    ("carol", "tunnelled whisper ✓ héllo", False),
    ("bob", "hides the evidence", True),
    ("alice", "moved and still secret", False),
)
UNKNOWN_TOKEN = format_refusal(UnknownToken())
GARBAGE = 300  # datagrams of each kind in the flood


def forms(secret: str) -> list[bytes]:
    """``secret`` as it could appear on the wire: UTF-8 and JSON-escaped (both ways)."""
    found = {secret.encode(), json.dumps(secret)[1:-1].encode()}
    found.add(json.dumps(secret, ensure_ascii=False)[1:-1].encode())
    return sorted(found)


async def messages(chat: ChatClient, count: int, timeout: float = 5000 * MS) -> list[Message]:
    """The next ``count`` Messages (other events are skipped)."""
    got: list[Message] = []
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in chat:
            events.append(event)
            if isinstance(event, Message):
                got.append(event)
                if len(got) == count:
                    break
    assert len(got) == count, (chat.name, events, chat.closed, chat.server_lost)
    return got


async def say(chat: ChatClient, text: str, action: bool) -> None:
    await (chat.send_action(text) if action else chat.send(text))


async def a_rooms_life(
    server: OCMServer, proxy: FaultProxy, mode: str, *, e2e: bool = False
) -> list[str]:
    """alice creates a protected room, bob joins, carol joins over a tunnel; they chat
    (actions too), bob's network moves (he resumes) where a second loopback exists, and
    everyone leaves. Returns the secrets that went by: the password, the texts, every
    token and resume secret."""
    security = security_for(mode)
    # The default heartbeat: a recovery gets one interval to RESUME over TLS (section
    # 4), which a loaded machine can exceed at a test's 100 ms; nothing here waits on a
    # heartbeat (the move is found by the next send).
    options: dict[str, Any] = {"security": security}
    where = proxy.address
    alice = await ChatClient.create(
        where, "lobby", "alice", PASSWORD, e2e=FLOOR if e2e else False, **options
    )
    bob = await ChatClient.join(where, "lobby", "bob", PASSWORD, **options)
    carol = await ChatClient.join(where, "lobby", "carol", PASSWORD, tcp=True, **options)
    chats = {"alice": alice, "bob": bob, "carol": carol}
    assert all(chat.encrypted == (mode == "sealed") for chat in chats.values())
    assert carol.over_tcp
    secrets = [PASSWORD, *(text for _, text, _ in LINES)]
    secrets += [chat.token for chat in chats.values()]
    secrets += [chat._secret for chat in chats.values() if chat._secret is not None]
    members = server.registry.rooms["lobby"].members
    await until(lambda: all(members[name].address is not None for name in chats))
    for sender, text, action in LINES[:-1]:
        await say(chats[sender], text, action)
        for chat in chats.values():
            (heard,) = await messages(chat, 1)
            assert (heard.sender, heard.text, heard.action) == (sender, text, action)
    moved = has_loopback_alias(MOVED_HOST)
    if moved:
        proxy.move(MOVED_HOST)  # bob's (and alice's) network changes: they resume
    sender, text, action = LINES[-1]
    await say(alice, text, action)
    await bob.send("resumed")  # makes bob find out about the move
    for chat in chats.values():
        last = await messages(chat, 2)
        assert sorted(m.text for m in last) == sorted([text, "resumed"])  # both moved
    if moved:  # bob resumed from the new address, with a new secret
        assert server.registry.rooms["lobby"].members["bob"].ip == MOVED_HOST
        assert bob._secret is not None and bob._secret not in secrets
    secrets += [chat._secret for chat in chats.values() if chat._secret is not None]
    assert await bob.close() and await carol.close() and await alice.close()
    assert server.registry.rooms == {}
    return secrets


def captured(proxy: FaultProxy) -> list[bytes]:
    assert proxy.captured is not None
    return proxy.captured


def leaks(chunks: list[bytes], secrets: list[str]) -> list[str]:
    """The secrets found in the capture: in the whole stream or in any one datagram."""
    stream = b"".join(chunks)
    return [
        secret
        for secret in secrets
        if any(form in stream or any(form in chunk for chunk in chunks) for form in forms(secret))
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_nothing_readable_crosses_the_wire_unless_plaintext(mode: str) -> None:
    async with (
        running_server(allow_plaintext=mode == "plaintext") as server,
        FaultProxy.start(
            server.tcp_port, server.udp_port, seed=14, capture=True, **proxy_options(mode)
        ) as proxy,
    ):
        secrets = await a_rooms_life(server, proxy, mode)
        chunks = captured(proxy)
        assert proxy.counters.up.forwarded > 10 and proxy.counters.down.forwarded > 10
        if mode == "sealed":
            assert leaks(chunks, secrets) == []
            # Every datagram a client sent was sealed (TCP was TLS: no chunk looks so).
            assert sum(map(is_sealed_up, chunks)) == proxy.counters.up.received
        else:
            # The same life in clear shows all of it: the check above can fail.
            assert leaks(chunks, secrets) == secrets


async def test_an_e2e_room_shows_nothing_on_the_wire_nor_in_the_servers_history() -> None:
    async with (
        running_server(allow_plaintext=False) as server,
        FaultProxy.start(
            server.tcp_port, server.udp_port, seed=15, capture=True, **proxy_options("sealed")
        ) as proxy,
    ):
        held: list[bytes] = []
        history_of = server.registry.rooms.get

        async def keep_history() -> None:
            while True:  # the room's history, read while the room lives
                room = history_of("lobby")
                if room is not None and room.history is not None:
                    kept = [
                        room.history.get(s) for s in range(room.history.first_seq, room.seq + 1)
                    ]
                    held[:] = [d for d in kept if d is not None]
                await asyncio.sleep(5 * MS)

        watcher = asyncio.create_task(keep_history())
        try:
            secrets = await a_rooms_life(server, proxy, "sealed", e2e=True)
        finally:
            watcher.cancel()
        assert leaks(captured(proxy), secrets) == []
        assert any(b"e2e1:" in d for d in held)  # the server held envelopes...
        assert leaks(held, [text for _, text, _ in LINES]) == []  # ...and no plaintext


# ---------------------------------------------------------------------------
# Replay and alteration against a live server
# ---------------------------------------------------------------------------


def recording(chat: ChatClient) -> list[bytes]:
    """Every datagram ``chat`` sends from now on, as it left (sealed)."""
    transport = chat._transport
    assert transport is not None
    sent: list[bytes] = []
    send = transport.sendto

    def sendto(data: Any, addr: Any = None) -> None:
        sent.append(bytes(data))
        send(data, addr)

    transport.sendto = sendto  # type: ignore[method-assign]
    return sent


def received_by(chat: ChatClient) -> list[bytes]:
    """Every datagram that reaches ``chat`` from now on, as it came (sealed)."""
    got: list[bytes] = []
    handle: Callable[[bytes], None] = chat._datagram_received

    def datagram_received(data: bytes) -> None:
        got.append(bytes(data))
        handle(data)

    chat._datagram_received = datagram_received  # type: ignore[method-assign]
    return got


async def replies(peer: UdpPeer, settle: float = 20 * MS) -> list[bytes]:
    """Every datagram ``peer`` got, as bytes, once ``settle`` has passed."""
    await asyncio.sleep(settle)
    got = []
    while not peer.received.empty():
        got.append(peer.received.get_nowait())
    return got


def altered(data: bytes, index: int) -> bytes:
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1 :]


async def sealed_pair(server: OCMServer) -> tuple[ChatClient, ChatClient]:
    alice = await ready(server, await ChatClient.create(server_of(server), "lobby", "alice"))
    bob = await ready(server, await ChatClient.join(server_of(server), "lobby", "bob"))
    assert alice.encrypted and bob.encrypted
    await settle(alice)  # "bob joined"
    return alice, bob


async def test_a_replayed_or_altered_datagram_is_dropped_by_the_server_and_counted() -> None:
    async with running_server(allow_plaintext=False) as server:
        alice, bob = await sealed_pair(server)
        refused = server.relay.sealed_refused
        sent = recording(bob)
        await bob.send("only once")
        assert [m.text for m in await messages(alice, 1)] == ["only once"]
        assert await bob.flush(2)
        (data,) = [d for d in sent if len(d) > 40]  # the DATA (PINGs are shorter)
        room = server.registry.rooms["lobby"]
        seq, relayed = room.seq, server.relay.relayed
        before = dict(refused)
        assert bob._transport is not None
        bob._transport.sendto(data)  # again, from bob's own address and port
        await until(lambda: refused[Refusal.REPLAYED] == before[Refusal.REPLAYED] + 1)
        for index in (0 + 9, 20, len(data) - 1):  # the Session, the ciphertext, the tag
            bob._transport.sendto(altered(data, index))
        await until(lambda: refused[Refusal.FORGED] == before[Refusal.FORGED] + 2)
        assert refused[Refusal.UNKNOWN] == before[Refusal.UNKNOWN] + 1  # the Session one
        assert (room.seq, server.relay.relayed) == (seq, relayed)  # nothing relayed
        assert [e for e in await settle(alice, 100 * MS) if isinstance(e, Message)] == []
        # The room goes on, bob with it.
        await bob.send("still here")
        assert [m.text for m in await messages(alice, 1)] == ["still here"]
        assert [m.text for m in await messages(bob, 2)] == ["only once", "still here"]
        assert await bob.close() and await alice.close()


async def test_a_replayed_or_altered_server_datagram_is_dropped_by_the_client_and_counted() -> None:
    async with running_server(allow_plaintext=False) as server:
        alice, bob = await sealed_pair(server)
        got = received_by(alice)
        await bob.send("say it once")
        assert [m.text for m in await messages(alice, 1)] == ["say it once"]
        chat = [d for d in got if b"say it once" not in d and len(d) > 40]
        assert chat and all(is_sealed_down(d) for d in got)
        data = chat[-1]
        endpoint = server._endpoint.transport
        assert endpoint is not None and alice._transport is not None
        alice_address = alice._transport.get_extra_info("sockname")
        endpoint.sendto(data, alice_address)  # from the server's own address and port
        await until(lambda: alice.sealed_refused[Refusal.REPLAYED] == 1)
        for index in (1, 10, len(data) - 1):  # the KeyId, the Counter's end, the tag
            endpoint.sendto(altered(data, index), alice_address)
        await until(lambda: sum(alice.sealed_refused.values()) == 4)
        assert alice.sealed_refused[Refusal.UNKNOWN] == 1  # another KeyId
        assert alice.sealed_refused[Refusal.FORGED] == 2
        assert [e for e in await settle(alice, 100 * MS) if isinstance(e, Message)] == []
        await bob.send("and goes on")
        assert [m.text for m in await messages(alice, 1)] == ["and goes on"]
        assert await bob.close() and await alice.close()


async def test_a_flood_of_sealed_garbage_is_counted_exactly_and_answered_sparingly() -> None:
    async with running_server(allow_plaintext=False) as server:
        alice, bob = await sealed_pair(server)
        refused, relay = server.relay.sealed_refused, server.relay
        sent = recording(bob)
        for n in range(3):
            await bob.send(f"line {n}")
        assert [m.text for m in await messages(alice, 3)] == [f"line {n}" for n in range(3)]
        assert await bob.flush(2)
        session = sent[0][2:10]
        seq, relayed, before = server.registry.rooms["lobby"].seq, relay.relayed, dict(refused)
        rng = random.Random(14)

        def garbage(session: bytes) -> bytes:
            return bytes((0, 5)) + session + rng.randbytes(rng.randrange(50, 300))

        prefix = session[:4]
        floods = {  # (from bob's IP?, datagrams, the refusal each must be counted as)
            "forged": (True, [garbage(session) for _ in range(GARBAGE)], Refusal.FORGED),
            "replayed": (True, [sent[n % len(sent)] for n in range(GARBAGE)], Refusal.REPLAYED),
            "short": (True, [bytes((0, 5)) + session + bytes(20)] * 10, Refusal.MALFORMED),
            "unknown": (
                True,
                [garbage(prefix + rng.randbytes(4)) for _ in range(GARBAGE)],
                Refusal.UNKNOWN,
            ),
            "stolen": (False, [garbage(session) for _ in range(GARBAGE)], Refusal.UNKNOWN),
        }
        expected = dict(before)
        answers: dict[str, list[bytes]] = {}
        for name, (same_ip, datagrams, why) in floods.items():
            peer = await UdpPeer.open(
                server.udp_port, local_host=LOOPBACK if same_ip else OTHER_HOST
            )
            try:
                for n, datagram in enumerate(datagrams):
                    peer.send_raw(datagram)
                    if n % 20 == 19:
                        await asyncio.sleep(0)  # the server reads as we go: no kernel drops
                expected[why] += len(datagrams)
                await until(lambda: refused == expected)
                answers[name] = await replies(peer)
            finally:
                peer.close()
        assert refused == expected
        # Forged, replayed or short, under a member's Session from its IP: no answer at all.
        assert answers["forged"] == answers["replayed"] == answers["short"] == []
        # Unknown Sessions: unknown token in clear, rate-limited, each smaller than the flood's.
        for name in ("unknown", "stolen"):
            assert 0 < len(answers[name]) <= server.config.limits.error_replies_per_second
            for answer in answers[name]:
                assert decode_server_datagram(answer).text == UNKNOWN_TOKEN
                assert len(answer) <= 60  # the smallest garbage: 10 + 50 bytes
        # Nothing was relayed; the room goes on.
        assert (server.registry.rooms["lobby"].seq, relay.relayed) == (seq, relayed)
        assert [e for e in await settle(alice, 50 * MS) if isinstance(e, Message)] == []
        await bob.send("after the storm")
        assert [m.text for m in await messages(alice, 1)] == ["after the storm"]
        assert alice.sealed_refused == bob.sealed_refused == dict.fromkeys(Refusal, 0)
        assert await bob.close() and await alice.close()


# ---------------------------------------------------------------------------
# The plaintext policy, live
# ---------------------------------------------------------------------------


async def test_a_version_1_client_is_refused_unless_plaintext_is_allowed() -> None:
    async with running_server(allow_plaintext=False) as server:
        for request in (CreateRoom("plain", "pat"), JoinRoom("plain", "pat")):
            ack, complete = await call(server.tcp_port, request)
            assert (ack.error, complete) == (ErrorCode.ENCRYPTION_REQUIRED, None)
        assert server.registry.rooms == {}


async def test_with_allow_plaintext_version_1_and_sealed_rooms_chat_side_by_side() -> None:
    async with running_server(allow_plaintext=True) as server:
        pat = await enter(server, CreateRoom("plain", "pat"))
        alice, bob = await sealed_pair(server)
        try:
            for n in range(3):
                pat.say(f"clear {n}")
                await bob.send(f"sealed {n}")
                reply = decode_server_datagram(await pat.peer.recv_raw())
                assert (reply.kind, reply.text) == (Kind.MESSAGE, f"clear {n}")
                assert [m.text for m in await messages(alice, 1)] == [f"sealed {n}"]
            assert server.registry.rooms["plain"].sealer is None
            assert server.registry.rooms["lobby"].sealer is not None
        finally:
            pat.peer.close()
        assert await bob.close() and await alice.close()


async def test_a_sealed_members_token_in_clear_is_refused_and_harms_nobody() -> None:
    async with running_server() as server:  # plaintext allowed: the worst case
        alice, bob = await sealed_pair(server)
        room = server.registry.rooms["lobby"]
        seq, relayed = room.seq, server.relay.relayed
        thief = await UdpPeer.open(server.udp_port, local_host=LOOPBACK)  # bob's IP
        try:
            token = bob.token
            for datagram in (
                encode_extended(Ping(token, 1, server.registry.boot)),
                encode_extended(Data(token, 1, "spoofed")),
                encode_client_datagram(ClientDatagram("lobby", token, "spoofed v1")),
                encode_client_datagram(ClientDatagram("lobby", token, "")),
            ):
                thief.send_raw(datagram)
                try:
                    reply = await thief.recv_raw(200 * MS)
                except TimeoutError:
                    continue  # nothing: fine too
                assert not is_sealed_down(reply)
                answer = decode_received(reply)
                assert isinstance(answer, ServerDatagram), answer
                assert (answer.kind, answer.text) == (Kind.ERROR, UNKNOWN_TOKEN)
        finally:
            thief.close()
        assert (room.seq, server.relay.relayed) == (seq, relayed)
        assert room.members["bob"].address == bob._transport.get_extra_info("sockname")  # type: ignore[union-attr]
        assert [e for e in await settle(alice, 100 * MS) if isinstance(e, Message)] == []
        await bob.send("unharmed")
        assert [m.text for m in await messages(alice, 1)] == ["unharmed"]
        assert [m.text for m in await messages(bob, 1)] == ["unharmed"]
        assert await bob.close() and await alice.close()
