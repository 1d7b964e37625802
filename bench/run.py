"""The OCM relay benchmark: one command runs every scenario against every relay.

    python -m bench.run                      # the full run, about 4 minutes on 2 cores
    python -m bench.run --smoke              # seconds, tiny counts (the test suite's run)
    python -m bench.run --markdown out.md --json out.json
    python -m bench.run --before-src /tmp/ocm-base/src   # also the server of another checkout

Each relay under test is its own process on 127.0.0.1, started fresh for every
scenario: a real ``ocm server`` on uvloop, the same server on plain asyncio (uvloop
hidden from it), the bare relay (bench/bare_relay.py) and a bare relay in C (the load
generator's ceiling). Two more measure what the delivery extension costs: the same
server with delivery members (section 3 of docs/protocol.md: DATA with message
numbers in, CHAT out, history and duplicate detection on the server), and, given
``--before-src``, the server of another checkout (the "before" of a comparison: the
commit before the history existed) run from that source tree with version 1 members.
This process does the TCRP part (create and join rooms with
:mod:`ocm.wire`), writes the members to a file and starts the load generator:
bench/loadgen.c, compiled here with the system ``cc`` into bench/build/ (Linux), or
bench/pygen.py where there is no compiler (its numbers are then generator-bound).

On Linux the relay is pinned to CPU 0 and this process and the generator to the last
CPU, so the two sides do not share a core, and the C generator busy-polls while it
measures. Each figure is the median of interleaved runs; a run that other jobs on the
machine disturbed is measured again, within a time budget. Everything is bounded: every
child has a timeout and every loop a deadline. docs/performance.md explains each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat
from ocm.client.exchange import read_message
from ocm.server.limits import Limits
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    Reply,
    TcrpReader,
    encode_request,
    parse_reply,
)
from ocm.wire.delivery import DELIVERY

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
HOST = "127.0.0.1"
# TCRP connections used to create and join rooms: well under the server's default
# --max-connections-per-ip (32), so the bench needs no server flag for it.
TCRP_CONNECTIONS = 16
START_TIMEOUT = 15.0
# A run during which other jobs kept this much of a CPU busy (in %) is measured again,
# at most RETRIES more times and RETRY_BUDGET seconds in all (so a machine that stays
# busy cannot stretch the bench): on a shared machine other jobs are what moves the
# figures most. The report shows the other load of every row.
BUSY_MACHINE = 20.0
RETRIES = 2
RETRY_BUDGET = 75.0


class BenchError(Exception):
    """Something the bench cannot carry on from; printed as one line."""


# ---------------------------------------------------------------------------
# What runs: relays, scenarios, timing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "ocm", "bare" or "crelay"
    label: str
    delivery: bool = False  # its members negotiate the delivery extension
    before: bool = False  # the server of the --before-src checkout, not this one


TARGETS = (
    Target("ocm-uvloop", "ocm", "OCM, uvloop"),
    Target("ocm-asyncio", "ocm", "OCM, asyncio"),
    Target("bare", "bare", "bare relay (Python)"),
    Target("c-relay", "crelay", "bare relay in C (generator ceiling)"),
    Target("ocm-delivery", "ocm", "OCM, uvloop, delivery members", delivery=True),
    Target("ocm-before", "ocm", "OCM before (--before-src), uvloop", before=True),
)
CHAT_TARGETS = tuple(t.name for t in TARGETS)
# The cost of the delivery extension: the same scenario on these three (issue 11).
COST_TARGETS = ("ocm-before", "ocm-uvloop", "ocm-delivery")
# At most this much of the before server's throughput may go on history and message
# numbers (issue 11): a ratio below 1 - COST_BUDGET is reported as not met.
COST_BUDGET = 0.10


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    rooms: int
    per_room: int
    all_talk: bool = False  # every member sends, not only the host
    text_size: int = 100
    mode: str = "window"  # window: saturated; rate: fixed offered rate; idle: heartbeats
    rate: float = 0.0
    window: int = 32
    targets: tuple[str, ...] = CHAT_TARGETS

    @property
    def members(self) -> int:
        return self.rooms * self.per_room


SCENARIOS = (
    Scenario("room2", "room of 2, one sender, saturated", 1, 2),
    Scenario("room10", "room of 10, one sender, saturated", 1, 10),
    Scenario("room100", "room of 100, one sender, saturated", 1, 100),
    Scenario("room10-3000B", "room of 10, 3,000-byte texts, saturated", 1, 10, text_size=3000),
    Scenario("room10-10k", "room of 10, 10,000 msgs/s offered", 1, 10, mode="rate", rate=10_000),
    Scenario(
        "rooms1000x5", "1,000 rooms of 5, all talking, saturated", 1000, 5, all_talk=True, window=64
    ),
    Scenario(
        "members10k",
        "10,000 members in 2,000 rooms, heartbeating",
        2000,
        5,
        mode="idle",
        targets=("ocm-uvloop", "ocm-asyncio", "bare", "ocm-delivery"),
    ),
)


def smoke_scenarios() -> tuple[Scenario, ...]:
    """Every scenario, shrunk to run in a fraction of a second each."""
    shrunk: dict[str, dict[str, Any]] = {
        "room100": {"per_room": 20},
        "rooms1000x5": {"rooms": 10},
        "members10k": {"rooms": 30},  # past the per-address room limit: two addresses
    }
    return tuple(replace(s, rate=min(s.rate, 2000.0), **shrunk.get(s.name, {})) for s in SCENARIOS)


@dataclass(frozen=True)
class Timing:
    warmup: float
    duration: float
    drain: float
    # Seconds between two heartbeats of one member while chatting: the client's cadence
    # (idle_timeout / 3 with the default 60 s), so chat runs carry realistic heartbeats.
    heartbeat: float
    idle: float  # how long the members scenario heartbeats
    idle_heartbeat: float  # ... and how often each member does (a stress: 20x the cadence)


FULL = Timing(warmup=0.5, duration=2.0, drain=1.0, heartbeat=20.0, idle=2.0, idle_heartbeat=1.0)
SMOKE = Timing(warmup=0.05, duration=0.2, drain=0.3, heartbeat=0.1, idle=0.2, idle_heartbeat=0.1)


@dataclass(frozen=True)
class Generator:
    kind: str  # "C" or "Python"
    command: tuple[str, ...]


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# The plain-asyncio server: the real ``ocm server`` with uvloop made unimportable.
NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; from ocm.cli import main; sys.exit(main())"
LISTENING = re.compile(r"TCP port (\d+), UDP port (\d+) .*?(\w+) loop")


def source_env(source: Path) -> dict[str, str]:
    """The environment that makes ``python -m ocm`` import the package under ``source``
    (a checkout's src/): first on PYTHONPATH, ahead of the installed one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH", "")) if p)
    return env


def server_flags(source: Path | None, data_dir: Path) -> list[str]:
    """What a server with section 5's TLS (this checkout, or a ``source`` that has it)
    needs under a bench: ``--allow-plaintext``, since benches speak version 1 in clear,
    which such a server refuses without it; and ``--data-dir`` under the run's logs, so
    its TLS key is made there, not in the user's data directory. An older server serves
    plaintext anyway, keeps no key, and knows neither flag."""
    if source is None or (source / "ocm" / "server" / "identity.py").exists():
        return ["--allow-plaintext", "--data-dir", str(data_dir)]
    return []


def describe_source(source: Path) -> str:
    """Check that ``source`` really is what the before server imports; say which commit.

    Raises BenchError when ``ocm`` would come from elsewhere (a wrong path, or an
    installed copy that wins over PYTHONPATH).
    """
    source = source.resolve()
    try:
        found = subprocess.run(
            [sys.executable, "-c", "import ocm; print(ocm.__file__)"],
            env=source_env(source),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=BENCH.parent,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BenchError(f"cannot check --before-src: {error}") from None
    where = Path(found.stdout.strip() or ".").resolve()
    if found.returncode != 0 or not where.is_relative_to(source):
        raise BenchError(f"--before-src {source}: ocm is imported from {where}, not from there")
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{source} ({commit})" if commit else str(source)


class Relay:
    """One relay process under test, started fresh for one scenario."""

    def __init__(
        self,
        target: Target,
        generator: Generator,
        logs: Path,
        cpu: int | None,
        before: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.target = target
        self.tcp_port = 0
        self.udp_port = 0
        self.loop = "-"
        self.log_path = logs / f"{target.name}-{time.monotonic_ns()}.log"
        self.flags: list[str] = []  # what the command has beyond the port (ocm targets)
        lifetime = "600"  # a bound for the baselines; they are stopped long before
        if target.kind == "ocm":
            python = [sys.executable, "-c", NO_UVLOOP] if target.name == "ocm-asyncio" else []
            command = [*(python or [sys.executable, "-m", "ocm"]), "server"]
            command += ["--host", HOST, "--port", "0"]
            self.flags = server_flags(before if target.before else None, logs / "data")
            self.flags += extra  # a bench's own server flags (bench/lossy.py: --idle-timeout)
            command += self.flags
        elif target.kind == "bare":
            command = [sys.executable, "-m", "bench.bare_relay", "--port", "0"]
            command += ["--lifetime", lifetime]
        else:
            command = [*generator.command, "relay", "--port", "0", "--lifetime", lifetime]
        env = None
        if target.before:
            if before is None:
                raise BenchError(f"{target.name} needs --before-src")
            env = source_env(before)
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, cwd=BENCH.parent, env=env
        )
        self.pid = self.process.pid
        if cpu is not None:
            procstat.pin(self.pid, cpu)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.target.kind == "ocm":
                found = LISTENING.search(text)
                if found:
                    self.tcp_port, self.udp_port = int(found[1]), int(found[2])
                    self.loop = found[3]
                    return
            else:
                port = re.search(r"listening on UDP port (\d+)", text)
                if port:
                    self.udp_port = int(port[1])
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        output = self.log_path.read_text(encoding="utf-8", errors="replace")
        last = (output.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{self.target.label} did not start: {last}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextmanager
def running(
    target: Target,
    generator: Generator,
    logs: Path,
    cpu: int | None,
    before: Path | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[Relay]:
    relay = Relay(target, generator, logs, cpu, before, extra)
    try:
        yield relay
    finally:
        relay.stop()


def build_loadgen() -> Path | None:
    """Compile bench/loadgen.c into bench/build/ (Linux with a C compiler), or None."""
    if not sys.platform.startswith("linux"):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    source, binary = BENCH / "loadgen.c", BUILD / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    if compiler is None:
        return None
    BUILD.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["failed"])[0]
        print(f"bench: cannot compile loadgen.c ({first}); using bench/pygen.py", file=sys.stderr)
        return None
    return binary


def choose_generator(wanted: str) -> Generator:
    python = Generator("Python", (sys.executable, "-m", "bench.pygen"))
    if wanted == "python":
        return python
    binary = build_loadgen()
    if binary is None:
        if wanted == "c":
            raise BenchError("no C load generator: needs Linux and a C compiler (cc)")
        return python
    return Generator("C", (str(binary),))


# ---------------------------------------------------------------------------
# TCRP: creating and joining the rooms
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    room: int  # index into the scenario's rooms
    room_name: str
    token: str
    sender: bool
    ip: str = HOST  # the loopback address it speaks from (its token is bound to it)
    boot: str | None = None  # a delivery member: the COMPLETE's boot (for its PINGs)


@dataclass
class Population:
    members: list[Member]
    creates_per_s: float = 0.0
    joins_per_s: float = 0.0
    join_server_cpu_pct: float | None = None
    join_client_cpu_pct: float | None = None


def room_addresses(rooms: int) -> list[str]:
    """Loopback addresses for the rooms' members: room r speaks from address r % len.

    The server lets one address host only so many rooms (an anti-abuse limit), so
    scenarios with many rooms spread them over 127.1.x.y, as if each room's people sat
    on their own host. Linux answers on all of 127.0.0.0/8; where only 127.0.0.1 is
    up, every room uses it and the server may refuse the extra rooms.
    """
    per_address = Limits().max_rooms_per_ip
    count = -(-rooms // per_address)
    if count <= 1:
        return [HOST]
    addresses = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(count)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[-1], 0))
    except OSError:
        return [HOST]
    return addresses


async def _read_reply(reader: asyncio.StreamReader, framer: TcrpReader) -> Reply:
    return parse_reply(await read_message(reader, framer))


async def _exchange(port: int, ip: str, requests: list[bytes]) -> list[Admission]:
    """Send requests back to back on one connection; return each admission."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(ip, 0))
    tokens: list[Admission] = []
    framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
    try:
        writer.write(b"".join(requests))
        for _ in requests:
            ack = await _read_reply(reader, framer)
            if not isinstance(ack, Ack) or not ack.ok:
                raise BenchError(f"the server refused a request: {ack}")
            admission = await _read_reply(reader, framer)
            if not isinstance(admission, Admission):
                raise BenchError(f"expected an admission, got {admission}")
            tokens.append(admission)
    finally:
        writer.close()
    return tokens


async def _admit_all(port: int, requests: list[tuple[str, bytes]]) -> list[Admission]:
    """Send (source address, request) pairs over a few connections per address.

    TCRP_CONNECTIONS connections in all (at least one per address); the admissions
    come back in request order.
    """
    by_address: dict[str, list[int]] = {}
    for index, (ip, _) in enumerate(requests):
        by_address.setdefault(ip, []).append(index)
    lanes: list[tuple[str, list[int]]] = []
    per_address = max(1, TCRP_CONNECTIONS // len(by_address)) if by_address else 1
    for ip, indexes in by_address.items():
        lanes += [(ip, indexes[i::per_address]) for i in range(per_address)]
    lanes = [(ip, indexes) for ip, indexes in lanes if indexes]
    answers = await asyncio.gather(
        *(_exchange(port, ip, [requests[i][1] for i in indexes]) for ip, indexes in lanes)
    )
    tokens: list[Admission | None] = [None] * len(requests)
    for (_, indexes), lane_tokens in zip(lanes, answers, strict=True):
        for index, token in zip(indexes, lane_tokens, strict=True):
            tokens[index] = token
    return [token for token in tokens if token is not None]


async def populate_ocm(relay: Relay, scenario: Scenario, delivery: bool = False) -> Population:
    """Create the rooms and join their members over TCRP, timing both. With
    ``delivery`` every member asks for the delivery extension (and must get it)."""
    names = [f"{scenario.name}-{i}" for i in range(scenario.rooms)]
    ips = room_addresses(scenario.rooms)
    ip_of = [ips[r % len(ips)] for r in range(scenario.rooms)]
    features = (DELIVERY,) if delivery else ()
    creates = [
        (ip_of[r], encode_request(CreateRoom(name, "host", features=features)))
        for r, name in enumerate(names)
    ]
    joining = [(r, k) for k in range(1, scenario.per_room) for r in range(scenario.rooms)]
    joins = [
        (ip_of[r], encode_request(JoinRoom(names[r], f"member{k}", features=features)))
        for r, k in joining
    ]
    async with asyncio.timeout(120):
        started = time.perf_counter()
        host_tokens = await _admit_all(relay.tcp_port, creates)
        created = time.perf_counter()
        cpu0, client0 = procstat.cpu_seconds(relay.pid), time.process_time()
        join_tokens = await _admit_all(relay.tcp_port, joins)
        joined = time.perf_counter()
        cpu1, client1 = procstat.cpu_seconds(relay.pid), time.process_time()
    admissions = [(r, True, a) for r, a in enumerate(host_tokens)]
    admissions += [
        (r, scenario.all_talk, a) for (r, _), a in zip(joining, join_tokens, strict=True)
    ]
    members = []
    for r, sender, admission in admissions:
        boot = admission.boot if DELIVERY in admission.features else None
        if delivery and boot is None:
            raise BenchError(f"{relay.target.label} did not grant the delivery extension")
        members.append(Member(r, names[r], admission.token, sender, ip_of[r], boot))
    population = Population(members, creates_per_s=len(creates) / (created - started))
    if joins:
        elapsed = joined - created
        population.joins_per_s = len(joins) / elapsed
        population.join_client_cpu_pct = (client1 - client0) / elapsed * 100
        if cpu0 is not None and cpu1 is not None:
            population.join_server_cpu_pct = (cpu1 - cpu0) / elapsed * 100
    return population


def populate_bare(scenario: Scenario) -> Population:
    """The same members for a bare relay: it has no TCRP, so tokens are made up here."""
    ips = room_addresses(scenario.rooms)
    members = []
    for r in range(scenario.rooms):
        for k in range(scenario.per_room):
            token = secrets.token_urlsafe(24)  # as long as an OCM token: same datagram size
            sender = k == 0 or scenario.all_talk
            members.append(Member(r, f"{scenario.name}-{r}", token, sender, ips[r % len(ips)]))
    return Population(members)


def write_members(population: Population, path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for m in population.members:
            room = m.room_name.encode().hex()
            out.write(f"{m.room} {int(m.sender)} {m.ip} {room} {m.token} {m.boot or '-'}\n")


# ---------------------------------------------------------------------------
# One scenario against one relay
# ---------------------------------------------------------------------------


def run_generator(
    generator: Generator,
    relay: Relay,
    members: Path,
    scenario: Scenario,
    timing: Timing,
    spin: bool,
) -> dict[str, Any]:
    idle = scenario.mode == "idle"
    duration = timing.idle if idle else timing.duration
    args = {
        "--server": relay.udp_port,
        "--server-pid": relay.pid,
        "--members": members,
        "--format": "ocm" if relay.target.kind == "ocm" else "bare",
        "--mode": scenario.mode,
        "--window": scenario.window,
        "--rate": scenario.rate or 1000,
        "--text-size": scenario.text_size,
        "--warmup": 0 if idle else timing.warmup,
        "--duration": duration,
        "--drain": timing.drain,
        "--heartbeat": timing.idle_heartbeat if idle else timing.heartbeat,
        "--spin": int(spin and not idle),
    }
    command = [*generator.command, "run"]
    for key, value in args.items():
        command += [key, str(value)]
    # Registration is paced at 20,000 members/s and may take a few rounds.
    limit = 30 + timing.warmup + duration + timing.drain + scenario.members / 2000
    busy0, server0 = procstat.busy_seconds(), procstat.cpu_seconds(relay.pid)
    children0, started = _children_cpu(), time.monotonic()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=limit, cwd=BENCH.parent
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the load generator ran past {limit:.0f} s on {scenario.name}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"the load generator failed on {scenario.name}: {last}")
    report: dict[str, Any] = json.loads(result.stdout)
    elapsed = time.monotonic() - started
    busy1, server1 = procstat.busy_seconds(), procstat.cpu_seconds(relay.pid)
    ours = _children_cpu() - children0
    if None not in (busy0, busy1, server0, server1):
        # What else ran meanwhile (other jobs on the machine), in % of one CPU.
        others = (busy1 - busy0) - (server1 - server0) - ours  # type: ignore[operator]
        report["background_cpu_pct"] = max(0.0, others / elapsed * 100)
    delivered = report["delivered_per_s"]
    if delivered > 0 and report["server_cpu_pct"] >= 0:
        report["server_us_per_datagram"] = report["server_cpu_pct"] * 1e4 / delivered
    return report


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the generator runs)."""
    try:
        import resource
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    target: Target,
    scenario: Scenario,
    generator: Generator,
    timing: Timing,
    workdir: Path,
    cpu: int | None,
    spin: bool = False,
    before: Path | None = None,
) -> dict[str, Any]:
    with running(target, generator, workdir, cpu, before) as relay:
        rss_before = procstat.memory_kib(relay.pid)
        if target.kind == "ocm":
            population = asyncio.run(populate_ocm(relay, scenario, target.delivery))
        else:
            population = populate_bare(scenario)
        members = workdir / f"members-{target.name}-{scenario.name}.txt"
        write_members(population, members)
        report = run_generator(generator, relay, members, scenario, timing, spin)
        rss_after = procstat.memory_kib(relay.pid)
        peak = procstat.memory_kib(relay.pid, "VmHWM")
        loop = relay.loop
    row: dict[str, Any] = {"scenario": scenario.name, "target": target.name, "loop": loop}
    row.update(report)
    row["peak_rss_mib"] = None if peak is None else peak / 1024
    if scenario.mode == "idle":
        row["rss_before_mib"] = None if rss_before is None else rss_before / 1024
        row["rss_after_mib"] = None if rss_after is None else rss_after / 1024
        if rss_before is not None and rss_after is not None:
            row["rss_growth_mib"] = (rss_after - rss_before) / 1024
        if target.kind == "ocm":
            row["creates_per_s"] = population.creates_per_s
            row["joins_per_s"] = population.joins_per_s
            row["join_server_cpu_pct"] = population.join_server_cpu_pct
            row["join_client_cpu_pct"] = population.join_client_cpu_pct
    return row


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, (int, float)) and value < 0):
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: Any) -> str:
    return "-" if value is None or value < 0 else f"{value / 1000:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _find(rows: list[dict[str, Any]], scenario: str, target: str) -> dict[str, Any] | None:
    for row in rows:
        if row["scenario"] == scenario and row["target"] == target:
            return row
    return None


