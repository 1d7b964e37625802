"""The ``ocm`` command's client side, run as real processes (pipe mode: stdin is not a
terminal). The interactive UI on a terminal is tests/test_terminal.py."""

from __future__ import annotations

import argparse
import ast
import asyncio
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ocm.cli import build_parser, main
from ocm.cli.client import EXIT_STATUSES
from ocm.client import ChatClient, Event, Message, Notice, list_rooms
from ocm.errors import ErrorCode, ServerError
from ocm.wire import RoomInfo
from tests.cli.kit import (
    ENV,
    Piped,
    ocm,
    server_process,
    server_process_handle,
    wait_for_room,
)
from tests.kit import LOOPBACK, MS, create_rooms, ready, registered, running_server, until


def without_first_contact(err: str) -> str:
    """stderr without the line a first contact with a server's key adds (section 5)."""
    lines = err.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("ocm: first contact with "))


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


def test_client_commands_and_their_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["join", "lobby", "--server", "[::1]:9100", "--name", "bob"])
    assert (args.command, args.room, args.server, args.name) == (
        "join",
        "lobby",
        ("::1", 9100),
        "bob",
    )
    assert args.password is None and not args.ask_password and args.heartbeat == 15.0
    assert parser.parse_args(["rooms"]).server == ("localhost", 9001)
    assert parser.parse_args([]).command is None
    # the server subcommand is untouched
    server = parser.parse_args(["server", "--host", "::", "--port", "0", "--idle-timeout", "5"])
    assert (server.host, server.port, server.idle_timeout) == ("::", 0, 5.0)


def test_history_takes_a_count_for_create_join_and_ocm_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["join", "lobby"]).history is None  # the mode decides
    assert parser.parse_args(["create", "lobby", "--history", "0"]).history == 0
    assert parser.parse_args(["join", "lobby", "--history", "4096"]).history == 4096
    assert parser.parse_args(["--history", "5"]).history == 5  # ocm alone
    assert parser.parse_args(["--history", "5", "join", "lobby"]).history == 5
    assert parser.parse_args(["rooms"]).history is None
    for bad in ("-1", "4097", "2.5", "many", ""):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["join", "lobby", "--history", bad])
        assert exit_.value.code == 2
        assert (
            f"argument --history: must be a whole number from 0 to 4096, got {bad}\n"
            in capsys.readouterr().err
        )


def test_ocm_alone_passes_its_history_and_bell_to_the_questions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ocm.cli import client
    from ocm.ui import terminal

    asked: list[tuple[int, bool]] = []

    async def interactive(server: str, *, history: int, bell: bool, security: object) -> int:
        asked.append((history, bell))
        return 0

    monkeypatch.setattr(client, "_on_terminal", lambda: True)
    monkeypatch.setattr(terminal, "interactive", interactive)
    assert main(["--history", "7"]) == 0
    assert main([]) == 0
    assert main(["--no-bell"]) == 0
    assert asked == [(7, True), (terminal.DEFAULT_HISTORY, True), (20, False)]


def test_no_bell_for_create_join_and_ocm_alone() -> None:
    parser = build_parser()
    assert parser.parse_args([]).no_bell is False
    assert parser.parse_args(["--no-bell"]).no_bell is True
    for command in ("create", "join"):
        assert parser.parse_args([command, "lobby"]).no_bell is False
        assert parser.parse_args([command, "lobby", "--no-bell"]).no_bell is True
        assert parser.parse_args(["--no-bell", command, "lobby"]).no_bell is True


def join_help() -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return str(commands.choices["join"].format_help())


