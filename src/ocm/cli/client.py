"""The client commands of ``ocm``: ``create``, ``join``, ``rooms``, and ``ocm`` alone.

Their flags, and the flow from the command line to a chat: who and where, the password,
entering the room, then the interactive UI on a terminal (:mod:`ocm.ui.terminal`) or the
pipe mode otherwise (:mod:`ocm.ui.pipe`). Those two are imported only when used: the parser
is built for ``ocm server`` too, and what it loads (this module, :mod:`ocm.client`)
needs nothing outside the standard library but ``cryptography`` (TLS). Every error ends
here as one line and an exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

from ocm.cli.args import count, positive_float
from ocm.client import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_PORT,
    ChatClient,
    Security,
    format_server_address,
    list_rooms,
    parse_server_address,
)
from ocm.client.delivery import MAX_HELD
from ocm.client.exchange import describe_error
from ocm.errors import ErrorCode, LocalProtocolError, OCMError, ServerError, ServerKeyChanged
from ocm.wire.fingerprint import is_fingerprint
from ocm.wire.names import validate_name

if TYPE_CHECKING:
    from ocm.ui.terminal import Prompter

__all__ = ["EXIT_STATUSES", "PASSWORD_ENV", "SERVER_ENV", "add_options", "add_parsers", "run"]

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
# The exit statuses of create and join (ocm.ui.chatview.exit_status), as their --help
# ends: README.md's exit-status table word for word (tests/cli/test_cli.py holds them to
# it). Spelled out here: loading ocm.ui to build the parser would load it for ocm server
# and ocm rooms too.
EXIT_STATUSES = (
    (
        0,
        "you left: end of input or exit (on a terminal: /exit, Ctrl-C or Ctrl-D twice), "
        "every line confirmed",
    ),
    (
        1,
        "an error (such as a refusal when entering); or you left, but a line was refused "
        "or not confirmed",
    ),
    (2, "a usage error"),
    (3, "the room closed: the host left or timed out, or the server shut down"),
    (
        4,
        "you lost the room, which may go on: the server stopped answering, restarted or "
        "closed its port, your network went away, or the server dropped you after too long "
        "a silence; or it never confirmed your leave",
    ),
    (
        5,
        "the server's key is not the one known for it (or given with --fingerprint): "
        "nothing was sent; the message says how to accept the new key",
    ),
    (130, "Ctrl-C in pipe mode"),
    (143, "SIGTERM"),
    (129, "SIGHUP"),
)
_EPILOG = "exit status:\n" + "\n".join(
    textwrap.fill(f"{code:<4} {meaning}", 76, initial_indent="  ", subsequent_indent=" " * 7)
    for code, meaning in EXIT_STATUSES
)
# What --history shows when it is not given.
_HISTORY_DEFAULTS = "20 on a terminal, 0 in pipe mode"
# The ways to give a room's password, as an error names them: --ask-password only on a
# terminal, the only place it works.
_PASSWORD_WAYS = f"--password or ${PASSWORD_ENV}"
_PASSWORD_WAYS_ON_TERMINAL = f"--password, ${PASSWORD_ENV} or --ask-password"


class _Usage(Exception):
    """The command line cannot work as given (exit status 2)."""


def _server_address(text: str) -> tuple[str, int]:
    try:
        return parse_server_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_server() -> str:
    return os.environ.get(SERVER_ENV) or f"localhost:{DEFAULT_PORT}"


def _default_address() -> tuple[str, int] | None:
    """The default of --server, or None when ${SERVER_ENV} is not a server address: that
    is reported only if no --server replaces it, and as the variable's fault (argparse
    would blame "argument --server", which the user never gave)."""
    try:
        return parse_server_address(_default_server())
    except ValueError:
        return None


def _env_server() -> str:
    """``$OCM_SERVER`` (or the built-in default) once it is known to be an address."""
    text = _default_server()
    try:
        parse_server_address(text)
    except ValueError as error:
        raise _Usage(f"${SERVER_ENV}: {error}") from None
    return text


def _fingerprint(text: str) -> str:
    if not is_fingerprint(text):
        raise argparse.ArgumentTypeError(
            f"not a key fingerprint: {text} (SHA256: and 43 base64 characters, as the "
            "server logs it)"
        )
    return text


def _security_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """``--insecure`` and ``--fingerprint``, for ``ocm`` alone (``default`` False and
    None) and each command (SUPPRESS: ``ocm --insecure join`` works too)."""
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=False if default is None else default,
        help="talk to the server in plaintext, without TLS: only for a server started with "
        "--allow-plaintext (or an older one); the password and the chat can be read on the way",
    )
    parser.add_argument(
        "--fingerprint",
        type=_fingerprint,
        default=default,
        metavar="SHA256:...",
        help="accept only the server key with this fingerprint (the server logs it when it "
        "starts), and remember it: also how to accept a server's new key",
    )


def _history_flag(parser: argparse.ArgumentParser, default: object, help: str) -> None:
    parser.add_argument("--history", type=count(MAX_HELD), default=default, metavar="K", help=help)


def _bell_flag(parser: argparse.ArgumentParser, default: object, help: str) -> None:
    parser.add_argument("--no-bell", action="store_true", default=default, help=help)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``ocm`` alone (the interactive questions, then the chat)."""
    _history_flag(
        parser,
        None,
        "without a command: show the last K messages of the room you join, dimmed "
        "(default: 20; 0: none)",
    )
    _bell_flag(
        parser,
        False,
        "without a command: no terminal bell when someone names you while you are not typing",
    )
    _security_flags(parser, None)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``create``, ``join`` and ``rooms``."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--server",
        type=_server_address,
        default=_default_address(),
        metavar="HOST[:PORT]",
        help=f"the server; [ADDRESS]:PORT for IPv6 (default: ${SERVER_ENV} or "
        f"localhost:{DEFAULT_PORT})",
    )
    _security_flags(where, argparse.SUPPRESS)
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
        help="ask for the password without echo (on a terminal; create asks twice, to "
        "catch a typo; joining a protected room on a terminal asks anyway)",
    )
    who.add_argument(
        "--heartbeat",
        type=positive_float,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="seconds between heartbeats at most; a server that says its idle timeout "
        "gets one every third of it if that is sooner (default: %(default)s)",
    )
    who.add_argument(
        "--tcp",
        action="store_true",
        help="carry the chat over TCP from the start, for networks known to block UDP "
        "(without it the client falls back to TCP by itself when UDP gets no answer)",
    )
    # Not given: None from ocm's own --history (ocm --history 5 join also works).
    _history_flag(
        who,
        argparse.SUPPRESS,
        "show the room's last K messages when you enter: dimmed on a terminal, each line "
        'starting with "history " in pipe mode; 0 shows none. At most what the server '
        f"keeps (its --history-messages, 1024 by default) (default: {_HISTORY_DEFAULTS})",
    )
    # Not given: ocm's own --no-bell stands (ocm --no-bell join also works).
    _bell_flag(
        who,
        argparse.SUPPRESS,
        "on a terminal: no bell (BEL) when someone else's message names you while your "
        "input line is empty or the window is in the background",
    )
    for command, summary, description in _ENTER_COMMANDS:
        enter = commands.add_parser(
            command,
            parents=[where, who],
            help=summary,
            description=textwrap.fill(f"{description} {_MODES}", 78),
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        enter.add_argument("room", metavar="ROOM")
        enter.add_argument(
            "--e2e",
            action="store_true",
            help="an end-to-end encrypted room: the texts are sealed with a key derived "
            "from the password, which the server never gets, so it relays them but "
            "cannot read them (needs a password; ocm join finds out by itself)"
            if command == "create"
            else "insist that the room is end-to-end encrypted: if the server says it is "
            "not, stop before sending it the password (ocm join finds out by itself; "
            "this guards against a server that lies about it)",
        )
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
            case ErrorCode.WRONG_PASSWORD if not _password_given(args):
                ways = _PASSWORD_WAYS_ON_TERMINAL if _on_terminal() else _PASSWORD_WAYS
                return f'room "{room}" needs a password — give it with {ways}'
            case ErrorCode.E2E_REQUIRED if not _password_given(args):
                # Our client joins without the e2e feature only when it has no password.
                ways = _PASSWORD_WAYS_ON_TERMINAL if _on_terminal() else _PASSWORD_WAYS
                needs = f'room "{room}" is end-to-end encrypted and needs a password'
                return f"{needs} — give it with {ways}"
    return error.message


def _password_given(args: argparse.Namespace) -> bool:
    """Whether a password came with the command (flag, variable) or was asked for."""
    return bool(
        getattr(args, "password", None)
        or getattr(args, "ask_password", False)
        or os.environ.get(PASSWORD_ENV)
    )


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
    except ServerKeyChanged as error:
        print(f"ocm: {error.message}", file=sys.stderr)
        return 5
    except OCMError as error:
        print(f"ocm: {_explain(error, args)}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"ocm: {describe_error(error)}", file=sys.stderr)  # words, never a tuple
        return 1
    except Exception as error:  # a bug: still one line, with enough to report it
        print(f"ocm: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return 1


# Signals that ask a process to end: a service manager stopping it, timeout(1), the
# terminal closing. Cancelling the main task runs the same way out as Ctrl-C: LEAVE_ROOM,
# so a host's room does not stay open (nor a member stay as a ghost) until the idle
# timeout. Not SIGINT: asyncio.run already turns it into a cancellation.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def _on_stop_signals(stop: Callable[[int], None]) -> Callable[[], None]:
    """Call ``stop(signum)`` on SIGTERM and SIGHUP where the loop supports it (POSIX; not
    Windows, which has no SIGHUP and whose loops take no signal handlers); return the
    function that removes the handlers."""
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    for name in _STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, stop, int(signum))
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(signum)

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return remove


async def _client(args: argparse.Namespace) -> int:
    """:func:`_chat`, ended by SIGTERM or SIGHUP as by Ctrl-C: leave, then exit with
    128 + the signal number (143 for SIGTERM, 129 for SIGHUP), as a shell reports it."""
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:
            received.append(signum)
            task.cancel()

    remove = _on_stop_signals(stop)
    try:
        return await _chat(args)
    except asyncio.CancelledError:
        if not received:
            raise
        task.uncancel()
        return 128 + received[0]
    finally:
        remove()


def _security(args: argparse.Namespace) -> Security:
    """TLS as the flags say; a first contact is told once on stderr (section 5)."""
    if args.insecure and args.fingerprint is not None:
        raise _Usage("--insecure and --fingerprint exclude each other")

    def first_contact(where: str, fingerprint: str) -> None:
        print(
            f"ocm: first contact with {where}; its key {fingerprint} is now remembered in "
            f"{security.path}",
            file=sys.stderr,
        )

    security = Security(
        insecure=args.insecure, fingerprint=args.fingerprint, on_first_contact=first_contact
    )
    return security


async def _chat(args: argparse.Namespace) -> int:
    if args.command is not None and args.server is None:  # a bad $OCM_SERVER, no --server
        _env_server()
    security = _security(args)
    if args.command is None:
        if not _on_terminal():
            raise _Usage(
                "interactive mode needs a terminal; in scripts use: ocm join ROOM --name NAME"
            )
        from ocm.ui import terminal

        history = terminal.DEFAULT_HISTORY if args.history is None else args.history
        return await terminal.interactive(
            _env_server(), history=history, bell=not args.no_bell, security=security
        )
    if args.command == "rooms":
        return await _print_rooms(args.server, security)
    prompter = None
    if _on_terminal():
        from ocm.ui import terminal

        prompter = terminal.Prompter()
    name = args.name
    if name is None:
        if prompter is None:
            raise _Usage("--name NAME is required when stdin is not a terminal")
        name = await terminal.ask_name(prompter)
    # Trimmed as the server does (spaces only), and refused before anything is sent.
    validate_name(name.strip(" "), "name", error=LocalProtocolError)
    password = await _password(args, prompter, security)
    e2e = args.e2e
    if e2e and not password:
        ways = _PASSWORD_WAYS_ON_TERMINAL if prompter is not None else _PASSWORD_WAYS
        raise _Usage(f"an end-to-end room (--e2e) needs a password: give it with {ways}")
    enter = ChatClient.create if args.command == "create" else ChatClient.join
    history = args.history
    if history is None:
        history = terminal.DEFAULT_HISTORY if prompter is not None else 0
    while True:
        try:
            chat = await enter(
                args.server,
                args.room,
                name,
                password,
                e2e=e2e,
                heartbeat_interval=args.heartbeat,
                history=history,
                tcp=args.tcp,
                security=security,
            )
            break
        except ServerError as error:
            # On a terminal, what was asked there and refused is asked again, and only
            # that; what came on the command line ends with its one-line error.
            if prompter is None:
                raise
            if error.code is ErrorCode.NAME_TAKEN and args.name is None:
                await prompter.say(f"! {error.message}", "class:error")
                name = await terminal.ask_name(prompter)
            elif error.code is ErrorCode.WRONG_PASSWORD and _password_asked(args):
                await prompter.say(f"! {error.message}", "class:error")
                password = await terminal.ask_password(prompter, args.room)
            else:
                raise
    if prompter is not None:
        return await terminal.TerminalChat(chat, bell=not args.no_bell).run()
    from ocm.ui.pipe import run_pipe, stdin_lines

    return await run_pipe(chat, stdin_lines(), sys.stdout, sys.stderr)


def _password_asked(args: argparse.Namespace) -> bool:
    """Whether the password is asked on the terminal (not given by flag or variable)."""
    return args.ask_password or (args.password is None and not os.environ.get(PASSWORD_ENV))


async def _password(
    args: argparse.Namespace, prompter: Prompter | None, security: Security
) -> str | None:
    if args.ask_password:
        if prompter is None:
            raise _Usage(f"--ask-password needs a terminal; in scripts set {PASSWORD_ENV}")
        from ocm.ui.terminal import ask_new_password, ask_password

        if args.command == "create":  # twice: a typo nobody knows locks everyone out
            return await ask_new_password(prompter, args.room) or None
        return await ask_password(prompter, args.room) or None
    if args.password is not None:
        return str(args.password) or None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if args.command == "join" and prompter is not None:
        # On a terminal, ask only if the room wants one: a wrong guess counts against
        # the rate limit.
        listed = {room.name: room for room in await list_rooms(args.server, security=security)}
        if args.room not in listed:
            raise ServerError(ErrorCode.NO_SUCH_ROOM, f'no room named "{args.room}"')
        if listed[args.room].protected:
            from ocm.ui.terminal import ask_password

            return await ask_password(prompter, args.room)
    return None


async def _print_rooms(server: tuple[str, int], security: Security) -> int:
    from ocm.ui.chatview import one_line

    rooms = await list_rooms(server, security=security)
    if not rooms:
        print(f"no rooms on {format_server_address(server)} — create one with: ocm create ROOM")
        return 0
    print(f"{'MEMBERS':>7}  {'ACCESS':<8}  ROOM")
    for room in rooms:
        access = "password" if room.protected else "open"
        print(f"{room.members:>7}  {access:<8}  {one_line(room.name)}")
    return 0
