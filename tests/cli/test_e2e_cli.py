"""``ocm create ROOM --e2e`` (section 5 of docs/protocol.md), run as real processes in
pipe mode, against a real server; ``ocm join`` finds out by itself."""

from __future__ import annotations

import logging

import pytest

from ocm.cli import build_parser
from ocm.client import ChatClient, Message
from ocm.wire.e2e import derive_keys
from tests.cli.kit import Piped, ocm, wait_for_room
from tests.kit import registered, running_server, settle, until


def test_e2e_is_a_flag_of_create_and_join() -> None:
    parser = build_parser()
    for command in ("create", "join"):
        assert parser.parse_args([command, "vault", "--e2e"]).e2e is True
        assert parser.parse_args([command, "vault"]).e2e is False


def operations(records: list[logging.LogRecord]) -> list[str]:
    """The TCRP operations the server's DEBUG lines name, STARTTLS aside."""
    names = [r.getMessage().split(" from ")[0] for r in records if " from " in r.getMessage()]
    return [name for name in names if name != "STARTTLS"]


async def test_join_e2e_stops_before_sending_the_password_to_a_room_that_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server could say a room is not end-to-end to be sent the password itself:
    ``ocm join --e2e`` refuses, in one line, and sends no JOIN_ROOM at all."""
    caplog.set_level(logging.DEBUG, logger="ocm.server.tcp")
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        host = await ChatClient.create(where, "plain", "alice", "s3cret")
        try:
            argv = ["join", "plain", "--name", "bob", "--password", "s3cret", "--server", where]
            result = await ocm(*argv, "--e2e")
            assert result.code == 1
            assert result.err == (
                f'ocm: server {where} says room "plain" is not end-to-end encrypted:'
                " not sending it the password\n"
            )
            requests = operations(caplog.records)
            assert requests == ["CREATE_ROOM", "LOOKUP_ROOM"], requests
            assert set(server.registry.rooms["plain"].members) == {"alice"}
            # Without --e2e the same join goes ahead: the refusal was the flag's.
            await ocm(*argv, stdin="exit\n")
            requests = operations(caplog.records)
            assert requests[2:4] == ["LOOKUP_ROOM", "JOIN_ROOM"], requests
        finally:
            await host.close()


async def test_create_e2e_without_a_password_is_one_line_and_sends_nothing() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        for env in ({}, {"OCM_PASSWORD": ""}):
            result = await ocm(
                "create", "vault", "--e2e", "--name", "alice", "--server", where, env=env
            )
            assert (result.code, result.out) == (2, "")
            assert result.err == (
                "ocm: an end-to-end room (--e2e) needs a password:"
                " give it with --password or $OCM_PASSWORD\n"
            )
        assert server.registry.rooms == {}


async def test_an_e2e_room_through_the_cli() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        host = await Piped.start(
            "create",
            "vault",
            "--e2e",
            "--name",
            "alice",
            "--server",
            where,
            env={"OCM_PASSWORD": "s3cret"},
        )
        try:
            await wait_for_room(where, "vault")
            room = server.registry.rooms["vault"]
            assert room.e2e is not None
            assert (room.e2e.memory_kib, room.e2e.iterations, room.e2e.lanes) == (65536, 3, 4)
            assert room.password is not None
            assert room.password.verify(derive_keys("s3cret", room.e2e).auth_password)
            assert not room.password.verify("s3cret")

            wrong = await ocm(
                "join", "vault", "--name", "mallory", "--password", "guess", "--server", where
            )
            assert (wrong.code, wrong.err) == (1, 'ocm: wrong password for room "vault"\n')
            missing = await ocm("join", "vault", "--name", "mallory", "--server", where)
            assert (missing.code, missing.err) == (
                1,
                'ocm: room "vault" is end-to-end encrypted and needs a password'
                " — give it with --password or $OCM_PASSWORD\n",
            )

            await until(lambda: registered(server, "vault", "alice"))
            reader = await ChatClient.join(where, "vault", "carol", "s3cret")
            async with reader:
                await host.say("hello from alice")
                await host.say("/me waves")  # pipe mode sends /me as an action
                joined = await ocm(
                    "join",
                    "vault",
                    "--name",
                    "bob",
                    "--server",
                    where,
                    stdin="hi from bob\n",
                    env={"OCM_PASSWORD": "s3cret"},
                )
                assert (joined.code, joined.err) == (0, "")
                assert joined.out.splitlines()[-1] == "bob: hi from bob"
                seen = [
                    (e.sender, e.text, e.action)
                    for e in await settle(reader, 0.3)
                    if isinstance(e, Message)
                ]
                assert ("alice", "hello from alice", False) in seen
                assert ("alice", "waves", True) in seen
                assert ("bob", "hi from bob", False) in seen
            lines = [await host.line() for _ in range(7)]
            assert "alice: hello from alice" in lines and "* alice waves" in lines
            assert "bob: hi from bob" in lines
            # The server kept only envelopes.
            history = room.history
            assert history is not None
            kept = [history.get(seq) or b"" for seq in range(history.first_seq, room.seq + 1)]
            assert not any(b"hello from alice" in d or b"hi from bob" in d for d in kept)
            assert sum(b"e2e1:" in d for d in kept) == 3
            code, _, err = await host.finish()
            assert (code, err) == (0, "")
        finally:
            await host.kill()
