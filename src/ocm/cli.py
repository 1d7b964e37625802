"""The ``ocm`` command: the parser and the dispatch, nothing else.

``ocm server`` is :mod:`ocm.servercli`; ``ocm create``, ``join``, ``rooms`` and ``ocm``
alone are :mod:`ocm.clientcli`. Building the whole parser loads only the standard
library and ocm's own modules, so ``PYTHONPATH=src python -m ocm server`` works from a
bare checkout; the terminal UI and prompt_toolkit are imported only by a client that
runs on a terminal.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ocm import __version__, clientcli, servercli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocm", description="OCM, the Online Chat Messenger: a terminal-first chat."
    )
    parser.add_argument("--version", action="version", version=f"ocm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    servercli.add_parser(commands)
    clientcli.add_parsers(commands)
    parser.epilog = "Without a command, ocm asks for a server, a name and a room, then chats."
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "server":
        return servercli.run(args)
    return clientcli.run(args)