def test_join_help_ends_with_the_exit_statuses() -> None:
    """The statuses ocm.ui.chatview returns, as ocm join --help and the README say them:
    the same codes with the same meanings, word for word (a --help that said a dropped
    member's status was 3 while the code and the README said 4 passed a check of the
    codes alone)."""
    from ocm.ui import chatview

    text = join_help()
    assert "(default: 20 on a terminal, 0 in pipe mode)" in " ".join(text.split())
    epilog = text.split("\nexit status:\n", 1)[1]
    entries = re.split(r"^  (?=\d)", epilog, flags=re.M)[1:]  # one per status, rewrapped
    listed = [(int(e.split()[0]), " ".join(e.split()[1:])) for e in entries]
    assert listed == list(EXIT_STATUSES)
    constants = (
        chatview.EXIT_LEFT,
        chatview.EXIT_ERROR,
        chatview.EXIT_USAGE,
        chatview.EXIT_ROOM_CLOSED,
        chatview.EXIT_SERVER_LOST,
    )
    assert constants == (0, 1, 2, 3, 4)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- exit-statuses -->\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\d+)` \| (.*) \|$", table, re.M)
    assert [(int(code), meaning.replace("`", "")) for code, meaning in rows] == listed
    assert [code for code, _ in listed] == [0, 1, 2, 3, 4, 5, 130, 143, 129]
    said = dict(listed)  # the meanings the code's constants stand for
    assert "you left" in said[chatview.EXIT_LEFT]
    assert "the room closed" in said[chatview.EXIT_ROOM_CLOSED]
    assert "dropped you" in said[chatview.EXIT_SERVER_LOST]
    assert "dropped" not in said[chatview.EXIT_ROOM_CLOSED]


