"""What a real server logs, at the levels an operator expects, and what it never logs.

* INFO: room events (created, joined, left, timed out, moved, closed), each with the
  client's IP;
* WARNING: a wrong password or resume secret (IP, room, name), the IP blocked for them
  (once per block, not per try), connections refused for a connection limit (once a
  minute per IP);
* DEBUG: every TCRP request (operation, IP, room, name, outcome) and every refused
  datagram (IP, why), the latter held back in a flood.

No record, at any level, holds a password, a token or a resume secret: each test
searches every record's message and arguments for the exact strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator

import pytest

from ocm.errors import ErrorCode
from ocm.wire import (
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    ListRooms,
    Operation,
    State,
    TcrpMessage,
    encode_tcrp,
)
from ocm.wire.tcrp import Resume, Tunnel
from tests.kit import (
    LOOPBACK,
    MS,
    OTHER_HOST,
    TcrpConnection,
    UdpPeer,
    admit,
    call,
    enter,
    has_loopback_alias,
    running_server,
    until,
)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger, DEBUG and up."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def lines(caplog: pytest.LogCaptureFixture, level: int, logger: str = "ocm") -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == level and record.name.startswith(logger)
    ]


def assert_never_logged(records: Iterable[logging.LogRecord], secrets: Iterable[str]) -> None:
    """None of ``secrets`` in any record: its message, its arguments, its traceback."""
    secrets = [secret for secret in secrets if secret]
    assert secrets
    for record in records:
        texts = [record.getMessage(), *map(str, record.args or ()), record.exc_text or ""]
        for text in texts:
            for secret in secrets:
                assert secret not in text, (secret, record.name, text)


async def test_room_events_are_info_lines_with_the_client_ip(
    logs: pytest.LogCaptureFixture,
) -> None:
    async with running_server(idle_timeout=300 * MS) as server:
        alice = await enter(server, CreateRoom("lobby", "alice", "Al1ce-pa55"))
        async with alice.heartbeating(30 * MS):
            bob = await enter(server, JoinRoom("lobby", "bob", "Al1ce-pa55"))
            ack, _ = await call(server.tcp_port, LeaveRoom("lobby", bob.token))
            assert ack.ok
            carol = await enter(server, JoinRoom("lobby", "carol", "Al1ce-pa55"))  # then silent
            await until(lambda: "carol" not in server.registry.rooms["lobby"].members)
            ack, _ = await call(server.tcp_port, LeaveRoom("lobby", alice.token))
            assert ack.ok
        for member in (alice, bob, carol):
            member.peer.close()
    info = lines(logs, logging.INFO, "ocm.rooms")
    assert info[:5] == [
        'room "lobby" created by alice (127.0.0.1), protected',
        'bob (127.0.0.1) joined room "lobby"',
        'bob (127.0.0.1) left room "lobby"',
        'carol (127.0.0.1) joined room "lobby"',
        'carol (127.0.0.1) timed out in room "lobby"',
    ]
    assert info[5].startswith('room "lobby" of alice (127.0.0.1) closed: ')
    assert len(info) == 6
    assert_never_logged(logs.records, ["Al1ce-pa55", alice.token, bob.token, carol.token])


async def test_wrong_passwords_are_warnings_and_the_block_one_more(
    logs: pytest.LogCaptureFixture,
) -> None:
    """Three wrong passwords: three WARNINGs, then one for the block; the tries refused
    while blocked add no WARNING (DEBUG says rate_limited for each)."""
    wrong = [f"Gue55-{n}-wrong" for n in range(6)]
    async with running_server(max_password_failures=3) as server:
        host = await admit(server.tcp_port, CreateRoom("vault", "alice", "Va-ult-Sekr1t"))
        codes = []
        for guess in wrong:
            ack, _ = await call(server.tcp_port, JoinRoom("vault", "mallory", guess))
            codes.append(ack.error)
    assert codes == [ErrorCode.WRONG_PASSWORD] * 3 + [ErrorCode.RATE_LIMITED] * 3
    assert lines(logs, logging.WARNING) == [
        *(
            f'wrong password for room "vault" (name mallory) from 127.0.0.1, {n} of 3'
            " failures in 60 s"
            for n in (1, 2, 3)
        ),
        "rate limiting 127.0.0.1 for up to 60 s: 3 wrong passwords or resume secrets in 60 s"
        " (its joins of protected rooms and its resumes get rate_limited)",
    ]
    joins = [line for line in lines(logs, logging.DEBUG) if line.startswith("JOIN_ROOM")]
    attempt = 'JOIN_ROOM from 127.0.0.1: room "vault", name mallory, a password'
    assert joins == [f"{attempt}: wrong_password"] * 3 + [f"{attempt}: rate_limited"] * 3
    assert_never_logged(logs.records, ["Va-ult-Sekr1t", host.token, *wrong])


async def test_a_refused_resume_secret_is_a_warning(logs: pytest.LogCaptureFixture) -> None:
    async with running_server() as server:
        host = await admit(server.tcp_port, CreateRoom("lobby", "alice"))
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "resume")))
        assert bob.resume is not None
        guess = bob.resume[::-1]
        ack, _ = await call(server.tcp_port, Resume("lobby", bob.token, guess))
        assert ack.error is ErrorCode.INVALID_TOKEN
        ack, _ = await call(server.tcp_port, Resume("lobby", host.token + "x", guess))
        assert ack.error is ErrorCode.INVALID_TOKEN  # an unknown token: no guess, no WARNING
    assert lines(logs, logging.WARNING) == [
        'wrong resume secret for the token of bob in room "lobby" from 127.0.0.1,'
        " 1 of 5 failures in 60 s"
    ]
    resumes = [line for line in lines(logs, logging.DEBUG) if line.startswith("RESUME")]
    assert resumes == [
        'RESUME from 127.0.0.1: room "lobby", the token of bob: invalid_token',
        'RESUME from 127.0.0.1: room "lobby", an unknown token: invalid_token',
    ]
    assert_never_logged(logs.records, [bob.resume, guess, bob.token, host.token])


@pytest.mark.skipif(not has_loopback_alias(), reason="needs 127.0.0.2 on the loopback")
async def test_a_member_that_moves_is_an_info_line_with_both_ips(
    logs: pytest.LogCaptureFixture,
) -> None:
    async with running_server() as server:
        await admit(server.tcp_port, CreateRoom("lobby", "alice"))
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "resume")))
        assert bob.resume is not None
        ack, resumed = await call(
            server.tcp_port, Resume("lobby", bob.token, bob.resume), local_host=OTHER_HOST
        )
        assert ack.ok
    assert 'bob (127.0.0.1) in room "lobby" moved to 127.0.0.2' in lines(logs, logging.INFO)
    secrets = [bob.resume, bob.token, getattr(resumed, "secret", "")]
    assert_never_logged(logs.records, secrets)


async def test_debug_has_a_line_for_every_request(logs: pytest.LogCaptureFixture) -> None:
    async with running_server() as server:
        port = server.tcp_port
        features = ("delivery", "tunnel")
        alice = await admit(port, CreateRoom("lobby", "alice", "Open-Se5ame", features))
        results = [
            await call(port, ListRooms()),
            await call(port, CreateRoom("lobby", "bob")),
            await call(port, JoinRoom("hall", "bob")),
            await call(port, JoinRoom("lobby", "bob", "Open-Se5ame")),
            await call(port, LeaveRoom("lobby", "no-such-token-at-all")),
        ]
        assert [ack.error for ack, _ in results] == [
            None,
            ErrorCode.ROOM_EXISTS,
            ErrorCode.NO_SUCH_ROOM,
            None,
            ErrorCode.INVALID_TOKEN,
        ]
        bob = results[3][1]
        tunnel = await TcrpConnection.open(port)
        ack, _ = await tunnel.call(Tunnel("lobby", alice.token))
        assert ack.ok
        await tunnel.close()
        ack, _ = await call(port, LeaveRoom("lobby", alice.token))
        assert ack.ok

        # A malformed request (a name with a control character) is a line too, and its
        # password is not in it.
        raw = TcrpConnection(*await asyncio.open_connection(LOOPBACK, port))
        payload = {"username": "eve\nINFO forged line", "password": "Ev3-pa55word"}
        message = TcrpMessage(Operation.JOIN_ROOM, State.REQUEST, "lobby", payload)
        raw.writer.write(encode_tcrp(message))
        async with asyncio.timeout(1000 * MS):
            while await raw.reader.read(1024):
                pass  # the error ACK, then the server closes
        await raw.close()
    debug = lines(logs, logging.DEBUG, "ocm.server.tcp")
    assert debug == [
        'CREATE_ROOM from 127.0.0.1: room "lobby", name alice, a password: ok',
        "LIST_ROOMS from 127.0.0.1: ok",
        'CREATE_ROOM from 127.0.0.1: room "lobby", name bob, no password: room_exists',
        'JOIN_ROOM from 127.0.0.1: room "hall", name bob, no password: no_such_room',
        'JOIN_ROOM from 127.0.0.1: room "lobby", name bob, a password: ok',
        'LEAVE_ROOM from 127.0.0.1: room "lobby", an unknown token: invalid_token',
        'TUNNEL from 127.0.0.1: room "lobby", the token of alice: ok',
        'LEAVE_ROOM from 127.0.0.1: room "lobby", the token of alice: ok',
        "malformed request from 127.0.0.1: bad_request"
        " (username must not contain control or invisible characters)",
    ]
    assert all("\n" not in record.getMessage() for record in logs.records)
    assert bob is not None and hasattr(bob, "token")
    secrets = ["Open-Se5ame", "Ev3-pa55word", alice.token, bob.token]
    assert_never_logged(logs.records, secrets)


async def test_refused_datagrams_are_debug_lines_held_back_in_a_flood(
    logs: pytest.LogCaptureFixture,
) -> None:
    """Ten lines at once, then one a second, the next saying how many were held back."""
    async with running_server() as server:
        peer = await UdpPeer.open(server.udp_port)
        for n in range(30):
            peer.send("lobby", f"forged-token-{n:02d}", "hello")
        await until(lambda: server.relay.rejected == 30)
        first = lines(logs, logging.DEBUG, "ocm.server.relay")
        await asyncio.sleep(1100 * MS)
        peer.send("lobby", "forged-token-last", "hello")
        await until(lambda: server.relay.rejected == 31)
        peer.close()
    assert 10 <= len(first) <= 11  # the burst, and maybe one more refilled meanwhile
    assert all(
        line.startswith("refused a datagram from 127.0.0.1: unknown token") for line in first
    )
    last = lines(logs, logging.DEBUG, "ocm.server.relay")[len(first) :]
    assert len(last) == 1
    assert last[0].startswith("refused a datagram from 127.0.0.1: unknown token")
    assert last[0].endswith(f"(and {30 - len(first)} more like it, not logged)")
    assert_never_logged(logs.records, ["forged-token-", "hello"])


async def test_a_connection_limit_is_one_warning_not_one_per_refusal(
    logs: pytest.LogCaptureFixture,
) -> None:
    async with running_server(max_connections_per_ip=2) as server:
        held = [await TcrpConnection.open(server.tcp_port) for _ in range(2)]
        await until(lambda: server.tcrp.connections.get(LOOPBACK) == 2)
        for _ in range(3):
            refused = await TcrpConnection.open(server.tcp_port)
            # aborted by the server: an end of stream, or a reset
            async with asyncio.timeout(1000 * MS):
                with contextlib.suppress(ConnectionResetError):
                    assert await refused.reader.read() == b""
            await refused.close()
        for connection in held:
            await connection.close()
    assert lines(logs, logging.WARNING) == [
        "refusing connections: 127.0.0.1 has 2 open (--max-connections-per-ip)"
    ]
