"""``ocm server``: its flags and how it runs. Standard library and the server modules only.

:mod:`ocm.cli` adds this parser, for ``ocm server`` only, next to the client's
(:mod:`ocm.cli.client`) and calls :func:`run`, so ``PYTHONPATH=src python -m ocm server``
works from a bare checkout and never loads the terminal UI or prompt_toolkit.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from pathlib import Path

from ocm.cli import SERVER_SUMMARY
from ocm.cli.args import port
from ocm.server.app import ServerConfig, serve
from ocm.server.identity import IdentityError
from ocm.server.limits import Limits, flags
from ocm.wire.constants import DEFAULT_PORT

__all__ = ["add_parser", "limits_of", "run"]


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
    server.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the server keeps its TLS key (server.key, server.crt), made on the "
        "first start and the same ever after, so that clients recognise the server "
        "(default: $XDG_DATA_HOME/ocm or ~/.local/share/ocm; macOS: ~/Library/Application "
        "Support/ocm; Windows: %%LOCALAPPDATA%%\\ocm)",
    )
    server.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="a certificate (PEM) to use instead of the server's own key, for instance "
        "one a certificate authority issued for this host; needs --key",
    )
    server.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="the private key (PEM) of --cert, without a passphrase",
    )
    server.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="also serve clients that do not encrypt (version 1 clients, ocm --insecure) on "
        "the same port; without it they are refused with encryption_required",
    )
    server.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help="serve Prometheus metrics (counts only: no names, tokens or texts) at "
        "http://HOST:PORT/metrics, 0 for any free port (default: off)",
    )
    server.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics endpoint listens on: it is for the operator, not the "
        "internet (plain HTTP, no password), so loopback unless you put it behind a "
        "firewall (default: %(default)s)",
    )
    server.add_argument(
        "--redis",
        type=redis_url,
        metavar="URL",
        help="join a cluster of nodes that share this Redis (redis://HOST:PORT/DB, or "
        "rediss:// for TLS): rooms, names and limits hold across the nodes; Redis's "
        "password in $OCM_REDIS_PASSWORD (needs pip install 'ocm[cluster]'; default: off, "
        "a server on its own)",
    )
    # Every limit flag, from the fields of Limits: its default, its unit, its meaning.
    for flag in flags(Limits):
        server.add_argument(
            flag.option,
            dest=flag.name,
            type=flag.type,
            default=flag.default,
            metavar=flag.unit.upper(),
            help=flag.help.replace("%", "%%") + " (default: %(default)s)",
        )
    server.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log verbosity (default: %(default)s)",
    )


def redis_url(text: str) -> str:
    """The argument type of --redis: a redis:// or rediss:// URL."""
    if not text.startswith(("redis://", "rediss://")) or len(text.split("://", 1)[1]) == 0:
        raise argparse.ArgumentTypeError(f"not a redis:// or rediss:// URL: {text}")
    return text


def limits_of(args: argparse.Namespace) -> Limits:
    """The limits the parsed flags ask for: one field per flag of :func:`add_parser`."""
    return Limits(**{flag.name: getattr(args, flag.name) for flag in flags(Limits)})


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
        limits=limits_of(args),
        data_dir=args.data_dir,
        cert_file=args.cert,
        key_file=args.key,
        allow_plaintext=args.allow_plaintext,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        redis_url=args.redis,
    )
    if args.redis is not None and importlib.util.find_spec("redis") is None:
        print(
            "ocm server: --redis needs redis-py: pip install 'ocm[cluster]'",
            file=sys.stderr,
        )
        return 1
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
    except IdentityError as error:
        print(f"ocm server: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0
