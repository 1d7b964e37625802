"""Rooms across server nodes on one Redis (issue 15): what the cluster path costs.

    python -m bench.cluster                                  # about 90 s on 2 cores
    python -m bench.cluster --nodes 1,2,3 --duration 5 --json out.json --markdown out.md
    python -m bench.cluster --smoke                          # seconds (the test suite's run)

Four set-ups, each started fresh: one ``ocm server`` on its own (the embedded backend,
no Redis: the baseline), then 1, 2 and 3 nodes (``--nodes``) sharing one redis-server
(no persistence, tests/redis_kit.py) through ``--redis``. Every node is a real
``ocm server`` process from this checkout's src/, with ``--allow-plaintext`` and a
``--data-dir`` of its own (``bench.run.server_flags``), and ``--max-rooms-per-ip``
raised: every run makes new rooms, all from 127.0.0.1.

The load: ``--rooms`` rooms of ``--per-room`` version 1 members (plaintext), spread
round-robin over the nodes (member k of room r is on node (r + k) mod N, so every room
has members on every node it can), created and joined over TCRP on their own node
(``bench.run._admit_all``). The UDP side is bench/pygen.py's generator, run in this
process, with each member's socket connected to its own node's UDP port: every member
heartbeats (its address is then known), the rooms are checked end to end, then every
member talks, at a fixed offered rate of chat lines over all senders; each line carries
its send time (``time.monotonic_ns()``, one process, one clock), so the receivers time
it, and counts as delivered when its send time was in the measured window. A line is
delivered to every member of its room, the sender included (version 1 echoes it).

Measured, per set-up:

* **Latency at a fixed rate**: ``--rate`` lines/s (the same for every set-up) for
  ``--duration`` seconds: p50 and p99 of send-to-receive time, deliveries/s, loss.
* **The most it sustains**: the offered rate stepped up (``--steps``, ``--step-duration``
  seconds each, new rooms each step) until deliveries fall below 98 % of what was sent
  or p99 passes 50 ms; the last step that held is the figure.
* **Redis's own round trip**: 500 PINGs (``Plan.rtt_samples``) with redis-py, one at a time, with
  the nodes up and idle; and, from Redis's INFO commandstats after the fixed-rate run,
  the calls and mean time inside Redis of the Lua script (EVALSHA) each line is.

The CPU of every node, of Redis and of this process (the generator) is reported, in %
of one core over each run, and the machine's other load (all CPU time minus theirs:
other jobs; shown, not measured again, so read a row with much of it with care). The
caveat, which the report repeats: on a 2-core machine the nodes, Redis and the generator
all share the same two cores, so more nodes cannot add throughput; the figures show what
the cluster path costs (a Redis round trip and a fan-out through every node per line),
not scale-out, which needs a core per node. No process is pinned (five processes, two
cores). The generator is Python (bench/pygen.py): bench/loadgen.c drives one UDP port
only. Everything is bounded: every process is stopped in ``finally`` (SIGTERM, then
SIGKILL), every run has a deadline, and the steps stop when a set-up's time budget is
spent.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from tests.redis_kit import RedisServer

from bench import procstat, pygen
from bench.run import (
    LISTENING,
    START_TIMEOUT,
    BenchError,
    Member,
    Population,
    Relay,
    _admit_all,
    machine,
    server_flags,
    source_env,
    write_members,
    write_reports,
)
from bench.tunnel import _num, _source
from ocm.wire import CreateRoom, JoinRoom, encode_request

__all__ = ["Plan", "main", "measure"]

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
# A step holds when at least this share of the deliveries arrived, with p99 under this.
MIN_DELIVERED_PCT = 98.0
MAX_P99_MS = 50.0
TEXT_SIZE = 100
HEARTBEAT = 20.0  # the client's cadence (idle timeout / 3): realistic heartbeats
# A node listens before it has reached Redis, and refuses rooms (server_full) until then.
ON_REDIS = re.compile(r"cluster node \S+ on redis at")
PROBLEM = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Exception")
CAVEAT = (
    "All nodes, Redis and the generator share the machine's {cpus} cores: more nodes "
    "cannot add throughput here. The figures show what the cluster path costs (a Redis "
    "round trip and a fan-out through every node per line), not scale-out, which needs "
    "a core per node."
)


@dataclass(frozen=True)
class Plan:
    nodes: tuple[int, ...] = (1, 2, 3)
    rooms: int = 20
    per_room: int = 5
    rate: float = 1000.0  # lines/s for the latency run, the same for every set-up
    duration: float = 5.0  # seconds measured at --rate
    steps: tuple[float, ...] = (2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 12000.0, 16000.0, 24000.0)
    step_duration: float = 2.0
    step_budget: float = 35.0  # seconds of steps per set-up, at most
    warmup: float = 0.5
    drain: float = 1.0
    rtt_samples: int = 500
    embedded: bool = True  # the 1-node run without Redis


FULL = Plan()
SMOKE = Plan(
    nodes=(2,),
    rooms=2,
    per_room=3,
    rate=200.0,
    duration=0.2,
    steps=(400.0,),
    step_duration=0.2,
    warmup=0.1,
    drain=0.2,
    rtt_samples=20,
)


# ---------------------------------------------------------------------------
# Processes: redis-server and the nodes
# ---------------------------------------------------------------------------


class Node(Relay):
    """One ``ocm server`` process of this checkout, with ``--redis url`` or on its own.

    A :class:`bench.run.Relay` with a command of its own (``stop()`` is Relay's: SIGTERM,
    then SIGKILL after 10 s), started without waiting, so that the nodes' imports overlap.
    """

    def __init__(self, index: int, redis_url: str | None, logs: Path) -> None:
        self.index = index
        self.log_path = logs / f"node{index}-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "ocm", "server", "--host", HOST, "--port", "0"]
        command += server_flags(None, logs / f"data{index}")
        command += ["--max-rooms-per-ip", "10000"]
        if redis_url is not None:
            command += ["--redis", redis_url]
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=source_env(SOURCE),
        )
        self.pid = self.process.pid
        self.clustered = redis_url is not None
        self.tcp_port = self.udp_port = 0
        self.loop = "-"

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log()
            found = LISTENING.search(text)
            if found and (not self.clustered or ON_REDIS.search(text)):
                self.tcp_port, self.udp_port, self.loop = int(found[1]), int(found[2]), found[3]
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        last = (self.log().strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"node {self.index} did not start (or reach Redis): {last}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def nodes_running(count: int, redis_url: str | None, logs: Path) -> Iterator[list[Node]]:
    """``count`` nodes, started together (their imports overlap), all stopped at the end."""
    nodes: list[Node] = []
    try:
        for index in range(count):
            nodes.append(Node(index, redis_url, logs))
        for node in nodes:
            node.wait_listening()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def redis_pid(url: str) -> int | None:
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        info: dict[str, Any] = client.info("server")
    pid = info.get("process_id")
    return int(pid) if pid else None


def redis_rtt(url: str, samples: int) -> dict[str, Any]:
    """PING round trips with redis-py, one at a time: what one call to Redis costs."""
    times: list[int] = []
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        for _ in range(20):  # connect, warm up
            client.ping()
        for _ in range(samples):
            started = time.perf_counter_ns()
            client.ping()
            times.append(time.perf_counter_ns() - started)
    times.sort()
    return {
        "samples": len(times),
        "p50_ms": times[len(times) // 2] / 1e6,
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))] / 1e6,
        "max_ms": times[-1] / 1e6,
    }


def script_stats(url: str) -> dict[str, Any]:
    """Calls and mean µs inside Redis of each Lua script command since the last reset."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        stats: dict[str, Any] = client.info("commandstats")
        client.config_resetstat()
    out = {}
    for name in ("evalsha", "eval", "publish", "xread", "xrange"):
        entry = stats.get(f"cmdstat_{name}")
        if entry:
            out[name] = {"calls": entry.get("calls"), "usec_per_call": entry.get("usec_per_call")}
    return out


