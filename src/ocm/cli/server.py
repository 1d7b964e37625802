"""``ocm server``: its flags and how it runs. Standard library and the server modules only.

:mod:`ocm.cli` adds this parser, for ``ocm server`` only, next to the client's
(:mod:`ocm.cli.client`) and calls :func:`run`, so ``PYTHONPATH=src python -m ocm server``
works from a bare checkout and never loads the terminal UI or prompt_toolkit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

from ocm.cli import SERVER_SUMMARY
from ocm.cli.args import port, positive_float, positive_int
from ocm.server.app import ServerConfig, serve
from ocm.server.tcp import TcpLimits
from ocm.wire.constants import DEFAULT_PORT

__all__ = ["add_parser", "run"]


def _limit_flags() -> list[tuple[str, Callable[[str], object], object, str]]:
    """Every limit flag: name, parser, default (from the code's own constants), meaning."""
    tcp = TcpLimits()
    config = ServerConfig()
    return [
        (
            "--idle-timeout",
            positive_float,
            config.idle_timeout,
            "seconds of silence after which a member is dropped",
        ),
        ("--max-rooms", positive_int, config.max_rooms, "rooms on the server"),
        ("--max-members", positive_int, config.max_members, "members per room"),
        (
            "--max-rooms-per-ip",
            positive_int,
            config.max_rooms_per_ip,
            "rooms one client IP may host at once",
        ),
        (
            "--max-connections-per-ip",
            positive_int,
            tcp.max_connections_per_ip,
            "open TCP connections per IP",
        ),
        ("--max-connections", positive_int, tcp.max_connections, "open TCP connections in all"),
        ("--max-payload", positive_int, tcp.max_payload, "largest TCRP payload in bytes"),
        (
            "--message-timeout",
            positive_float,
            tcp.message_timeout,
            "seconds a peer has to send a whole TCRP message once started",
        ),
        (
            "--tcp-idle-timeout",
            positive_float,
            tcp.idle_timeout,
            "seconds an idle TCP connection is kept open",
        ),
        (
            "--max-concurrent-hashes",
            positive_int,
            tcp.max_concurrent_hashes,
            "password hashes computed at once, 16 MiB each",
        ),
        (
            "--max-password-failures",
            positive_int,
            config.max_failures,
            "wrong passwords per client IP per --failure-window before rate_limited",
        ),
        (
            "--failure-window",
            positive_float,
            config.failure_window,
            "seconds over which wrong passwords are counted",
        ),
        (
            "--error-replies-per-second",
            positive_int,
            int(config.error_rate),
            "UDP ERROR replies per source IP per second, after a burst of as many",
        ),
    ]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = commands.add_parser(
        "server",
        help=SERVER_SUMMARY,
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
        type=port,
        default=DEFAULT_PORT,
        help="TCP port, 0 for any free port (default: %(default)s)",
    )
    server.add_argument(
        "--udp-port", type=port, default=None, help="UDP port (default: the TCP port)"
    )
    for flag, parse, default, meaning in _limit_flags():
        server.add_argument(
            flag, type=parse, default=default, help=f"{meaning} (default: %(default)s)"
        )
    server.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log verbosity (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
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
        max_rooms_per_ip=args.max_rooms_per_ip,
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
    # uvloop (pip install ocm[fast]) when present: the relay then spends about a fifth
    # less CPU per datagram (docs/performance.md); plain asyncio otherwise.
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
            f"ocm server: {error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0
