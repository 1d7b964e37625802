"""The client commands of ``ocm``: ``create``, ``join``, ``rooms``, and ``ocm`` alone.

Their flags, and the flow from the command line to a chat: who and where, the password,
entering the room, then the interactive UI on a terminal (:mod:`ocm.terminal`) or the
pipe mode otherwise (:mod:`ocm.pipe`). Those two are imported only when used: the parser
is built for ``ocm server`` too, and what it loads (this module, :mod:`ocm.client`)
needs nothing outside the standard library. Every error ends here as one line and an
exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import TYPE_CHECKING

from ocm.client import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_PORT,
    ChatClient,
    format_server_address,
    list_rooms,
    parse_server_address,
)
from ocm.errors import ErrorCode, OCMError, ServerError
from ocm.protocol import validate_name
from ocm.servercli import positive_float

if TYPE_CHECKING:
    from ocm.terminal import Prompter

__all__ = ["PASSWORD_ENV", "SERVER_ENV", "add_parsers", "run"]

SERVER_ENV = "OCM_SERVER"
PASSWORD_ENV = "OCM_PASSWORD"

# The two ways into a room: command, help line, description.
_ENTER_COMMANDS = (
    (
        "create",
        "create a room and chat in it as its host",
        "Create ROOM and enter it as its host: when you leave, the room closes. With a "
        f"password (--password, --ask-password or ${PASSWORD_ENV}) the room is protected, "
        "otherwise it is open.",
    ),
    ("join", "join a room and chat", "Join the existing ROOM."),
)
_MODES = (
    "On a terminal: an interactive chat (/help inside). Otherwise each stdin line is sent "
    "and each event is one stdout line; end of input leaves."
)


class _Usage(Exception):
    """The command line cannot work as given (exit status 2)."""


def _server_address(text: str) -> tuple[str, int]:
    try:
        return parse_server_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_server() -> str:
    return os.environ.get(SERVER_ENV) or f"localhost:{DEFAULT_PORT}"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``create``, ``join`` and ``rooms``."""
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
    secret = who.add_mutually_exclusive_group()
    secret.add_argument(
        "--password",
        metavar="PASSWORD",
        help=f"the room's password (default: ${PASSWORD_ENV}; other users of the machine "
        "can see a command line, so prefer the variable or --ask-password)",
    )
    secret.add_argument(
        "--ask-password",
        action="store_true",
        help="ask for the password without echo (on a terminal; joining a protected room "
        "on a terminal asks anyway)",
    )
    who.add_argument(
        "--heartbeat",
        type=positive_float,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="seconds between heartbeats; keep it under a third of the server's "
        "--idle-timeout (default: %(default)s)",
    )
    for command, summary, description in _ENTER_COMMANDS:
        enter = commands.add_parser(
            command, parents=[where, who], help=summary, description=f"{description} {_MODES}"
        )
        enter.add_argument("room", metavar="ROOM")
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


def run(args: argparse.Namespace) -> int:
    """Run a client command to its exit status."""
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
    if args.ask_password:
        if prompter is None:
            raise _Usage(f"--ask-password needs a terminal; in scripts set {PASSWORD_ENV}")
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