def goals(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for each goal of issues 5 and 11; met is None when not
    measured."""
    out: list[tuple[str, str, bool | None]] = []

    def delivered(scenario: str, target: str) -> float | None:
        row = _find(rows, scenario, target)
        return None if row is None else float(row["delivered_per_s"])

    for scenario, floor in (("room10", 1.0), ("room2", 0.9)):
        ocm, bare = delivered(scenario, "ocm-uvloop"), delivered(scenario, "bare")
        ratio = ocm / bare if ocm and bare else None
        size = scenario.removeprefix("room")
        out.append(
            (
                f"saturated {size}-member room, OCM vs bare relay >= {floor:.1f}x",
                "-" if ratio is None else f"{ratio:.2f}x",
                None if ratio is None else ratio >= floor,
            )
        )
    rated = _find(rows, "room10-10k", "ocm-uvloop")
    if rated is not None:
        p99 = rated["p99_us"]
        out.append(
            (
                "p99 < 2 ms at 10,000 msgs/s in a 10-member room",
                f"p99 {_ms(p99)} ms at {_num(rated['delivered_per_s'])} delivered/s",
                0 <= p99 < 2000,
            )
        )
    members = _find(rows, "members10k", "ocm-uvloop")
    if members is not None:
        growth = members.get("rss_growth_mib")
        count = members["members"]
        out.append(
            (
                f"RSS growth for {count:,} members < 40 MB",
                "-" if growth is None else f"{growth * 1.048576:.1f} MB",
                None if growth is None else growth * 1.048576 < 40,
            )
        )
        joins = members.get("joins_per_s") or 0.0
        out.append(("open-room joins >= 2,000/s", f"{joins:,.0f}/s", joins >= 2000))
    judged = [e for e in cost(rows) if e["met"] is not None]
    if judged:
        worst = min(judged, key=lambda e: min(e["v1_vs_before"], e["delivery_vs_before"]))
        low = min(worst["v1_vs_before"], worst["delivery_vs_before"])
        out.append(
            (
                f"history and message numbers cost <= {COST_BUDGET:.0%} "
                f"(all {len(judged)} chat scenarios)",
                f"worst {low:.2f}x of before ({worst['scenario']})",
                all(e["met"] for e in judged),
            )
        )
    return out


def cost(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What history and message numbers cost (issue 11), per chat scenario measured on
    at least two of COST_TARGETS: today's server with version 1 members ("v1") and with
    delivery members ("delivery"), each against the before server.

    The ratio is delivered datagrams/s over the before server's; for a fixed-rate
    scenario, where every relay delivers what is offered, it is the before server's CPU
    per delivered datagram over this one's. ``met``: both ratios at least
    1 - COST_BUDGET (None when the before server or one of the others did not run).
    """
    modes = {s.name: s.mode for s in SCENARIOS}
    out: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["scenario"] for r in rows):
        if modes.get(name, "window") == "idle":
            continue
        found = {t: _find(rows, name, t) for t in COST_TARGETS}
        if sum(row is not None for row in found.values()) < 2:
            continue
        by_cpu = modes.get(name) == "rate"
        before, v1, delivery = (found[t] for t in COST_TARGETS)
        entry: dict[str, Any] = {
            "scenario": name,
            "metric": "cpu_per_datagram" if by_cpu else "delivered_per_s",
            "v1_vs_before": _cost_ratio(v1, before, by_cpu),
            "delivery_vs_before": _cost_ratio(delivery, before, by_cpu),
            "delivery_vs_v1": _cost_ratio(delivery, v1, by_cpu),
            # Other jobs on the machine only ever slow a run down: the best run of each
            # is the figure least disturbed by them.
            "v1_vs_before_best": _cost_ratio(v1, before, by_cpu, best=True),
            "delivery_vs_before_best": _cost_ratio(delivery, before, by_cpu, best=True),
        }
        for key, target in zip(("before", "v1", "delivery"), COST_TARGETS, strict=True):
            row = found[target] or {}
            entry[f"{key}_delivered_per_s"] = row.get("delivered_per_s")
            cpu = [float(v) for v in row.get("cpu_values", []) if v]
            entry[f"{key}_us_per_datagram"] = (
                statistics.median(cpu) if cpu else row.get("server_us_per_datagram")
            )
            entry[f"{key}_p99_us"] = row.get("p99_us")
        both = (entry["v1_vs_before"], entry["delivery_vs_before"])
        entry["met"] = None if None in both else min(both) >= 1 - COST_BUDGET
        out.append(entry)
    return out


