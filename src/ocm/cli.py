"""The ``ocm`` command: ``ocm server`` runs a server; the other commands are the client.

The server half imports only the standard library, so ``PYTHONPATH=src python -m ocm
server`` works from a bare checkout. Client commands import prompt_toolkit lazily.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ocm import __version__
from ocm.client import (
    DEFAULT_HEARTBEAT_INTERVAL,
    ChatClient,
    format_server_address,
    list_rooms,
    parse_server_address,
)
from ocm.errors import ErrorCode, OCMError, ServerError
from ocm.protocol import validate_name
from ocm.registry import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_MEMBERS, DEFAULT_MAX_ROOMS
from ocm.server import DEFAULT_PORT, ServerConfig, serve
from ocm.tcp import TcpLimits

if TYPE_CHECKING:
    from ocm.terminal import Prompter

__all__ = ["build_parser", "main"]


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value


def _add_server_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    limits = TcpLimits()
    defaults = ServerConfig()
    server = commands.add_parser(
        "server",
        help="run an OCM server",
        description="Run an OCM server: TCRP on TCP and the chat relay on UDP. "
        "SIGINT or SIGTERM tells every member the server is shutting down, then exits 0.",
    )
    server.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on; :: for IPv6 and IPv4 (default: %(default)s)",
    )
    server.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="TCP port, 0 for any free port (default: %(default)s)",
    )
    server.add_argument(
        "--udp-port", type=_port, default=None, help="UDP port (default: the TCP port)"
    )
    server.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="seconds of silence after which a member is dropped (default: %(default)s)",
    )
    server.add_argument(
        "--max-rooms",
        type=_positive_int,
        default=DEFAULT_MAX_ROOMS,
        help="rooms on the server (default: %(default)s)",
    )
    server.add_argument(
        "--max-members",
        type=_positive_int,
        default=DEFAULT_MAX_MEMBERS,
        help="members per room (default: %(default)s)",
    )
    server.add_argument(
        "--max-connections-per-ip",
        type=_positive_int,
        default=limits.max_connections_per_ip,
        help="open TCP connections per IP (default: %(default)s)",
    )
    server.add_argument(
        "--max-connections",
        type=_positive_int,
        default=limits.max_connections,
        help="open TCP connections in all (default: %(default)s)",
    )
    server.add_argument(
        "--max-payload",
        type=_positive_int,
        default=limits.max_payload,
        help="largest TCRP payload in bytes (default: %(default)s)",
    )
    server.add_argument(
        "--message-timeout",
        type=_positive_float,
        default=limits.message_timeout,
        help="seconds a peer has to send a whole TCRP message once started (default: %(default)s)",
    )
    server.add_argument(
        "--tcp-idle-timeout",
        type=_positive_float,
        default=limits.idle_timeout,
        help="seconds an idle TCP connection is kept open (default: %(default)s)",
    )
    server.add_argument(
        "--max-concurrent-hashes",
        type=_positive_int,
        default=limits.max_concurrent_hashes,
        help="password hashes computed at once, 16 MiB each (default: %(default)s)",
    )
    server.add_argument(
        "--max-password-failures",
        type=_positive_int,
        default=defaults.max_failures,
        help="wrong passwords per client IP per --failure-window before rate_limited "
        "(default: %(default)s)",
    )
    server.add_argument(
        "--failure-window",
        type=_positive_float,
        default=defaults.failure_window,
        help="seconds over which wrong passwords are counted (default: %(default)s)",
    )
    server.add_argument(
        "--error-replies-per-second",
        type=_positive_int,
        default=int(defaults.error_rate),
        help="UDP ERROR replies per source IP per second (default: %(default)s)",
    )
    server.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log verbosity (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocm", description="OCM, the Online Chat Messenger: a terminal-first chat."
    )
    parser.add_argument("--version", action="version", version=f"ocm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_server_parser(commands)
    _add_client_parsers(commands)
    parser.epilog = "Without a command, ocm asks for a server, a name and a room, then chats."
    return parser


def _run_server(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        udp_port=args.udp_port,
        idle_timeout=args.idle_timeout,
        max_rooms=args.max_rooms,
        max_members=args.max_members,
        max_failures=args.max_password_failures,
        failure_window=args.failure_window,
        error_rate=float(args.error_replies_per_second),
        tcp=TcpLimits(
            max_payload=args.max_payload,
            idle_timeout=args.tcp_idle_timeout,
            message_timeout=args.message_timeout,
            max_connections_per_ip=args.max_connections_per_ip,
            max_connections=args.max_connections,
            max_concurrent_hashes=args.max_concurrent_hashes,
        ),
    )
    # uvloop (pip install ocm[fast]) when present: it roughly halves the event loop's
    # cost per datagram (docs/performance.md); plain asyncio otherwise.
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        with runner:
            runner.run(serve(config))
    except OSError as error:
        print(
            f"ocm server: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "server":
        return _run_server(args)
    return _run_client(args)


# ---------------------------------------------------------------------------
# The client: ocm create, ocm join, ocm rooms, and ocm alone (interactive)
# ---------------------------------------------------------------------------

SERVER_ENV = "OCM_SERVER"
PASSWORD_ENV = "OCM_PASSWORD"
# "--password" given without a value: ask without echo. argv cannot hold a NUL, so no
# real password equals this.
_ASK = "\0ask"


class _Usage(Exception):
    """The command line cannot work as given (exit status 2)."""


def _server_address(text: str) -> tuple[str, int]:
    try:
        return parse_server_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_server() -> str:
    return os.environ.get(SERVER_ENV) or f"localhost:{DEFAULT_PORT}"


def _add_client_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--server",
        type=_server_address,
        default=_default_server(),
        metavar="HOST[:PORT]",
        help=f"the server; [ADDRESS]:PORT for IPv6 (default: ${SERVER_ENV} or "
        f"localhost:{DEFAULT_PORT})",
    )
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--name", help="your name in the room (asked on a terminal if not given)")
    who.add_argument(
        "--password",
        nargs="?",
        const=_ASK,
        help=f"the room's password; without a value it is asked without echo (default: "
        f"${PASSWORD_ENV}; joining a protected room on a terminal asks)",
    )
    who.add_argument(
        "--heartbeat",
        type=_positive_float,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="seconds between heartbeats; keep it under a third of the server's "
        "--idle-timeout (default: %(default)s)",
    )
    modes = (
        "On a terminal: an interactive chat (/help inside). Otherwise each stdin line is "
        "sent and each event is one stdout line; end of input leaves."
    )
    create = commands.add_parser(
        "create",
        parents=[where, who],
        help="create a room and chat in it as its host",
        description="Create ROOM and enter it as its host: when you leave, the room "
        "closes. With a password (--password or $OCM_PASSWORD) the room is protected, "
        "otherwise it is open. " + modes,
    )
    create.add_argument("room", metavar="ROOM")
    join = commands.add_parser(
        "join",
        parents=[where, who],
        help="join a room and chat",
        description="Join the existing ROOM. " + modes,
    )
    join.add_argument("room", metavar="ROOM")
    commands.add_parser(
        "rooms",
        parents=[where],
        help="list the rooms on a server",
        description="List the rooms on a server: members, open or password, name.",
    )


def _on_terminal() -> bool:
    return bool(sys.stdin and sys.stdin.isatty() and sys.stdout and sys.stdout.isatty())


def _explain(error: OCMError, args: argparse.Namespace) -> str:
    """One line for an error, with the next step where there is an obvious one."""
    room = getattr(args, "room", None)
    if isinstance(error, ServerError):
        match error.code:
            case ErrorCode.NO_SUCH_ROOM:
                return f'no room named "{room}" — see: ocm rooms'
            case ErrorCode.ROOM_EXISTS:
                return f"{error.message} — join it with: ocm join {room}"
            case ErrorCode.NAME_TAKEN:
                return f"{error.message} — choose another with --name"
    return error.message


def _run_client(args: argparse.Namespace) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A name the console encoding cannot show becomes "?", never a crash.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        return asyncio.run(_client(args))
    except KeyboardInterrupt:
        return 130
    except EOFError:  # Ctrl-D at a question: the user chose not to go on
        return 0
    except _Usage as error:
        print(f"ocm: {error}", file=sys.stderr)
        return 2
    except OCMError as error:
        print(f"ocm: {_explain(error, args)}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"ocm: {error.strerror or error}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: still one line, with enough to report it
        print(f"ocm: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return 1


async def _client(args: argparse.Namespace) -> int:
    if args.command is None:
        if not _on_terminal():
            raise _Usage(
                "interactive mode needs a terminal; in scripts use: ocm join ROOM --name NAME"
            )
        from ocm import terminal

        return await terminal.interactive(_default_server())
    if args.command == "rooms":
        return await _print_rooms(args.server)
    prompter = None
    if _on_terminal():
        from ocm import terminal

        prompter = terminal.Prompter()
    name = args.name
    if name is None:
        if prompter is None:
            raise _Usage("--name NAME is required when stdin is not a terminal")
        name = await terminal.ask_name(prompter)
    validate_name(name.strip(), "name")
    password = await _password(args, prompter)
    enter = ChatClient.create if args.command == "create" else ChatClient.join
    chat = await enter(args.server, args.room, name, password, heartbeat_interval=args.heartbeat)
    if prompter is not None:
        return await terminal.TerminalChat(chat).run()
    from ocm.pipe import run_pipe, stdin_lines

    return await run_pipe(chat, stdin_lines(), sys.stdout, sys.stderr)


async def _password(args: argparse.Namespace, prompter: Prompter | None) -> str | None:
    if args.password == _ASK:
        if prompter is None:
            raise _Usage(f"--password without a value needs a terminal; set {PASSWORD_ENV}")
        from ocm.terminal import ask_password

        return await ask_password(prompter, args.room)
    if args.password is not None:
        return str(args.password) or None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if args.command == "join" and prompter is not None:
        # On a terminal, ask only if the room wants one: a wrong guess counts against
        # the rate limit.
        listed = {room.name: room for room in await list_rooms(args.server)}
        if args.room not in listed:
            raise ServerError(ErrorCode.NO_SUCH_ROOM, f'no room named "{args.room}"')
        if listed[args.room].protected:
            from ocm.terminal import ask_password

            return await ask_password(prompter, args.room)
    return None


async def _print_rooms(server: tuple[str, int]) -> int:
    from ocm.chatview import one_line

    rooms = await list_rooms(server)
    if not rooms:
        print(f"no rooms on {format_server_address(server)} — create one with: ocm create ROOM")
        return 0
    print(f"{'MEMBERS':>7}  {'ACCESS':<8}  ROOM")
    for room in rooms:
        access = "password" if room.protected else "open"
        print(f"{room.members:>7}  {access:<8}  {one_line(room.name)}")
    return 0