# ---------------------------------------------------------------------------
# Load: rooms over the nodes, the generator on every node's port
# ---------------------------------------------------------------------------


class SpreadGenerator(pygen.Generator):
    """bench/pygen.py's generator with each member on its own node's UDP port."""

    def __init__(self, args: argparse.Namespace, ports: list[int]) -> None:
        super().__init__(args)
        self.ports = ports

    def load(self) -> None:
        super().load()
        for member, port in zip(self.members, self.ports, strict=True):
            member.sock.connect((HOST, port))  # a UDP socket may be connected again


async def populate(nodes: list[Node], plan: Plan, tag: str) -> tuple[Population, list[int]]:
    """Create and join the rooms, member k of room r on node (r + k) mod N; every member
    talks. Returns the members and each one's node UDP port, in the same order."""
    count = len(nodes)
    names = [f"{tag}-{r}" for r in range(plan.rooms)]
    places = [[(r, k) for r in range(plan.rooms)] for k in range(plan.per_room)]
    members: list[Member] = []
    ports: list[int] = []
    async with asyncio.timeout(60):
        for k, wave in enumerate(places):  # the hosts first: a join needs its room
            by_node: dict[int, list[int]] = {}
            for r, _ in wave:
                by_node.setdefault((r + k) % count, []).append(r)

            async def admit(node: int, rooms: list[int], k: int = k) -> list[tuple[int, Any]]:
                requests = [
                    (
                        HOST,
                        encode_request(
                            CreateRoom(names[r], "m0") if k == 0 else JoinRoom(names[r], f"m{k}")
                        ),
                    )
                    for r in rooms
                ]
                admissions = await _admit_all(nodes[node].tcp_port, requests)
                return list(zip(rooms, admissions, strict=True))

            answers = await asyncio.gather(*(admit(n, rs) for n, rs in by_node.items()))
            for node, answer in zip(by_node, answers, strict=True):
                for r, admission in answer:
                    members.append(Member(r, names[r], admission.token, True, HOST))
                    ports.append(nodes[node].udp_port)
    return Population(members), ports


