"""IPv6: a server on ``::1`` or ``::`` (dual stack), spoken to with raw TCRP and UDP, the
client library and the ``ocm`` command (``--server [::1]:PORT``).

A token is bound to the IP of the TCP connection that obtained it. On a dual-stack
socket an IPv4 client shows up as ``::ffff:127.0.0.1`` on TCP and on UDP alike, so its
chat works; the same token sent from ``::1`` is still another IP and is refused.
Skipped with a reason where the machine has no IPv6 loopback or no dual stack.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ocm.client import ChatClient, Message, list_rooms, parse_server_address
from ocm.wire import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    Left,
    ListRooms,
    Reply,
    Request,
    RoomInfo,
    RoomList,
)
from tests import kit
from tests.kit import LOOPBACK, MS, UdpPeer, running_server

V6_LOOPBACK = "::1"
SRC = Path(__file__).resolve().parents[2] / "src"


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((V6_LOOPBACK, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)"
)
needs_dual_stack = pytest.mark.skipif(
    not (has_ipv6_loopback() and socket.has_dualstack_ipv6()),
    reason="this system does not offer dual-stack IPv6 sockets",
)


async def call(host: str, port: int, request: Request) -> tuple[Ack, Reply | None]:
    """One TCRP exchange on a new connection to ``host`` (either family)."""
    return await kit.call(port, request, host=host, local_host=None)


async def admit(host: str, port: int, request: CreateRoom | JoinRoom) -> Admission:
    ack, complete = await call(host, port, request)
    assert ack.ok, ack
    assert isinstance(complete, Admission)
    return complete


async def udp_peer(host: str, port: int) -> UdpPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(UdpPeer, remote_addr=(host, port))
    return peer


@asynccontextmanager
async def peers(*peers: UdpPeer) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for peer in peers:
            peer.close()


@needs_ipv6
async def test_ipv6_only_server_creates_joins_and_relays() -> None:
    async with running_server(host=V6_LOOPBACK) as server:
        alice = await admit(V6_LOOPBACK, server.tcp_port, CreateRoom("lobby", "alice"))
        bob = await admit(V6_LOOPBACK, server.tcp_port, JoinRoom("lobby", "bob"))
        a, b = (
            await udp_peer(V6_LOOPBACK, alice.udp_port),
            await udp_peer(V6_LOOPBACK, bob.udp_port),
        )
        async with peers(a, b):
            a.send("lobby", alice.token)
            b.send("lobby", bob.token)
            await asyncio.sleep(20 * MS)

            b.send("lobby", bob.token, "over IPv6 ✓")

            for peer in (a, b):
                message = await peer.recv()
                assert (message.kind, message.sender, message.text) == (
                    Kind.MESSAGE,
                    "bob",
                    "over IPv6 ✓",
                )
        ack, rooms = await call(V6_LOOPBACK, server.tcp_port, ListRooms())
        assert ack.ok and rooms == RoomList((RoomInfo("lobby", 2, protected=False),))


@needs_dual_stack
async def test_dual_stack_server_takes_ipv4_and_ipv6_clients_in_one_room() -> None:
    async with running_server(host="::") as server:
        port = server.tcp_port
        alice = await admit(V6_LOOPBACK, port, CreateRoom("lobby", "alice"))
        bob = await admit(LOOPBACK, port, JoinRoom("lobby", "bob"))
        assert bob.members == ("alice", "bob")
        a = await udp_peer(V6_LOOPBACK, alice.udp_port)
        b = await udp_peer(LOOPBACK, bob.udp_port)
        intruder = await udp_peer(V6_LOOPBACK, bob.udp_port)
        async with peers(a, b, intruder):
            a.send("lobby", alice.token)
            b.send("lobby", bob.token)
            await asyncio.sleep(20 * MS)

            b.send("lobby", bob.token, "from IPv4")
            a.send("lobby", alice.token, "from IPv6")

            for peer in (a, b):
                texts = [(await peer.recv()).text for _ in range(2)]
                assert sorted(texts) == ["from IPv4", "from IPv6"]
            # bob's token was issued to 127.0.0.1 (seen as ::ffff:127.0.0.1): ::1 is
            # another IP, whatever the family.
            intruder.send("lobby", bob.token, "not bob")
            assert (await intruder.recv()).kind is Kind.ERROR
            await a.expect_silence(50 * MS)

            # LEAVE_ROOM over IPv4 with the IPv4 member's token: the mapped and the
            # plain form of 127.0.0.1 are one IP.
            ack, left = await call(LOOPBACK, port, LeaveRoom("lobby", bob.token))
            assert ack.ok and left == Left("lobby")
            notice = await a.recv()
            assert (notice.kind, notice.text) == (Kind.NOTICE, "bob left")


@needs_dual_stack
async def test_client_library_takes_bracketed_ipv6_addresses() -> None:
    assert parse_server_address("[::1]:9001") == ("::1", 9001)
    async with running_server(host="::") as server:
        v6 = f"[{V6_LOOPBACK}]:{server.tcp_port}"
        v4 = f"{LOOPBACK}:{server.tcp_port}"
        async with (
            await ChatClient.create(v6, "lobby", "alice") as alice,
            await ChatClient.join(v4, "lobby", "bob") as bob,
        ):
            assert bob.members == ("alice", "bob")
            assert await list_rooms(v6) == (RoomInfo("lobby", 2, protected=False),)

            await bob.send("hi from IPv4")
            await alice.send("hi from IPv6")

            for client in (alice, bob):
                texts: list[str] = []
                async with asyncio.timeout(2000 * MS):
                    async for event in client:
                        if isinstance(event, Message):
                            texts.append(event.text)
                            if len(texts) == 2:
                                break
                assert sorted(texts) == ["hi from IPv4", "hi from IPv6"]


@needs_ipv6
async def test_the_ocm_command_takes_a_bracketed_ipv6_server() -> None:
    """``ocm rooms`` and pipe-mode ``ocm join`` with ``--server [::1]:PORT``."""
    async with running_server(host=V6_LOOPBACK) as server:
        alice = await admit(V6_LOOPBACK, server.tcp_port, CreateRoom("lobby", "alice"))
        a = await udp_peer(V6_LOOPBACK, alice.udp_port)
        async with peers(a):
            a.send("lobby", alice.token)
            where = f"[{V6_LOOPBACK}]:{server.tcp_port}"
            env = {**os.environ, "PYTHONPATH": str(SRC)}
            env.pop("OCM_PASSWORD", None)

            def ocm(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "ocm", *args, "--server", where],
                    input=stdin,
                    capture_output=True,
                    text=True,
                    encoding="utf-8",
                    env=env,
                    timeout=30,
                )

            listed = await asyncio.to_thread(ocm, "rooms")
            assert listed.returncode == 0, listed.stderr
            assert "lobby" in listed.stdout

            # alice is a raw version 1 member: her room is a plaintext one (section 5).
            joined = await asyncio.to_thread(
                ocm, "join", "lobby", "--name", "bob", "--insecure", stdin="hi\n"
            )
            assert joined.returncode == 0, joined.stderr

            texts = [(await a.recv()).text for _ in range(3)]
            assert texts == ["bob joined", "hi", "bob left"]