def test_the_password_hint_offers_ask_password_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review item: in pipe mode the hint offered --ask-password, which then failed with
    "--ask-password needs a terminal"."""
    from ocm.cli import client as cli_client

    monkeypatch.delenv("OCM_PASSWORD", raising=False)
    args = build_parser().parse_args(["join", "vault", "--name", "mallory"])
    refused = ServerError(ErrorCode.WRONG_PASSWORD, "wrong password")
    head = 'room "vault" needs a password — give it with '
    monkeypatch.setattr(cli_client, "_on_terminal", lambda: False)
    assert cli_client._explain(refused, args) == head + "--password or $OCM_PASSWORD"
    monkeypatch.setattr(cli_client, "_on_terminal", lambda: True)
    assert cli_client._explain(refused, args) == (
        head + "--password, $OCM_PASSWORD or --ask-password"
    )


def test_password_flags_take_no_positional_by_surprise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(["join", "--password", "s3cret", "lobby", "--name", "bob"])
    assert (args.password, args.room, args.name) == ("s3cret", "lobby", "bob")
    args = parser.parse_args(["join", "--ask-password", "lobby", "--name", "bob"])
    assert (args.ask_password, args.password, args.room) == (True, None, "lobby")
    for argv in (
        ["create", "vault", "--password"],  # a value is required, never "ask"
        ["join", "lobby", "--password", "x", "--ask-password"],  # one or the other
    ):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2, argv
    assert "not allowed with argument" in capsys.readouterr().err


def test_ocm_server_loads_nothing_but_the_standard_library_and_cryptography() -> None:
    """The server half needs cryptography (section 5), and nothing else third party: no
    prompt_toolkit, no uvloop unless installed and asked for."""
    code = (
        "import sys\n"
        "from ocm import cli\n"
        "from ocm.cli import server\n"
        "async def serve(config): pass\n"
        "server.serve = serve\n"
        "assert cli.main(['server', '--port', '0']) == 0\n"
        "import ocm.server.app\n"
        "tops = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(tops - set(sys.stdlib_module_names) - {'__main__'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=15
    )
    assert (result.returncode, result.stderr) == (0, "")
    loaded = set(ast.literal_eval(result.stdout))
    # cryptography's own native parts, and setuptools' import hook of a venv's site.
    assert loaded - {"_cffi_backend", "_openssl", "_rust", "_distutils_hack"} == {
        "ocm",
        "cryptography",
    }


def test_client_commands_load_no_server_module() -> None:
    """``ocm join`` (parsing, the library, the pipe and terminal UIs) never imports a
    module of ocm.server: the client shares only ocm.wire with it (issue 10)."""
    code = (
        "import sys\n"
        "from ocm import cli\n"
        "from ocm.cli import client\n"
        "seen = {}\n"
        "async def chat(args):\n"
        "    import ocm.ui.pipe, ocm.ui.chatview, ocm.client\n"
        "    seen['args'] = args\n"
        "    return 0\n"
        "client._chat = chat\n"
        "assert cli.main(['join', 'lobby', '--name', 'bob']) == 0\n"
        "assert seen['args'].room == 'lobby'\n"
        "print(sorted(m for m in sys.modules if m.startswith('ocm.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=15
    )
    assert (result.returncode, result.stderr) == (0, "")
    loaded = ast.literal_eval(result.stdout)
    assert "ocm.client.chat" in loaded and "ocm.ui.pipe" in loaded  # the check saw them
    assert [m for m in loaded if m.startswith(("ocm.server", "ocm.cli.server"))] == []


def test_ocm_help_lists_the_server_command_without_building_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "run an OCM server" in capsys.readouterr().out


def test_the_metrics_flags_reach_the_server_and_are_documented(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ocm.cli import server as servercli
    from ocm.server.app import ServerConfig

    seen: list[ServerConfig] = []

    async def serve(config: ServerConfig) -> None:
        seen.append(config)

    monkeypatch.setattr(servercli, "serve", serve)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    assert main(["server", "--port", "0"]) == 0
    assert main(["server", "--port", "0", "--metrics-port", "9100"]) == 0
    assert main(["server", "--metrics-port", "0", "--metrics-host", "::1"]) == 0
    assert [(c.metrics_port, c.metrics_host) for c in seen] == [
        (None, "127.0.0.1"),  # off by default, and loopback when on
        (9100, "127.0.0.1"),
        (0, "::1"),
    ]
    with pytest.raises(SystemExit) as exit_:
        main(["server", "--metrics-port", "65536"])
    assert exit_.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["server", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--metrics-port PORT serve Prometheus metrics" in text
    assert "counts only" in text and "(default: off)" in text
    assert "--metrics-host HOST" in text and "not the internet" in text
    assert "(default: 127.0.0.1)" in text


async def test_a_server_process_serves_its_metrics() -> None:
    """The flag end to end: ``ocm server --metrics-port 0`` logs where, and serves there."""
    import urllib.request

    from tests.kit import ServerProcess

    server = await ServerProcess.start("--metrics-port", "0")
    try:
        assert server.process.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.process.stderr.readline), 10)
        match = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics$", line.strip())
        assert match, line
        url = f"http://{LOOPBACK}:{match[1]}/metrics"
        with await asyncio.to_thread(urllib.request.urlopen, url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
        assert "\nocm_rooms 0\n" in body
    finally:
        server.stop()


def test_server_default_comes_from_ocm_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCM_SERVER", "chat.example:9100")
    assert build_parser().parse_args(["rooms"]).server == ("chat.example", 9100)


def test_a_bad_server_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["rooms", "--server", "host:port"])
    assert exit_.value.code == 2
    assert '"port" is not a port number' in capsys.readouterr().err


def test_a_bad_ocm_server_is_named_as_the_culprit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCM_SERVER", "host:port")
    for args in (["rooms"], ["join", "lobby", "--name", "bob"]):
        assert main(args) == 2
        assert capsys.readouterr().err == 'ocm: $OCM_SERVER: "port" is not a port number\n'
    # An explicit --server replaces it: the variable is not even looked at.
    assert build_parser().parse_args(["rooms", "--server", "h:1"]).server == ("h", 1)


def test_help_shows_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("server", "create", "join", "rooms"):
        assert command in out


# ---------------------------------------------------------------------------
# Errors: one line, non-zero, never a traceback
# ---------------------------------------------------------------------------


async def test_errors_are_one_clear_line() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        async with await ChatClient.create(where, "lobby", "alice"):
            cases = [
                (
                    ["join", "nowhere", "--name", "bob"],
                    1,
                    'ocm: no room named "nowhere" — see: ocm rooms',
                ),
                (
                    ["create", "lobby", "--name", "bob"],
                    1,
                    'ocm: room "lobby" already exists — join it with: ocm join lobby',
                ),
                (
                    ["join", "lobby", "--name", "Alice"],
                    1,
                    'ocm: the name "Alice" is taken in "lobby" — choose another with --name',
                ),
                (["join", "lobby", "--name", " "], 1, "ocm: name must be 1-255 bytes, got 0"),
                (["join", "lobby"], 2, "ocm: --name NAME is required when stdin is not a terminal"),
                (
                    ["join", "lobby", "--name", "bob", "--ask-password"],
                    2,
                    "ocm: --ask-password needs a terminal; in scripts set OCM_PASSWORD",
                ),
                (
                    [],
                    2,
                    "ocm: interactive mode needs a terminal;"
                    " in scripts use: ocm join ROOM --name NAME",
                ),
            ]
            results = await asyncio.gather(
                *(ocm(*args, "--server", where) if args else ocm() for args, _, _ in cases)
            )
    for (args, code, line), result in zip(cases, results, strict=True):
        assert (result.code, result.err) == (code, line + "\n"), args
        assert result.out == ""


async def test_an_unreachable_server_is_one_line() -> None:
    async with running_server() as server:
        port = server.tcp_port  # closed again on exit: nothing listens there now
    for args in (["rooms"], ["join", "lobby", "--name", "bob"]):
        result = await ocm(*args, "--server", f"127.0.0.1:{port}")
        assert result.code == 1
        assert result.err == f"ocm: cannot reach server 127.0.0.1:{port} (connection refused)\n"


async def test_rooms_lists_hundreds_of_rooms_with_long_names() -> None:
    """The LIST_ROOMS reply is ~120 KB, far over the 64 KiB limit on requests."""
    names = [f"{n:03d}" + "r" * 252 for n in range(400)]  # 255 bytes each
    async with running_server(max_rooms_per_ip=len(names)) as server:
        await create_rooms(server.tcp_port, names)
        listed = await ocm("rooms", "--server", f"127.0.0.1:{server.tcp_port}")
    assert (listed.code, without_first_contact(listed.err)) == (0, "")
    assert listed.out.splitlines()[1:] == [f"      1  open      {name}" for name in names]


async def test_rooms_lists_members_access_and_name() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        empty = await ocm("rooms", "--server", where)
        assert (empty.code, empty.out) == (
            0,
            f"no rooms on {where} — create one with: ocm create ROOM\n",
        )
        async with (
            await ChatClient.create(where, "lobby", "alice"),
            await ChatClient.create(where, "the vault", "carol", "pw"),
        ):
            listed = await ocm("rooms", "--server", where)
    assert listed.code == 0
    assert listed.out.splitlines() == [
        "MEMBERS  ACCESS    ROOM",
        "      1  open      lobby",
        "      1  password  the vault",
    ]


# ---------------------------------------------------------------------------
# Pipe mode
# ---------------------------------------------------------------------------


async def test_end_of_input_delivers_every_line_then_leaves() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        async with await ready(server, await ChatClient.create(where, "lobby", "alice")) as alice:
            lines = [f"line {n}" for n in range(10)]
            result = await ocm(
                "join", "lobby", "--name", "bob", "--server", where, stdin="\n".join(lines)
            )
            assert result.code == 0, result.err
            assert result.out.splitlines() == [f"bob: {line}" for line in lines]
            assert result.err == ""
            events: list[Event] = []
            async with asyncio.timeout(1):
                while len(events) < 12:
                    events.append(await anext(alice))
            assert events[0] == Notice("bob joined", 1)
            assert [e.text for e in events[1:11] if isinstance(e, Message)] == lines
            assert events[11] == Notice("bob left", 12)


async def test_a_name_with_a_unicode_space_at_its_edge_gets_its_lines_confirmed() -> None:
    """The server trims U+0020 only: "bob\u00a0" stays "bob\u00a0" there, and the
    client must recognise the server's copies under that name (else: exit 1)."""
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        async with await ready(server, await ChatClient.create(where, "lobby", "alice")) as alice:
            result = await ocm(
                "join", "lobby", "--name", " bob\u00a0 ", "--server", where, stdin="hi\n"
            )
            assert (result.code, result.err) == (0, "")
            assert "not delivered" not in result.out and "not confirmed" not in result.out
            async with asyncio.timeout(1):
                events = [await anext(alice) for _ in range(3)]
            assert events == [
                Notice("bob\u00a0 joined", 1),
                Message("bob\u00a0", "hi", 2),
                Notice("bob\u00a0 left", 3),
            ]


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be delivered on Windows")
@pytest.mark.parametrize("signum", [signal.SIGTERM, getattr(signal, "SIGHUP", 1)])
async def test_a_signal_leaves_the_room_before_the_exit(signum: int) -> None:
    """SIGTERM (service manager, timeout(1)) or SIGHUP (the terminal closed) ends the
    client as Ctrl-C does: LEAVE_ROOM first, so a host's room closes at once. The exit
    status is 128 + the signal number, as a shell reports a process the signal killed."""
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        host = await Piped.start("create", "lobby", "--name", "alice", "--server", where)
        try:
            await wait_for_room(where, "lobby")
            await host.say("hello")
            assert await host.line() == "alice: hello"  # in the room, chatting
            host.process.send_signal(signum)
            async with asyncio.timeout(1):
                while await list_rooms(where):
                    await asyncio.sleep(10 * MS)
            code, _, err = await host.finish()
            assert (code, err) == (128 + signum, "")
        finally:
            await host.kill()


