"""What password hashing leaves in the server's memory: 1,000 protected joins, measured.

    python -m bench.hash_memory                      # --max-concurrent-hashes 1, 2 and 4
    python -m bench.hash_memory --src /tmp/ocm-before/src --label before

For each value of ``--max-concurrent-hashes`` it starts a real ``ocm server`` on
127.0.0.1 (port 0; ``--src`` chooses the source tree it runs from, this checkout's by
default), creates a password-protected room, and has a few concurrent TCRP clients join
it ``--joins`` times with the right password and distinct names (so the per-IP limit on
wrong passwords never applies). Each join is one scrypt hash (16 MiB). It then reports
the server's resident memory (VmRSS) before and after, its peak (VmHWM), and its thread
count (the most seen while joining, and after): docs/security.md explains the figures.
Linux only for the memory figures (``/proc``); elsewhere they show as a dash.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procstat
from bench.run import server_flags
from ocm.client.exchange import read_message
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    TcrpReader,
    encode_request,
    parse_reply,
)

__all__ = ["Measurement", "main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ROOM = "vault"
PASSWORD = "correct horse battery staple"
LISTENING = re.compile(r"listening on .*TCP port (\d+), UDP port \d+ .*?(\w+) loop")
START_TIMEOUT = 15.0
JOIN_TIMEOUT = 30.0  # one join, queued behind every other client's hash
SAMPLE_EVERY = 0.05  # seconds between two looks at the server's thread count
SETTLE = 0.5  # after the last join, before the figures are read


class BenchError(Exception):
    """Something the bench cannot carry on from; printed as one line."""


@dataclass(frozen=True)
class Measurement:
    hashes: int  # --max-concurrent-hashes
    joins: int
    clients: int
    seconds: float
    loop: str
    rss_idle_kib: int | None  # after the room was created (one hash)
    rss_after_kib: int | None
    hwm_kib: int | None
    threads_max: int | None  # the most seen while joining
    threads_after: int | None

    @property
    def joins_per_s(self) -> float:
        return self.joins / self.seconds if self.seconds else 0.0


class Server:
    """``python -m ocm server`` from ``src``, its log in a temporary file."""

    def __init__(self, src: Path, flags: list[str], log_dir: Path) -> None:
        self.log_path = log_dir / f"server-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(src)}
        command = [sys.executable, "-m", "ocm", "server", "--host", HOST, "--port", "0", *flags]
        command += server_flags(src, log_dir / "data")  # the load speaks version 1, in clear
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=log_dir
        )
        self.pid = self.process.pid
        self.tcp_port = 0
        self.loop = "-"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log_path.read_text(encoding="utf-8", errors="replace"))
            if found:
                self.tcp_port, self.loop = int(found[1]), found[2]
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise BenchError(f"the server did not start: {self.last_line()}")

    def last_line(self) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return (text.strip().splitlines() or ["no output"])[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


async def _connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    framer: TcrpReader,
    request: CreateRoom | JoinRoom,
) -> None:
    """One request on an open connection; BenchError unless it is admitted."""
    writer.write(encode_request(request))
    await writer.drain()
    async with asyncio.timeout(JOIN_TIMEOUT):
        ack = parse_reply(await read_message(reader, framer))
        if not isinstance(ack, Ack) or not ack.ok:
            raise BenchError(f"{request} was refused: {ack}")
        complete = parse_reply(await read_message(reader, framer))
    if not isinstance(complete, Admission):
        raise BenchError(f"{request} got {complete} instead of an admission")


async def _client(port: int, names: list[str]) -> None:
    """One TCRP connection joining the room once per name, one join after another."""
    reader, writer = await _connection(port)
    framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
    try:
        for name in names:
            await _exchange(reader, writer, framer, JoinRoom(ROOM, name, PASSWORD))
    finally:
        writer.close()


async def _sample_threads(pid: int, most: list[int]) -> None:
    while True:
        count = procstat.thread_count(pid)
        if count is not None:
            most[0] = max(most[0], count)
        await asyncio.sleep(SAMPLE_EVERY)


async def _run(server: Server, hashes: int, joins: int, clients: int) -> Measurement:
    reader, writer = await _connection(server.tcp_port)
    try:
        framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
        await _exchange(reader, writer, framer, CreateRoom(ROOM, "host", PASSWORD))
    finally:
        writer.close()
    await asyncio.sleep(SETTLE)
    rss_idle = procstat.memory_kib(server.pid)
    names = [f"member{n}" for n in range(joins)]
    most = [procstat.thread_count(server.pid) or 0]
    sampler = asyncio.create_task(_sample_threads(server.pid, most))
    started = time.monotonic()
    try:
        await asyncio.gather(*(_client(server.tcp_port, names[i::clients]) for i in range(clients)))
    finally:
        sampler.cancel()
    seconds = time.monotonic() - started
    await asyncio.sleep(SETTLE)
    return Measurement(
        hashes=hashes,
        joins=joins,
        clients=clients,
        seconds=seconds,
        loop=server.loop,
        rss_idle_kib=rss_idle,
        rss_after_kib=procstat.memory_kib(server.pid),
        hwm_kib=procstat.memory_kib(server.pid, "VmHWM"),
        threads_max=most[0] or None,
        threads_after=procstat.thread_count(server.pid),
    )


def measure(src: Path, hashes: int, joins: int, clients: int) -> Measurement:
    """Start a server from ``src`` with ``--max-concurrent-hashes hashes`` and measure it."""
    flags = [
        f"--max-concurrent-hashes={hashes}",
        f"--max-members={joins + 1}",  # every joiner, and the host
        "--idle-timeout=3600",  # nobody heartbeats: keep everyone until the end
    ]
    with tempfile.TemporaryDirectory(prefix="ocm-hash-memory-") as logs:
        server = Server(src, flags, Path(logs))
        try:
            result = asyncio.run(_run(server, hashes, joins, clients))
        finally:
            server.stop()
        if server.process.returncode not in (0, -signal.SIGTERM):
            raise BenchError(f"the server exited {server.process.returncode}")
    return result


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def markdown(rows: list[Measurement], label: str) -> str:
    lines = [
        f"| {label}: --max-concurrent-hashes | RSS before (MiB) | RSS after (MiB) "
        "| peak RSS (MiB) | threads (most / after) | joins/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.hashes} | {_mib(row.rss_idle_kib)} | {_mib(row.rss_after_kib)} "
            f"| {_mib(row.hwm_kib)} | {row.threads_max or '-'} / {row.threads_after or '-'} "
            f"| {row.joins_per_s:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hash_memory", description=__doc__)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the server's source tree")
    parser.add_argument("--label", default="server", help="the first column's title")
    parser.add_argument("--joins", type=int, default=1000, help="protected joins per server")
    parser.add_argument("--clients", type=int, default=8, help="concurrent TCRP connections")
    parser.add_argument(
        "--hashes",
        default="1,2,4",
        help="values of --max-concurrent-hashes, comma-separated (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    values = [int(value) for value in args.hashes.split(",")]
    if args.joins < 1 or args.clients < 1 or min(values) < 1:
        parser.error("--joins, --clients and every --hashes value must be at least 1")
    rows = []
    try:
        for hashes in values:
            row = measure(args.src.resolve(), hashes, args.joins, args.clients)
            print(
                f"--max-concurrent-hashes {hashes}: {row.joins} joins in {row.seconds:.1f} s, "
                f"RSS {_mib(row.rss_after_kib)} MiB, threads {row.threads_after}",
                file=sys.stderr,
            )
            rows.append(row)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    loop = rows[0].loop if rows else "-"
    print(markdown(rows, args.label))
    print(
        f"\n{args.joins:,} joins from {args.clients} connections per row; server from "
        f"{args.src} ({loop} loop), Python {sys.version.split()[0]}, {procstat.cpu_count()} CPUs."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