def run_load(
    nodes: list[Node],
    plan: Plan,
    rate: float,
    duration: float,
    tag: str,
    workdir: Path,
    extra_pids: dict[str, int],
) -> dict[str, Any]:
    """One run at ``rate`` lines/s over fresh rooms: pygen's report plus every process's
    CPU (% of one core, over the whole run) and the lines relayed per second."""
    population, ports = asyncio.run(populate(nodes, plan, tag))
    path = workdir / f"members-{tag}.txt"
    write_members(population, path)
    args = pygen.parse_args(
        [
            "run",
            *("--server", str(ports[0]), "--members", str(path), "--mode", "rate"),
            *("--rate", str(rate), "--text-size", str(TEXT_SIZE), "--warmup", str(plan.warmup)),
            *("--duration", str(duration), "--drain", str(plan.drain)),
            *("--heartbeat", str(HEARTBEAT)),
        ]
    )
    pids = {f"node{n.index}": n.pid for n in nodes} | extra_pids
    generator = SpreadGenerator(args, ports)
    cpu0 = {name: procstat.cpu_seconds(pid) for name, pid in pids.items()}
    busy0, own0 = procstat.busy_seconds(), time.process_time()
    started = time.monotonic()
    try:
        report: dict[str, Any] = generator.run()
    finally:
        generator.close()
    elapsed = time.monotonic() - started
    busy1, own = procstat.busy_seconds(), time.process_time() - own0
    cpu = {}
    for name, pid in pids.items():
        before, after = cpu0[name], procstat.cpu_seconds(pid)
        cpu[name] = None if before is None or after is None else (after - before) / elapsed * 100
    report.pop("server_cpu_pct", None)  # pygen's, of one pid: replaced by the figures below
    report["rate"] = rate
    report["cpu_pct"] = cpu
    report["other_load_pct"] = None
    if busy0 is not None and busy1 is not None and None not in cpu.values():
        # What else ran meanwhile (other jobs on the machine), in % of one CPU.
        ours = sum(v for v in cpu.values() if v) + own / elapsed * 100
        report["other_load_pct"] = max(0.0, (busy1 - busy0) / elapsed * 100 - ours)
    report["nodes_cpu_pct"] = sum(v for k, v in cpu.items() if k.startswith("node") and v)
    report["lines_per_s"] = report["delivered_per_s"] / plan.per_room
    report["delivered_pct"] = 100.0 - report["loss_pct"]
    report["held"] = held(report)
    return report


