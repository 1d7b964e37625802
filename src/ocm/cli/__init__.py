"""The ``ocm`` command: the parser and the dispatch, nothing else.

``ocm server`` is :mod:`ocm.cli.server`; ``ocm create``, ``join``, ``rooms`` and ``ocm``
alone are :mod:`ocm.cli.client`. The server's flags are built only for ``ocm server``
(they come from the server's own modules), so a client command never loads a server
module, and ``ocm server`` never loads the terminal UI or prompt_toolkit. Everything here
is standard library and ocm's own code: ``PYTHONPATH=src python -m ocm server`` works
from a bare checkout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ocm import __version__
from ocm.cli import client as client_commands

__all__ = ["SERVER_SUMMARY", "build_parser", "main"]

SERVER_SUMMARY = "run an OCM server"


def build_parser(*, server_flags: bool = True) -> argparse.ArgumentParser:
    """The ``ocm`` parser. ``server_flags=False`` lists ``ocm server`` without building
    its flags, which would load the server's modules: :func:`main` passes it for every
    command but ``server``."""
    parser = argparse.ArgumentParser(
        prog="ocm", description="OCM, the Online Chat Messenger: a terminal-first chat."
    )
    parser.add_argument("--version", action="version", version=f"ocm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    if server_flags:
        from ocm.cli import server as server_command

        server_command.add_parser(commands)
    else:
        commands.add_parser("server", help=SERVER_SUMMARY)
    client_commands.add_parsers(commands)
    client_commands.add_options(parser)
    parser.epilog = "Without a command, ocm asks for a server, a name and a room, then chats."
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # ``ocm server`` is the first word: ``ocm``'s own options are for ``ocm`` alone.
    args = build_parser(server_flags=words[:1] == ["server"]).parse_args(words)
    if args.command == "server":
        from ocm.cli import server as server_command

        return server_command.run(args)
    return client_commands.run(args)
