"""The relay core's Python cost per chat line, before and after a change: no sockets.

    python -m bench.relay_cost --before-src /tmp/ocm-base/src
    python -m bench.relay_cost --smoke       # a fraction of a second per variant

End to end (bench/run.py), the relay spends most of its time in the kernel and a shared
machine moves throughput by 10 % or more from run to run, which hides a change of a few
hundred nanoseconds per message. This measures just that part: ``RelayCore.answer()``
for one room's chat lines, in a process of its own per variant, with the datagrams
made beforehand and nothing sent (the answer is the datagram and its addresses):

* ``before`` -- the relay of the ``--before-src`` checkout, version 1 members;
* ``v1`` -- this checkout's relay, version 1 members (a chat line also goes into the
  room's history);
* ``delivery`` -- this checkout's relay, delivery members sending DATA (message
  numbers, the duplicate check, CHAT, history).

Each run relays ``--warmup`` lines first (the history and the message-number log fill up
and then evict one entry per line, as on a busy server), then times ``--messages``
lines. The variants take turns, ``--rounds`` times; the report gives the fastest run of
each (the cost with the least interference) and the median. Only the standard library
is imported at the top: the ``before`` child imports the other checkout's ``ocm``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
VARIANTS = ("before", "v1", "delivery")
IP = "127.0.0.1"


# ---------------------------------------------------------------------------
# The child: one variant, timed in this process
# ---------------------------------------------------------------------------


def chat_text(number: int, size: int) -> bytes:
    head = f"M{number:016x}{0:08x}{number:08x}".encode("ascii")
    return head + b"x" * (size - len(head))


def measure_child(variant: str, members: int, text_size: int, warmup: int, count: int) -> float:
    """Nanoseconds per chat line through ``RelayCore.answer()``."""
    from ocm.server.registry import RoomRegistry
    from ocm.server.relay import RelayCore

    delivery = variant == "delivery"
    registry = RoomRegistry()
    relay = RelayCore(registry)
    options = {"delivery": True} if delivery else {}
    host = registry.create_room("bench", "host", None, IP, 0.0, **options)
    everyone = [host]
    for k in range(1, members):
        member, _ = registry.join_room("bench", f"member{k}", None, IP, 0.0, **options)
        everyone.append(member)
    for port, member in enumerate(everyone, start=40000):
        registry.touch(member, (IP, port), 0.0)
    token = host.token.encode("ascii")
    room = b"bench"
    if delivery:
        head = bytes((0, 1, len(token))) + token
        datagrams = [
            head + number.to_bytes(4, "big") + chat_text(number, text_size)
            for number in range(1, warmup + count + 1)
        ]
    else:
        head = bytes((len(room), len(token))) + room + token
        datagrams = [head + chat_text(n, text_size) for n in range(1, warmup + count + 1)]
    answer, source = relay.answer, (IP, 40000)
    for data in datagrams[:warmup]:
        answer(data, source, 1.0)
    timed = datagrams[warmup:]
    started = time.perf_counter_ns()
    for data in timed:
        answer(data, source, 1.0)
    elapsed = time.perf_counter_ns() - started
    # Sanity: the last line once more is relayed again by version 1 (a MESSAGE, Kind 1)
    # and confirmed by delivery (an ACCEPTED, Kind 7), and every line was relayed.
    again = answer(timed[-1], source, 1.0)
    assert isinstance(again, tuple) and again[0][0] == (7 if delivery else 1), again
    assert relay.relayed >= count, relay.relayed
    return elapsed / count


def run_child(
    variant: str, members: int, text_size: int, warmup: int, count: int, before: Path | None
) -> float:
    command = [sys.executable, "-m", "bench.relay_cost", "--child", variant]
    command += ["--members", str(members), "--text-size", str(text_size)]
    command += ["--warmup", str(warmup), "--messages", str(count)]
    env = None
    if variant == "before":
        from bench.run import source_env

        assert before is not None
        env = source_env(before)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=BENCH.parent, env=env
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"relay_cost: the {variant} child failed: {last}")
    return float(json.loads(result.stdout)["ns_per_message"])


# ---------------------------------------------------------------------------
# The parent: the variants in turns, the report
# ---------------------------------------------------------------------------


def measure_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    variants = [v for v in VARIANTS if v != "before" or args.before_src is not None]
    rows = []
    for text_size in args.text_sizes:
        runs: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                runs[variant].append(
                    run_child(
                        variant,
                        args.members,
                        text_size,
                        args.warmup,
                        args.messages,
                        args.before_src,
                    )
                )
        row: dict[str, Any] = {"members": args.members, "text_size": text_size, "runs": runs}
        for variant in variants:
            row[f"{variant}_best_ns"] = min(runs[variant])
            row[f"{variant}_median_ns"] = statistics.median(runs[variant])
        rows.append(row)
    return rows


def _ns(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _delta(row: dict[str, Any], variant: str) -> str:
    now, then = row.get(f"{variant}_best_ns"), row.get("before_best_ns")
    if now is None or then is None:
        return "-"
    return f"{now - then:+,.0f} ({(now - then) / then:+.0%})"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"RelayCore.answer() per chat line, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; before: {meta['before'] or 'not run'}; "
        f"{meta['rounds']} rounds of {meta['messages']:,} lines each after "
        f"{meta['warmup']:,} to warm up; ns per line, fastest run (median in brackets).",
        "",
        "| room | text bytes | before | v1 now | delivery now | v1 now - before "
        "| delivery now - before |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cells = [
            f"{_ns(row.get(f'{v}_best_ns'))} ({_ns(row.get(f'{v}_median_ns'))})"
            if f"{v}_best_ns" in row
            else "-"
            for v in VARIANTS
        ]
        lines.append(
            f"| {row['members']} members | {row['text_size']:,} | {' | '.join(cells)} "
            f"| {_delta(row, 'v1')} | {_delta(row, 'delivery')} |"
        )
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(not 33 <= size <= 4000 for size in sizes):
        raise argparse.ArgumentTypeError("text sizes from 33 to 4000 bytes, comma-separated")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_cost", description="RelayCore.answer() per chat line."
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny counts")
    parser.add_argument("--before-src", type=Path, help="the src/ of the before checkout")
    parser.add_argument("--members", type=int, default=10, help="room size (default 10)")
    parser.add_argument("--text-sizes", type=_sizes, default=[100, 3000])
    parser.add_argument("--text-size", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, help="timed lines per run (200,000)")
    parser.add_argument("--warmup", type=int, help="lines before timing (5,000)")
    parser.add_argument("--rounds", type=int, help="runs per variant, taking turns (7)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    smoke = args.smoke
    for key, full, tiny in (("messages", 200_000, 2000), ("warmup", 5000, 2000), ("rounds", 7, 1)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if smoke else full)
    if not (2 <= args.members <= 1000 and 1 <= args.messages <= 10**7 and 1 <= args.rounds <= 50):
        parser.error("--members 2-1000, --messages 1-10000000, --rounds 1-50")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        ns = measure_child(args.child, args.members, args.text_size, args.warmup, args.messages)
        print(json.dumps({"ns_per_message": ns}))
        return 0
    from bench.run import BenchError, describe_source, machine

    try:
        before = describe_source(args.before_src) if args.before_src else None
        rows = measure_all(args)
    except (BenchError, RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"relay_cost: {error}", file=sys.stderr)
        return 1
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "command": "python -m bench.relay_cost" + "".join(f" {a}" for a in sys.argv[1:]),
        "before": before,
        "rounds": args.rounds,
        "messages": args.messages,
        "warmup": args.warmup,
    }
    report = render(rows, meta)
    print(report)
    try:
        if args.markdown:
            args.markdown.write_text(report, encoding="utf-8")
        if args.json:
            text = json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
            args.json.write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"relay_cost: cannot write the report: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