def held(row: dict[str, Any]) -> bool:
    return bool(
        row["unregistered"] == 0
        and row["delivered_pct"] >= MIN_DELIVERED_PCT
        and 0 <= row["p99_us"] <= MAX_P99_MS * 1000
    )


def total_cpu(run: dict[str, Any]) -> float:
    servers = sum(v for v in run["cpu_pct"].values() if v)
    return float(servers + run["generator_cpu_pct"])


def problems_in(nodes: list[Node]) -> list[str]:
    """Warnings, errors and tracebacks in the nodes' logs (at most 20 lines)."""
    lines = []
    for node in nodes:
        lines += [
            f"node{node.index}: {line}" for line in node.log().splitlines() if PROBLEM.search(line)
        ]
    return lines[:20]


def measure_setup(
    label: str, count: int, with_redis: bool, plan: Plan, logs: Path
) -> dict[str, Any]:
    """One set-up: its own Redis (when clustered) and nodes; latency, RTT, steps."""
    print(f"cluster: {label} ...", file=sys.stderr)
    row: dict[str, Any] = {"setup": label, "nodes": count, "redis": with_redis}
    with ExitStack() as stack:
        url: str | None = None
        extra: dict[str, int] = {}
        if with_redis:
            url = stack.enter_context(RedisServer()).url
            pid = redis_pid(url)
            if pid is not None:
                extra["redis"] = pid
        nodes = stack.enter_context(nodes_running(count, url, logs))
        row["loop"] = nodes[0].loop
        if url is not None:
            row["redis_rtt"] = redis_rtt(url, plan.rtt_samples)
            script_stats(url)  # reset: the counts below are the fixed-rate run's
        tag = label.replace(" ", "")
        row["latency"] = run_load(nodes, plan, plan.rate, plan.duration, f"{tag}-lat", logs, extra)
        if url is not None:
            row["redis_commands"] = script_stats(url)
        steps: list[dict[str, Any]] = []
        budget = time.monotonic() + plan.step_budget
        for step, rate in enumerate(plan.steps):
            if time.monotonic() > budget:
                row["steps_cut"] = f"time budget spent before {rate:.0f} lines/s"
                break
            print(f"cluster: {label}, {rate:,.0f} lines/s ...", file=sys.stderr)
            result = run_load(nodes, plan, rate, plan.step_duration, f"{tag}-s{step}", logs, extra)
            steps.append(result)
            if not result["held"]:
                break
        row["steps"] = steps
        sustained = [s for s in steps if s["held"]]
        if row["latency"]["held"]:
            sustained.insert(0, row["latency"])
        best = max(sustained, key=lambda s: s["delivered_per_s"]) if sustained else None
        row["max_held_rate"] = None if best is None else best["rate"]
        row["max_held_lines_per_s"] = None if best is None else best["lines_per_s"]
        row["max_held_delivered_per_s"] = None if best is None else best["delivered_per_s"]
        row["max_held_p99_ms"] = None if best is None else best["p99_us"] / 1000
        # Nodes, Redis and the generator together, in % of one core: 200 is the machine.
        row["max_held_cpu_pct"] = None if best is None else total_cpu(best)
        row["max_held_other_load_pct"] = None if best is None else best["other_load_pct"]
        row["all_held"] = bool(steps) and all(s["held"] for s in steps)
        row["log_problems"] = problems_in(nodes)
    return row