async def test_a_flood_of_piped_lines_arrives_whole_and_in_order() -> None:
    """Flow control: lines as fast as a pipe gives them, through a server process."""
    lines = [f"line {n}" for n in range(5000)]
    async with server_process() as port:
        where = f"127.0.0.1:{port}"
        async with await ChatClient.create(where, "flood", "alice") as alice:
            await alice.send("ready?")  # its copy proves the server has alice's address
            assert await anext(alice) == Message("alice", "ready?", 1)
            received = asyncio.create_task(messages_until(alice, Notice("bob left", 5003)))
            result = await ocm(
                "join", "flood", "--name", "bob", "--server", where, stdin="\n".join(lines)
            )
            async with asyncio.timeout(5):
                texts = await received
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [f"bob: {line}" for line in lines]
    assert texts == lines  # every line, once, in order, and no Gap on the way


async def messages_until(chat: ChatClient, last: Event) -> list[str]:
    """The texts of the messages ``chat`` receives before ``last``; fails on a Gap."""
    texts: list[str] = []
    async for event in chat:
        if event == last:
            return texts
        assert isinstance(event, Message | Notice), event
        if isinstance(event, Message):
            texts.append(event.text)
    raise AssertionError(f"the stream ended before {last}")


async def test_a_password_room_through_the_cli() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        host = await Piped.start(
            "create", "vault", "--name", "alice", "--server", where, env={"OCM_PASSWORD": "s3cret"}
        )
        try:
            await wait_for_room(where, "vault")
            assert await list_rooms(where) == (RoomInfo("vault", 1, protected=True),)

            wrong = await ocm(
                "join", "vault", "--name", "mallory", "--password", "guess", "--server", where
            )
            assert (wrong.code, wrong.out) == (1, "")
            assert wrong.err == 'ocm: wrong password for room "vault"\n'
            # No password at all: say that the room wants one, and how to give it (in
            # pipe mode --ask-password is no way: it needs a terminal).
            missing = await ocm("join", "vault", "--name", "mallory", "--server", where)
            assert (missing.code, missing.err) == (
                1,
                'ocm: room "vault" needs a password — give it with --password or $OCM_PASSWORD\n',
            )
            asked = await ocm(
                "join", "vault", "--name", "mallory", "--ask-password", "--server", where
            )
            assert asked.code == 2 and "--ask-password needs a terminal" in asked.err
            empty = await ocm(
                "join", "vault", "--name", "mallory", "--server", where, env={"OCM_PASSWORD": ""}
            )
            assert empty.err == missing.err

            by_flag = await ocm(
                "join",
                "vault",
                "--name",
                "bob",
                "--password",
                "s3cret",
                "--server",
                where,
                stdin="hi from bob\n",
            )
            assert (by_flag.code, by_flag.out, by_flag.err) == (0, "bob: hi from bob\n", "")
            by_env = await ocm(
                "join",
                "vault",
                "--name",
                "carol",
                "--server",
                where,
                stdin="hi from carol\n",
                env={"OCM_PASSWORD": "s3cret"},
            )
            assert (by_env.code, by_env.out) == (0, "carol: hi from carol\n")

            assert [await host.line() for _ in range(6)] == [
                "* bob joined",
                "bob: hi from bob",
                "* bob left",
                "* carol joined",
                "carol: hi from carol",
                "* carol left",
            ]
            code, out, err = await host.finish()
            assert (code, out, err) == (0, "", "")
            assert await list_rooms(where) == ()
        finally:
            await host.kill()