def _cost_ratio(
    now: dict[str, Any] | None, then: dict[str, Any] | None, by_cpu: bool, best: bool = False
) -> float | None:
    """``now`` against ``then``: throughput ratio, or inverse CPU per datagram ratio.

    Of the reported (median) runs; for CPU, of the median CPU per datagram of the runs
    (the run reported for a fixed rate is the median by p99, not by CPU). With ``best``,
    of the best run of each: the one least slowed by other jobs.
    """
    runs = "cpu_values" if by_cpu else "throughput_values"
    figures: list[float | None] = []
    for row in (now, then):
        values = sorted(float(v) for v in (row or {}).get(runs, []) if v)
        if best and values:
            figures.append(values[0] if by_cpu else values[-1])
        elif by_cpu and values:
            figures.append(statistics.median(values))
        else:
            value = (row or {}).get("server_us_per_datagram" if by_cpu else "delivered_per_s")
            figures.append(float(value) if value else None)
    a, b = figures
    if not a or not b:
        return None
    return b / a if by_cpu else a / b


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_cost(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    entries = cost(rows)
    if not entries:
        return []
    titles = {s.name: s.title for s in SCENARIOS}
    before = meta.get("before") or "not run (no --before-src)"
    lines = [
        "",
        "What history and message numbers cost (issue 11), same run: the server before the "
        f"history existed ({before}), today's server with version 1 members (each chat line "
        "also goes into the room's history) and with delivery members (DATA with message "
        "numbers, duplicate check, CHAT, history). Ratio: delivered datagrams/s over the "
        "before server's; at a fixed offered rate (everyone delivers it all), the before "
        "server's median CPU per datagram over this one's. Of the median runs, and (best) "
        "of each relay's best run, the one least slowed by other jobs. Met: both median "
        f"ratios at least {1 - COST_BUDGET:.2f}x.",
        "",
        "| scenario | before dgrams/s | v1 now | delivery now | v1 now / before "
        "| delivery / before | delivery / v1 now | best: v1 now / before | best: delivery "
        "/ before | median µs/dgram before, v1, delivery | p99 ms before, v1, delivery "
        "| cost ≤ 10 % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for e in entries:
        verdict = "-" if e["met"] is None else "yes" if e["met"] else "**no**"
        us = ", ".join(_num(e[f"{k}_us_per_datagram"], 2) for k in ("before", "v1", "delivery"))
        p99 = ", ".join(_ms(e[f"{k}_p99_us"]) for k in ("before", "v1", "delivery"))
        lines.append(
            f"| {titles.get(e['scenario'], e['scenario'])} | {_num(e['before_delivered_per_s'])} "
            f"| {_num(e['v1_delivered_per_s'])} | {_num(e['delivery_delivered_per_s'])} "
            f"| {_x(e['v1_vs_before'])} | {_x(e['delivery_vs_before'])} "
            f"| {_x(e['delivery_vs_v1'])} | {_x(e['v1_vs_before_best'])} "
            f"| {_x(e['delivery_vs_before_best'])} | {us} | {p99} | {verdict} |"
        )
    return lines


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    labels = {t.name: t.label for t in TARGETS}
    titles = {s.name: s.title for s in SCENARIOS}
    lines = [
        f"OCM relay benchmark, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; load generator: {meta['generator']}; {meta['pinning']}; "
        f"each figure is the median of {meta['repeat']} interleaved runs (the C relay: 1); "
        f"{meta['retried_seconds']:.0f} s went on measuring again runs that other jobs "
        "disturbed.",
        "",
        "| scenario | relay | offered msgs/s | delivered dgrams/s | loss % | p50 ms | p99 ms "
        "| server CPU % | server µs/dgram | peak RSS MiB | generator CPU % | other load % |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        if row["scenario"] == "members10k":
            continue
        lines.append(
            f"| {titles.get(row['scenario'], row['scenario'])} | {labels[row['target']]} "
            f"| {_num(row['offered_per_s'])} | {_num(row['delivered_per_s'])} "
            f"| {_num(row['loss_pct'], 2)} | {_ms(row['p50_us'])} | {_ms(row['p99_us'])} "
            f"| {_num(row['server_cpu_pct'])} | {_num(row.get('server_us_per_datagram'), 2)} "
            f"| {_num(row['peak_rss_mib'], 1)} | {_num(row['generator_cpu_pct'])} "
            f"| {_num(row.get('background_cpu_pct'))} |"
        )
    lines += [
        "",
        "Ratios from the same run. Throughput: delivered datagrams/s over the bare relay's. "
        "Efficiency: the bare relay's server CPU per delivered datagram over this relay's "
        "(above 1: less CPU for the same work; it holds up better than throughput when "
        "other jobs share the machine).",
        "",
        "| scenario | OCM uvloop / bare | OCM asyncio / bare | uvloop / asyncio "
        "| C relay / bare (generator ceiling) | efficiency: OCM uvloop | OCM asyncio |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    chat = [s.name for s in SCENARIOS if s.mode != "idle"]
    for name in dict.fromkeys(r["scenario"] for r in rows):
        if name not in chat:
            continue
        value = {t: (_find(rows, name, t) or {}).get("delivered_per_s") for t in CHAT_TARGETS}
        cost = {t: (_find(rows, name, t) or {}).get("server_us_per_datagram") for t in CHAT_TARGETS}
        lines.append(
            f"| {titles[name]} | {_ratio(value['ocm-uvloop'], value['bare'])} "
            f"| {_ratio(value['ocm-asyncio'], value['bare'])} "
            f"| {_ratio(value['ocm-uvloop'], value['ocm-asyncio'])} "
            f"| {_ratio(value['c-relay'], value['bare'])} "
            f"| {_ratio(cost['bare'], cost['ocm-uvloop'])} "
            f"| {_ratio(cost['bare'], cost['ocm-asyncio'])} |"
        )
    member_rows = [r for r in rows if r["scenario"] == "members10k"]
    if member_rows:
        lines += [
            "",
            f"Rooms over TCRP and memory ({member_rows[0]['members']:,} members in "
            f"{member_rows[0]['rooms']:,} rooms, each heartbeating):",
            "",
            "| relay | creates/s | joins/s | server CPU % while joining | RSS idle MiB "
            "| RSS with members MiB | growth MiB | peak RSS MiB | heartbeats/s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in member_rows:
            lines.append(
                f"| {labels[row['target']]} | {_num(row.get('creates_per_s'))} "
                f"| {_num(row.get('joins_per_s'))} | {_num(row.get('join_server_cpu_pct'))} "
                f"| {_num(row.get('rss_before_mib'), 1)} | {_num(row.get('rss_after_mib'), 1)} "
                f"| {_num(row.get('rss_growth_mib'), 1)} | {_num(row['peak_rss_mib'], 1)} "
                f"| {_num(row['heartbeats_per_s'])} |"
            )
    lines += render_cost(rows, meta)
    checks = goals(rows)
    if checks:
        lines += ["", "| goal | measured | met |", "|---|---|---|"]
        for goal, measured, met in checks:
            verdict = "-" if met is None else "yes" if met else "**no**"
            lines.append(f"| {goal} | {measured} | {verdict} |")
    problems = [
        f"{r['target']} / {r['scenario']}: {key} = {r[key]}"
        for r in rows
        for key in ("unregistered", "errors", "closed", "malformed")
        if r.get(key)
    ]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        uvloop = f"uvloop {version('uvloop')}"
    except Exception:
        uvloop = "no uvloop"
    return (
        f"{procstat.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {uvloop}"
    )


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description="Benchmark the OCM relay against baselines."
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, seconds in all")
    parser.add_argument(
        "--generator",
        choices=["auto", "c", "python"],
        default="auto",
        help="load generator: C (bench/loadgen.c) where it compiles, else Python",
    )
    parser.add_argument("--scenarios", help="comma-separated scenario names (default: all)")
    parser.add_argument("--targets", help="comma-separated relays (default: all)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--no-spin",
        action="store_true",
        help="let the C generator sleep between datagrams instead of busy-polling",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per scenario and relay; the median is reported (default: 3, smoke: 1)",
    )
    parser.add_argument(
        "--before-src",
        type=Path,
        help="the src/ of another checkout (e.g. a git worktree of the commit before a "
        "change): its server runs as the ocm-before relay, for the cost table",
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def _select(names: str | None, known: list[str], what: str) -> list[str]:
    if not names:
        return known
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise BenchError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    scenarios = smoke_scenarios() if args.smoke else SCENARIOS
    timing = SMOKE if args.smoke else FULL
    wanted_scenarios = _select(args.scenarios, [s.name for s in scenarios], "scenario")
    wanted_targets = _select(args.targets, list(CHAT_TARGETS), "relay")
    before: Path | None = args.before_src
    if before is None:
        if args.targets and "ocm-before" in wanted_targets:
            raise BenchError("the ocm-before relay needs --before-src")
        wanted_targets = [t for t in wanted_targets if t != "ocm-before"]
    before_label = describe_source(before) if before is not None else None
    generator = choose_generator(args.generator)
    cpus = procstat.cpu_count()
    where = machine()
    relay_cpu: int | None = None
    pinning = "no CPU pinning"
    if not args.no_pin and cpus >= 2 and procstat.pin(os.getpid(), cpus - 1):
        relay_cpu = 0
        pinning = f"relay pinned to CPU 0, generator and TCRP client to CPU {cpus - 1}"
    # Busy-polling needs a core of its own: only with the C generator on a pinned CPU.
    spin = generator.kind == "C" and relay_cpu is not None and not args.no_spin
    if spin:
        pinning += "; the generator busy-polls while measuring"
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": where,
        "generator": generator.kind,
        "pinning": pinning,
        "command": "python -m bench.run" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "smoke": args.smoke,
        "before": before_label,
    }
    rows: list[dict[str, Any]] = []
    retried = 0.0  # seconds spent measuring again
    with tempfile.TemporaryDirectory(prefix="ocm-bench-") as tmp:
        for scenario in scenarios:
            if scenario.name not in wanted_scenarios:
                continue
            targets = [
                t
                for t in TARGETS
                if t.name in wanted_targets
                and t.name in scenario.targets
                and (t.kind != "crelay" or generator.kind == "C")  # it comes with the C one
            ]
            runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
            # Rounds interleave the relays, so a burst of other load hits all of them.
            for round_number in range(args.repeat):
                for target in targets:
                    if target.kind == "crelay" and round_number:
                        continue  # the ceiling needs no median
                    for attempt in range(1 + (0 if args.smoke else RETRIES)):
                        print(f"bench: {scenario.name} on {target.label} ...", file=sys.stderr)
                        started = time.monotonic()
                        row = measure(
                            target, scenario, generator, timing, Path(tmp), relay_cpu, spin, before
                        )
                        row["seconds"] = round(time.monotonic() - started, 2)
                        row["attempts"] = attempt + 1
                        if attempt:
                            retried += row["seconds"]
                        quiet = row.get("background_cpu_pct", 0.0) <= BUSY_MACHINE
                        if quiet or retried >= RETRY_BUDGET:
                            break
                        print("bench: another job was running; measuring again", file=sys.stderr)
                    runs[target.name].append(row)
            rows += [median_run(scenario, runs[t.name]) for t in targets]
    meta["repeat"] = args.repeat
    meta["retried_seconds"] = round(retried, 1)
    return rows, meta


def median_run(scenario: Scenario, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by the scenario's headline figure, whole (its fields agree)."""
    key = {"rate": "p99_us", "idle": "rss_growth_mib"}.get(scenario.mode, "delivered_per_s")
    ranked = sorted(runs, key=lambda row: row.get(key) or 0.0)
    row = dict(ranked[len(ranked) // 2])
    row["runs"] = len(runs)
    row["range"] = [ranked[0].get(key), ranked[-1].get(key)]
    row["values"] = [run.get(key) for run in runs]  # in the order they ran
    row["throughput_values"] = [run.get("delivered_per_s") for run in runs]
    row["cpu_values"] = [run.get("server_us_per_datagram") for run in runs]
    return row


def write_reports(
    bench: str, report: str, document: dict[str, Any], markdown: Path | None, json_path: Path | None
) -> int:
    """Write a bench's report (Markdown) and its figures (``document``, as JSON) where
    ``--markdown`` and ``--json`` say, making their folders; 0, or 1 with one line on
    stderr naming ``bench`` when a file cannot be written."""
    outputs = ((markdown, report), (json_path, json.dumps(document, indent=1) + "\n"))
    try:
        for path, text in outputs:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"{bench}: cannot write the report: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if not 1 <= args.repeat <= 9:
        print("bench: --repeat must be 1-9", file=sys.stderr)
        return 2
    try:
        rows, meta = run(args)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    report = render(rows, meta)
    print(report)
    document = {"meta": meta, "rows": rows, "cost": cost(rows)}
    return write_reports("bench", report, document, args.markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