def measure(plan: Plan, logs: Path) -> list[dict[str, Any]]:
    setups: list[tuple[str, int, bool]] = []
    if plan.embedded:
        setups.append(("embedded, 1 node", 1, False))
    setups += [(f"redis, {n} node{'s' if n > 1 else ''}", n, True) for n in plan.nodes]
    return [measure_setup(label, n, r, plan, logs) for label, n, r in setups]


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def _ms(us: Any) -> str:
    return "-" if us is None or us < 0 else f"{us / 1000:.2f}"


def redis_added_ms(rows: list[dict[str, Any]]) -> float | None:
    """p50 at the fixed rate of 1 node with Redis minus that of the embedded node, in ms."""
    embedded = next((r for r in rows if not r["redis"]), None)
    one = next((r for r in rows if r["redis"] and r["nodes"] == 1), None)
    if embedded is None or one is None:
        return None
    return float(one["latency"]["p50_us"] - embedded["latency"]["p50_us"]) / 1000


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    plan = meta["plan"]
    lines = [
        f"Rooms across nodes on one Redis, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; server: {meta['server']}, {meta['loop']} loop; "
        f"{plan['rooms']} rooms of {plan['per_room']} version 1 members spread round-robin "
        f"over the nodes, every member talking, {TEXT_SIZE}-byte texts; load generator: "
        "Python (bench/pygen.py) in the bench process; no CPU pinning.",
        "",
        f"Latency at {plan['rate']:,.0f} lines/s offered ({plan['rate'] * plan['per_room']:,.0f}"
        f" deliveries/s), {plan['duration']:g} s; the most sustained: the highest offered "
        f"rate (stepped, {plan['step_duration']:g} s each) with at least {MIN_DELIVERED_PCT:g} % "
        f"delivered and p99 under {MAX_P99_MS:g} ms. CPU in % of one core.",
        "",
        "| set-up | p50 ms | p99 ms | delivered % | nodes CPU % | Redis CPU % "
        "| generator CPU % | max sustained lines/s | deliveries/s there | p99 ms there "
        "| all CPU % there | other load % (fixed rate, there) | first step that failed |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        lat = row["latency"]
        failed = next((s for s in row["steps"] if not s["held"]), None)
        failure = "-"
        if failed is not None:
            failure = (
                f"{failed['rate']:,.0f}: {failed['delivered_pct']:.1f} % delivered, "
                f"p99 {_ms(failed['p99_us'])} ms"
            )
        elif row.get("steps_cut"):
            failure = f"none ({row['steps_cut']})"
        elif row["steps"]:
            failure = f"none up to the top step, {row['steps'][-1]['rate']:,.0f}"
        lines.append(
            f"| {row['setup']} | {_ms(lat['p50_us'])} | {_ms(lat['p99_us'])} "
            f"| {lat['delivered_pct']:.2f} | {_num(lat['nodes_cpu_pct'])} "
            f"| {_num(lat['cpu_pct'].get('redis'))} | {_num(lat['generator_cpu_pct'])} "
            f"| {_num(row['max_held_lines_per_s'])} | {_num(row['max_held_delivered_per_s'])} "
            f"| {_num(row['max_held_p99_ms'], 2)} | {_num(row['max_held_cpu_pct'])} "
            f"| {_num(lat['other_load_pct'])}, {_num(row['max_held_other_load_pct'])} "
            f"| {failure} |"
        )
    clustered = [r for r in rows if r.get("redis_rtt")]
    if clustered:
        lines += [
            "",
            "Redis itself: PING round trips from redis-py with the nodes idle, and the Lua "
            "script each line is (EVALSHA) as Redis timed it during the fixed-rate run.",
            "",
            "| set-up | PING p50 ms | PING p99 ms | EVALSHA calls | µs inside Redis per call |",
            "|---|--:|--:|--:|--:|",
        ]
        for row in clustered:
            rtt, script = row["redis_rtt"], row.get("redis_commands", {}).get("evalsha", {})
            lines.append(
                f"| {row['setup']} | {rtt['p50_ms']:.3f} | {rtt['p99_ms']:.3f} "
                f"| {_num(script.get('calls'))} | {_num(script.get('usec_per_call'), 2)} |"
            )
    added = redis_added_ms(rows)
    if added is not None:
        lines += [
            "",
            f"Redis adds {added:.2f} ms to the median line at {plan['rate']:,.0f} "
            "lines/s (1 node with --redis against 1 node without).",
        ]
    lines += ["", "Caveat: " + CAVEAT.format(cpus=meta["cpus"])]
    problems = [f"{r['setup']}: {p}" for r in rows for p in r["log_problems"]]
    for row in rows:
        for run in [row["latency"], *row["steps"]]:
            for key in ("unregistered", "errors", "closed", "malformed", "send_failures"):
                if run.get(key):
                    problems.append(f"{row['setup']} at {run['rate']:,.0f}/s: {key} = {run[key]}")
    lines += ["", "Problems: " + ("; ".join(problems) if problems else "none seen")]
    return "\n".join(lines) + "\n"


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of node counts: {text}") from None
    if not values or any(not 1 <= v <= 8 for v in values):
        raise argparse.ArgumentTypeError("node counts are 1-8")
    return values


def _rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description="Benchmark rooms across OCM server nodes sharing one Redis.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, seconds in all")
    parser.add_argument("--nodes", type=_counts, help="node counts with Redis (default: 1,2,3)")
    parser.add_argument("--no-embedded", action="store_true", help="skip the no-Redis baseline")
    parser.add_argument("--rooms", type=int, help="rooms per run (default: 20)")
    parser.add_argument("--per-room", type=int, help="members per room (default: 5)")
    parser.add_argument("--rate", type=float, help="lines/s for the latency run (default: 1000)")
    parser.add_argument("--duration", type=float, help="seconds at --rate (default: 5)")
    parser.add_argument("--steps", type=_rates, help="rates to step through, lines/s")
    parser.add_argument("--step-duration", type=float, help="seconds per step (default: 2)")
    parser.add_argument("--json", "--out", dest="json", type=Path, help="write the JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = SMOKE if args.smoke else FULL
    given = {
        "nodes": args.nodes,
        "rooms": args.rooms,
        "per_room": args.per_room,
        "rate": args.rate,
        "duration": args.duration,
        "steps": args.steps,
        "step_duration": args.step_duration,
    }
    plan = replace(plan, **{k: v for k, v in given.items() if v is not None})
    if args.no_embedded:
        plan = replace(plan, embedded=False)
    if not (
        1 <= plan.rooms <= 500
        and 2 <= plan.per_room <= 30
        and 0 < plan.rate <= 100_000
        and 0 < plan.duration <= 60
        and 0 < plan.step_duration <= 60
        and all(0 < s <= 100_000 for s in plan.steps)
    ):
        raise BenchError(
            "--rooms 1-500, --per-room 2-30, --rate and --steps 1-100000, "
            "--duration and --step-duration 0-60"
        )
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        plan = make_plan(args)
        with tempfile.TemporaryDirectory(prefix="ocm-cluster-") as tmp:
            rows = measure(plan, Path(tmp))
    except (BenchError, OSError, RuntimeError, redis.RedisError) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.cluster" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": machine(),
        "cpus": procstat.cpu_count(),
        "server": _source(None),
        "loop": rows[0]["loop"] if rows else "-",
        "plan": plan.__dict__,
        "smoke": args.smoke,
        "seconds": round(time.monotonic() - started, 1),
        "caveat": CAVEAT.format(cpus=procstat.cpu_count()),
        "generator": "Python (bench/pygen.py), in the bench process",
    }
    meta["redis_added_p50_ms"] = redis_added_ms(rows)
    report = render(rows, meta)
    print(report)
    print(f"cluster: {meta['seconds']:.0f} s in all", file=sys.stderr)
    document = {"meta": meta, "rows": rows, "median_rtt_ms": _median_rtt(rows)}
    return write_reports("cluster", report, document, args.markdown, args.json)


def _median_rtt(rows: list[dict[str, Any]]) -> float | None:
    values = [r["redis_rtt"]["p50_ms"] for r in rows if r.get("redis_rtt")]
    return statistics.median(values) if values else None


if __name__ == "__main__":
    sys.exit(main())