async def test_two_piped_clients_chat_through_a_server_process() -> None:
    async with server_process() as port:
        where = f"127.0.0.1:{port}"
        alice = await Piped.start("create", "lobby", "--name", "alice", "--server", where)
        bob = None
        try:
            await wait_for_room(where, "lobby")
            bob = await Piped.start("join", "lobby", "--name", "bob", "--server", where)
            assert await alice.line() == "* bob joined"
            await bob.say("hi alice")  # bob's own copy proves he is registered for UDP
            assert await bob.line() == "bob: hi alice"
            assert await alice.line() == "bob: hi alice"

            await alice.say("hi bob, ça va ✓")
            assert await alice.line() == "alice: hi bob, ça va ✓"
            assert await bob.line() == "alice: hi bob, ça va ✓"

            code, out, err = await bob.finish()  # end of bob's input: he leaves
            assert (code, out, err) == (0, "", "")
            assert await alice.line() == "* bob left"
            code, out, err = await alice.finish()
            assert (code, out, err) == (0, "", "")
        finally:
            await alice.kill()
            if bob is not None:
                await bob.kill()


async def test_the_host_leaving_ends_a_member_whose_input_is_still_open() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        alice = await ready(server, await ChatClient.create(where, "lobby", "alice"))
        bob = await Piped.start("join", "lobby", "--name", "bob", "--server", where)
        try:
            assert await anext(alice) == Notice("bob joined", 1)
            await until(lambda: registered(server, "lobby", "bob"), 5000 * MS)
            await alice.close()
            assert await bob.line() == "! room closed: the host alice left"
            assert bob.process.stdin is not None
            async with asyncio.timeout(5):
                # stdin still open: it exits anyway, with the status for a closed room
                assert await bob.process.wait() == 3
        finally:
            await bob.kill()


