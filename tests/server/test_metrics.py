"""ocm.server.metrics: the Prometheus endpoint of a real server on loopback port 0.

Each test scrapes ``/metrics`` over a real TCP connection, parses the text with the
official parser (``prometheus_client.parser``, a test dependency only: the server never
imports it) and checks the values after real traffic: library clients, raw TCRP and
raw UDP datagrams. The HTTP side is checked byte for byte: status lines, headers,
hostile peers (slow, garbage, too large, too many).
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import suppress

import pytest

from ocm.client import Message
from ocm.server.metrics import MAX_CONNECTIONS, MAX_HEAD, parse_request_line
from ocm.server.udp import MAX_QUEUED_BYTES
from ocm.wire import CreateRoom, JoinRoom, ListRooms, encode_request
from ocm.wire.delivery import Ping, encode_extended
from ocm.wire.sealed import up_prefix
from tests.kit import (
    LOOPBACK,
    MS,
    TunnelPeer,
    UdpPeer,
    admit,
    alice_and_bob,
    call,
    enter,
    next_event,
    running_server,
    until,
)
from tests.server.kit import Samples, get, http, scrape, split, value


def dropped(samples: Samples, reason: str) -> float:
    return value(samples, "ocm_datagrams_dropped_total", reason=reason)


def requests(samples: Samples, operation: str, result: str) -> float:
    return samples.get(
        ("ocm_tcrp_requests_total", frozenset({("operation", operation), ("result", result)})),
        0.0,
    )


# ---------------------------------------------------------------------------
# What is counted
# ---------------------------------------------------------------------------


async def test_rooms_and_members_after_library_clients_create_join_and_chat() -> None:
    async with running_server(metrics_port=0) as server:
        before = await scrape(server)
        assert value(before, "ocm_rooms") == 0
        assert value(before, "ocm_members", path="udp") == 0
        alice, bob = await alice_and_bob(server)  # TLS, sealed datagrams: the default
        async with alice, bob:
            # Members whose clients never send a datagram: their path is "none".
            await admit(server.tcp_port, CreateRoom("attic", "dave"))
            await admit(server.tcp_port, JoinRoom("attic", "carol"))
            await alice.send("hello")
            while not isinstance(event := await next_event(bob), Message):
                pass
            assert event.text == "hello"
            now = await scrape(server)
        assert value(now, "ocm_rooms") == 2
        assert value(now, "ocm_members", path="udp") == 2
        assert value(now, "ocm_members", path="none") == 2
        assert value(now, "ocm_members", path="tunnel") == 0
        assert value(now, "ocm_relayed_messages_total") == 1
        assert value(now, "ocm_datagrams_received_total") >= 3  # heartbeats and the line
        assert value(now, "ocm_datagrams_sent_total") >= 2  # the line, to both
        assert requests(now, "starttls", "ok") >= 2
        assert requests(now, "create_room", "ok") == 2
        assert requests(now, "join_room", "ok") == 2
        assert value(now, "ocm_build_info", version="0.1.0") == 1
        assert value(now, "ocm_start_time_seconds") == pytest.approx(server.start_time)


async def test_datagrams_received_and_sent_are_counted_exactly() -> None:
    async with running_server(metrics_port=0) as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))  # one heartbeat
        bob = await enter(server, JoinRoom("lobby", "bob"))  # NOTICE to alice, a heartbeat
        try:
            assert (await alice.peer.recv()).text == "bob joined"
            alice.say("hi")  # to alice and bob
            for member in (alice, bob):
                assert (await member.peer.recv()).text == "hi"
            samples = await scrape(server)
        finally:
            alice.peer.close()
            bob.peer.close()
        assert value(samples, "ocm_datagrams_received_total") == 3
        assert value(samples, "ocm_datagrams_sent_total") == 3
        assert value(samples, "ocm_relayed_messages_total") == 1
        assert sum(v for (name, _), v in samples.items() if "dropped" in name) == 0


async def test_bad_datagrams_are_counted_by_reason() -> None:
    async with running_server(metrics_port=0) as server:
        peer = await UdpPeer.open(server.udp_port)
        try:
            peer.send("lobby", "a-guessed-token")  # no such room or token
            await peer.recv()  # its ERROR: the server has dealt with it
            peer.send_raw(b"\x05\x40lobby-and-too-little")  # a token size past the end
            await peer.recv()
            samples = await scrape(server)
        finally:
            peer.close()
        assert dropped(samples, "unknown_token") == 1
        assert dropped(samples, "malformed") == 1
        assert dropped(samples, "not_utf8") == 0
        assert value(samples, "ocm_datagrams_received_total") == 2
        assert value(samples, "ocm_datagrams_sent_total") == 2  # the two ERRORs


async def test_an_altered_sealed_datagram_is_counted_forged() -> None:
    async with running_server(metrics_port=0) as server:
        alice, bob = await alice_and_bob(server)
        async with alice, bob:
            member = server.registry.rooms["lobby"].members["alice"]
            assert member.session is not None  # TLS by default: sealed datagrams
            peer = await UdpPeer.open(server.udp_port)  # alice's IP, as the relay checks
            try:
                # Alice's clear header and a Counter, then bytes her key did not seal.
                peer.send_raw(up_prefix(member.session) + (2**40).to_bytes(8) + b"x" * 40)
                await until(lambda: server.relay.rejected == 1)
                samples = await scrape(server)
            finally:
                peer.close()
        assert dropped(samples, "sealed_forged") == 1
        assert dropped(samples, "unknown_token") == 0


async def test_tcrp_requests_are_counted_by_operation_and_result() -> None:
    async with running_server(metrics_port=0) as server:
        ack, _ = await call(server.tcp_port, JoinRoom("nowhere", "bob"))
        assert ack.error == "no_such_room"
        await admit(server.tcp_port, CreateRoom("lobby", "alice"))
        ack, _ = await call(server.tcp_port, CreateRoom("lobby", "eve"))
        assert ack.error == "room_exists"
        await call(server.tcp_port, ListRooms())
        # An operation number that names none: a malformed request of no operation.
        raw = bytearray(encode_request(ListRooms()))
        raw[1] = 99
        await http(server.tcp_port, bytes(raw))
        samples = await scrape(server)
    assert requests(samples, "join_room", "no_such_room") == 1
    assert requests(samples, "create_room", "ok") == 1
    assert requests(samples, "create_room", "room_exists") == 1
    assert requests(samples, "list_rooms", "ok") == 1
    assert requests(samples, "unknown", "unknown_operation") == 1
    assert requests(samples, "join_room", "ok") == 0


async def test_a_tunnelled_member_is_counted_on_its_path() -> None:
    async with running_server(metrics_port=0) as server:
        admission = await admit(
            server.tcp_port, CreateRoom("lobby", "alice", None, ("delivery", "tunnel"))
        )
        tunnel = await TunnelPeer.open(server.tcp_port, admission.room, admission.token)
        try:
            boot = bytes.fromhex(admission.boot or "")
            tunnel.send(encode_extended(Ping(admission.token, 1, boot)))
            await tunnel.recv()  # its STATUS: the tunnel is the member's address now
            await until(lambda: len(server.tcrp.writers) == 1)  # admit's connection gone
            samples = await scrape(server)
        finally:
            await tunnel.close()
    assert value(samples, "ocm_members", path="tunnel") == 1
    assert value(samples, "ocm_members", path="udp") == 0
    assert value(samples, "ocm_tunnels") == 1
    assert value(samples, "ocm_tcp_connections") == 1  # the tunnel's
    assert value(samples, "ocm_datagrams_received_total") == 1
    assert value(samples, "ocm_datagrams_sent_total") == 1  # the STATUS, through the tunnel


async def test_copies_a_full_send_queue_drops_are_counted_and_not_sent() -> None:
    async with running_server(metrics_port=0) as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))  # its NOTICE: one copy sent
        try:
            # The transport's queue is full (a fan-out larger than the link): every copy
            # of the next line is dropped.
            endpoint = server._endpoint
            endpoint._queued = lambda: MAX_QUEUED_BYTES
            alice.say("lost")
            await until(lambda: endpoint.dropped == 2)
            samples = await scrape(server)
        finally:
            alice.peer.close()
            bob.peer.close()
    assert dropped(samples, "send_queue_full") == 2
    assert value(samples, "ocm_datagrams_sent_total") == 1
    assert value(samples, "ocm_relayed_messages_total") == 1


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


async def test_another_path_is_404_another_method_405_and_head_has_no_body() -> None:
    async with running_server(metrics_port=0) as server:
        port = server.metrics_port
        assert port is not None
        status, headers, body = split(await http(port, get("/")))
        assert (status, body) == ("HTTP/1.1 404 Not Found", b"not found\n")
        assert headers["connection"] == "close"
        status, headers, _ = split(await http(port, get("/metrics", "POST")))
        assert status == "HTTP/1.1 405 Method Not Allowed"
        assert headers["allow"] == "GET, HEAD"
        status, headers, body = split(await http(port, get("/metrics", "HEAD")))
        assert (status, body) == ("HTTP/1.1 200 OK", b"")
        assert int(headers["content-length"]) > 0
        status, _, body = split(await http(port, get("/metrics?name[]=x")))
        assert status == "HTTP/1.1 200 OK" and b"ocm_rooms 0\n" in body


@pytest.mark.parametrize(
    "garbage",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", b"GET\r\n\r\n", b"GET /metrics SMTP\r\n\r\n"],
    ids=["tls", "no-target", "not-http"],
)
async def test_garbage_is_400_and_the_server_goes_on(garbage: bytes) -> None:
    async with running_server(metrics_port=0) as server:
        assert server.metrics_port is not None
        status, _, _ = split(await http(server.metrics_port, garbage))
        assert status == "HTTP/1.1 400 Bad Request"
        assert value(await scrape(server), "ocm_rooms") == 0


async def test_a_head_too_large_is_431() -> None:
    async with running_server(metrics_port=0) as server:
        assert server.metrics_port is not None
        endless = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"x" * MAX_HEAD
        status, _, _ = split(await http(server.metrics_port, endless))
        assert status == "HTTP/1.1 431 Request Header Fields Too Large"
        assert value(await scrape(server), "ocm_rooms") == 0


async def test_a_slow_client_is_cut_at_the_message_timeout_and_others_are_served() -> None:
    timeout = 300 * MS
    async with running_server(metrics_port=0, message_timeout=timeout) as server:
        assert server.metrics_port is not None
        reader, writer = await asyncio.open_connection(LOOPBACK, server.metrics_port)
        try:
            writer.write(b"GET /metr")  # and nothing more
            started = asyncio.get_running_loop().time()
            assert value(await scrape(server), "ocm_rooms") == 0  # served meanwhile
            async with asyncio.timeout(10 * timeout):
                assert await reader.read(-1) == b""  # closed without an answer
            took = asyncio.get_running_loop().time() - started
            assert 0.5 * timeout < took < 5 * timeout
        finally:
            writer.close()


async def test_connections_past_the_limit_are_reset_and_scrapes_go_on() -> None:
    timeout = 300 * MS
    async with running_server(metrics_port=0, message_timeout=timeout) as server:
        assert server.metrics_port is not None
        idle = [await asyncio.open_connection(LOOPBACK, server.metrics_port) for _ in range(8)]
        assert len(idle) == MAX_CONNECTIONS
        try:
            await asyncio.sleep(20 * MS)  # each handler has started
            with suppress(ConnectionResetError):  # reset at once, without an answer
                assert await http(server.metrics_port, get("/metrics")) == b""
            for reader, _ in idle:  # cut at the message timeout
                async with asyncio.timeout(10 * timeout):
                    assert await reader.read(-1) == b""
            assert value(await scrape(server), "ocm_rooms") == 0
        finally:
            for _, writer in idle:
                writer.close()


# ---------------------------------------------------------------------------
# Life cycle
# ---------------------------------------------------------------------------


async def test_the_endpoint_is_off_without_a_port() -> None:
    async with running_server() as server:
        assert server.metrics is None and server.metrics_port is None


async def test_the_endpoint_listens_on_loopback_and_closes_with_the_server() -> None:
    async with running_server(metrics_port=0) as server:
        assert server.metrics_port is not None and server.metrics is not None
        port = server.metrics_port
        assert server.config.metrics_host == "127.0.0.1"
        # An idle connection open at close is cut, not waited for.
        _, writer = await asyncio.open_connection(LOOPBACK, port)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(LOOPBACK, port)
    writer.close()


async def test_a_metrics_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on metrics port {port} on 127.0.0.1"):
            async with running_server(metrics_port=port):
                pass


# ---------------------------------------------------------------------------
# The request line, alone
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\n\r\n", (200, "GET")),
        (b"HEAD /metrics HTTP/1.0\r\n\r\n", (200, "HEAD")),
        (b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", (200, "GET")),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", (405, "DELETE")),
        (b"GET /metrics/ HTTP/1.1\r\n\r\n", (404, "GET")),
        (b"GET http://x/metrics HTTP/1.1\r\n\r\n", (400, "")),
        (b"GET /metrics HTTP/2\r\n\r\n", (400, "")),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", (400, "")),
        (b"G\xffT /metrics HTTP/1.1\r\n\r\n", (400, "")),
        (b"\r\n\r\n", (400, "")),
    ],
)
def test_the_request_line(head: bytes, expected: tuple[int, str]) -> None:
    assert parse_request_line(head) == expected
