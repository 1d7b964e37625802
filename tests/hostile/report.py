"""Run the hostile-client suite and write its table into docs/security.md.

    python -m tests.hostile.report            # run the suite, then update the doc
    python -m tests.hostile.report --check    # run it; fail if the doc's table is stale
    python -m tests.hostile.report --from build/hostile/results.json   # render only

It runs ``pytest -m hostile tests/hostile`` with OCM_HOSTILE_RESULTS pointing at a JSON
file, so the table comes from the same run as the assertions; if any test fails, the
doc is left as it is. The table goes between the ``hostile-table`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
RESULTS = ROOT / "build" / "hostile" / "results.json"
START = "<!-- hostile-table:start -->"
END = "<!-- hostile-table:end -->"
COMMAND = "python -m tests.hostile.report"


def run_suite(results: Path) -> int:
    env = {**os.environ, "OCM_HOSTILE_RESULTS": str(results)}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "hostile", "tests/hostile"]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def render(data: dict[str, Any], when: str) -> str:
    limits = data["limits"]
    room = data["room"]
    lines = [
        "| # | Attack | Tried | What happened | Time |",
        "|---|---|---|---|---|",
    ]
    for attack in data["attacks"]:
        lines.append(
            f"| {attack['number']} | {_cell(attack['name'])} | {_cell(attack['tried'])} | "
            f"{_cell(attack['outcome'])} | {_seconds(attack['seconds'])} |"
        )
    sent = room["total_sent"]
    per_member = ", ".join(f"{name} {count}" for name, count in room["sent"].items())
    received = set(room["received"].values())
    latency = room.get("latency_ms") or {}
    timing = (
        f" Each line reached the others {latency['median']:g} ms after it was sent (median), "
        f"{latency['p99']:g} ms (99th percentile), {latency['max']:g} ms at worst."
        if latency
        else ""
    )
    lines += [
        "",
        f"- **The room kept talking.** Meanwhile alice, bob and carol each said a numbered "
        f"line every 20 ms in their password-protected room: {sent:,} lines ({per_member}); "
        f"each of the three received {', '.join(f'{n:,}' for n in sorted(received))} of "
        f"them, in the order sent, with consecutive Seq {room['first_seq']}-"
        f"{room['last_seq']}; problems found: {len(room['problems'])}.{timing}",
    ]
    start, end = data.get("memory_start"), data.get("memory_end")
    if start and end:
        lines.append(
            f"- **Memory.** The server's resident memory was {_mib(start['VmRSS'])} once the "
            f"room was seated and peaked at {_mib(end['VmHWM'])} (VmHWM); the suite's bound "
            f"is {data['memory_bound_mib']} MiB."
        )
    drops = data.get("udp_drops")
    lines.append(
        f"- **Still serving.** After the attacks the server was alive and a new room "
        f"echoed a line ({'yes' if data['serves_after'] else 'NO'}); its log had "
        f"{len(data['bad_log_lines'])} error lines; the kernel dropped "
        f"{'an unknown number of' if drops is None else drops} datagrams at its UDP "
        f"socket; on SIGTERM it exited {data['exit_code']}."
    )
    flags = (
        f"--idle-timeout {limits['idle_timeout']:g} --message-timeout "
        f"{limits['message_timeout']:g} --tcp-idle-timeout {limits['tcp_idle_timeout']:g}"
    )
    lines.append(
        f"- **Run.** {when}, {data['platform']}; whole suite {data['seconds']:.1f} s; "
        f"seed {data['seed']}; server flags: defaults except `{flags}` (shortened so the "
        f"suite is fast). Attacks 1-6 and 8-12 run at the same time (the floods take "
        f"turns) and 7 last, so their times overlap. Reproduce with `{COMMAND}`."
    )
    return "\n".join(lines)


def splice(document: str, table: str) -> str:
    if START not in document or END not in document:
        raise SystemExit(f"{DOC.relative_to(ROOT)} has no {START} ... {END} markers")
    head, rest = document.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile.report")
    parser.add_argument("--from", dest="source", type=Path, help="render this results file")
    parser.add_argument(
        "--check", action="store_true", help="do not write; fail if the table differs"
    )
    args = parser.parse_args(argv)
    source = args.source
    if source is None:
        source = RESULTS
        source.unlink(missing_ok=True)
        if run_suite(source) != 0 or not source.exists():
            print("the hostile suite failed: docs/security.md left as it is", file=sys.stderr)
            return 1
    data = json.loads(source.read_text(encoding="utf-8"))
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    document = DOC.read_text(encoding="utf-8")
    updated = splice(document, render(data, when))
    if args.check:
        # Counts and times vary from run to run; the check is that the doc has a table
        # with every attack of this suite in it.
        numbers = {a["number"] for a in data["attacks"]}
        missing = [n for n in sorted(numbers) if f"\n| {n} | " not in document]
        if missing:
            print(f"docs/security.md lacks attacks {missing}: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(updated, encoding="utf-8")
    print(f"wrote the table of {len(data['attacks'])} attacks into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