async def test_names_the_console_cannot_encode_never_crash() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        async with await ready(server, await ChatClient.create(where, "lobby", "alice")) as alice:
            result = await ocm(
                "join",
                "lobby",
                "--name",
                "zoë☃",
                "--server",
                where,
                stdin="héllo\n",
                env={"PYTHONIOENCODING": "ascii"},
            )
            assert result.code == 0, result.err
            assert result.err == ""
            assert result.out == "zo??: h??llo\n"  # the console's ASCII, with replacements
            events = [await anext(alice) for _ in range(3)]
            assert events[1] == Message("zoë☃", "h\ufffd\ufffdllo", 2)


async def test_interrupt_leaves_the_room() -> None:
    if sys.platform == "win32":
        pytest.skip("SIGINT cannot be sent to a child process on Windows")
    import signal

    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        async with await ready(server, await ChatClient.create(where, "lobby", "alice")) as alice:
            bob = await Piped.start("join", "lobby", "--name", "bob", "--server", where)
            try:
                assert await anext(alice) == Notice("bob joined", 1)
                await until(lambda: registered(server, "lobby", "bob"), 5000 * MS)
                bob.process.send_signal(signal.SIGINT)
                code, _, err = await bob.finish()
                assert (code, err) == (130, "")
                async with asyncio.timeout(1):
                    assert await anext(alice) == Notice("bob left", 2)
            finally:
                await bob.kill()


async def test_pipe_mode_prints_the_history_it_is_asked_for_then_leaves() -> None:
    async with running_server() as server:
        where = f"127.0.0.1:{server.tcp_port}"
        async with await ready(server, await ChatClient.create(where, "lobby", "alice")) as alice:
            for n in range(5):
                await alice.send(f"m{n}")
            assert await alice.flush(1)
            none = await ocm("join", "lobby", "--name", "bob", "--server", where)
            assert (none.code, none.out, none.err) == (0, "", "")  # pipe mode: 0 by default
            asked = await ocm(
                "join", "lobby", "--name", "carol", "--history", "3", "--server", where
            )
            assert (asked.code, asked.err) == (0, "")
            assert asked.out.splitlines() == [
                "history * bob joined",
                "history * bob left",
                "history * carol joined",
            ]


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP does not exist on Windows")
async def test_a_server_that_stops_answering_ends_pipe_mode_with_status_4() -> None:
    """No ICMP here: the stopped server's port stays open, it just never answers. The
    client notices within three heartbeat intervals of the server's last word (its
    echo of "hello", just before the stop), says why, and exits 4. Slack: 0.25 s for
    two processes' scheduling and the pipe (four intervals, as it was, take 0.5 s more)."""
    async with server_process_handle() as (port, server):
        where = f"127.0.0.1:{port}"
        bob = await Piped.start(
            "create", "lobby", "--name", "bob", "--heartbeat", "0.5", "--server", where
        )
        try:
            await bob.say("hello")
            assert await bob.line() == "bob: hello"
            server.send_signal(signal.SIGSTOP)
            try:
                started = asyncio.get_running_loop().time()
                assert (
                    await bob.line(timeout=10)
                    == "! the server stopped answering — the chat is over"
                )
                assert asyncio.get_running_loop().time() - started < 3 * 0.5 + 0.25
                code, out, err = await bob.finish()
                assert (code, out, without_first_contact(err)) == (4, "", "")
            finally:
                server.send_signal(signal.SIGCONT)
        finally:
            await bob.kill()
