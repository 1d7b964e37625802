"""The ``ocm`` command: ``ocm server`` runs a server; the other commands are the client.

The server half imports only the standard library, so ``PYTHONPATH=src python -m ocm
server`` works from a bare checkout. Client commands import prompt_toolkit lazily.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from ocm import __version__
from ocm.registry import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_MEMBERS, DEFAULT_MAX_ROOMS
from ocm.server import DEFAULT_PORT, ServerConfig, serve
from ocm.tcp import TcpLimits

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
        tcp=TcpLimits(
            max_payload=args.max_payload,
            idle_timeout=args.tcp_idle_timeout,
            message_timeout=args.message_timeout,
            max_connections_per_ip=args.max_connections_per_ip,
            max_connections=args.max_connections,
        ),
    )
    try:
        asyncio.run(serve(config))
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
    build_parser().print_help()
    return 2
