"""Delivery on a lossy network: what a room's members' applications get, and when.

    python -m bench.lossy                    # the full grid: about 4 minutes
    python -m bench.lossy --smoke            # seconds (the test suite's run)
    python -m bench.lossy --loss 0.2 --modes delivery --messages 400 --json out.json
    python -m bench.lossy --quiet            # quiet members: 60 s at 20% loss, idle 3 s
    python -m bench.lossy --quiet --smoke    # the same in seconds

One real ``ocm server`` process on 127.0.0.1 (started as bench/run.py starts it), and for
each point of the grid a seeded :class:`~tests.faults.FaultProxy` in front of it (loss
``p`` both ways, plus duplication and reordering) and a new room of ``--members``
members made with the public client library (``ocm.client.ChatClient``), all through the
proxy. Each member sends ``--messages`` messages at ``--rate`` a second (paced on an
absolute schedule, the members staggered), each text carrying its sender, its number and
its send time (``time.monotonic_ns()``; one process, one clock), and reads its events.

Per point it reports, over every member's application (a member's own messages count:
the server's copy is shown to it too):

* the delivered-to-application rate: distinct messages a member got / messages sent
  to it (every message of the room), and the worst member's;
* duplicates: a message handed to one application twice (exactly once means 0);
* order: whether every member got the messages they have in common in the same order
  (and in increasing Seq order);
* latency from ``send()`` to the receiving application's ``async for``: p50, p99, max;
* what the client reported (Gap, Undelivered, ErrorReply, Overflow, an early Closed)
  and what crossed the proxy (datagrams each way per message, loss, duplicates, reorders).

Modes: ``delivery`` (the client's default: the delivery extension of docs/protocol.md,
section 3) and ``v1`` (``delivery=False``: a version 1 member). A point waits after the
last send until every member has every message, or at most ``--drain`` seconds (v1: also
until nothing has arrived for a second, since it repairs nothing). Everything is bounded:
every wait has a deadline and the server has a timeout.

``--quiet`` is issue 11's point 6 instead: does loss evict members that say nothing? The
server runs with ``--idle-timeout 3`` (``--idle-timeout``; otherwise its defaults), an
observer creates the room directly (not through the proxy, so that its own fate does not
close the room and it hears every NOTICE), and ``--members`` (15) delivery members join
through the proxy at 20% loss, 5% duplication and 10% reordering both ways, then say
nothing for ``--duration`` seconds (60). It reports the members dropped (a Closed to the
member, or a "timed out" NOTICE to anyone), those that moved to TCP (PathChanged) and the
datagrams each member sent up (PINGs: it sends nothing else) per minute, from the proxy's
counters. docs/protocol.md, section 3 ("Why 20% loss does not evict a quiet member") has
the arithmetic it checks.

The proxy is the test kit's (tests/faults.py): run this from the repository root, where
``tests`` is importable (bench is development tooling, like the test kit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.run import HOST, BenchError, Generator, Target, machine, running, write_reports
from ocm.client import (
    ChatClient,
    Closed,
    ErrorReply,
    Gap,
    Message,
    Notice,
    Overflow,
    PathChanged,
    Undelivered,
)
from ocm.errors import ConnectionLost
from ocm.wire.texts import Presence, parse_notice

try:
    from tests.faults import PLAINTEXT, FaultProxy
except ImportError as error:  # pragma: no cover - run from elsewhere than the repository root
    raise SystemExit(f"lossy: {error}: run this from the repository root") from None

__all__ = ["Plan", "Point", "QuietPlan", "main", "run_point", "run_quiet"]

SERVER = Target("ocm", "ocm", "OCM")
NO_GENERATOR = Generator("none", ())  # the server needs no load generator
MODES = ("delivery", "v1")
CLOSE_TIMEOUT = 10.0  # leaving, for every member together


@dataclass(frozen=True)
class Point:
    mode: str  # "delivery" or "v1"
    loss: float  # each way
    duplicate: float = 0.0
    reorder: float = 0.0

    @property
    def delivery(self) -> bool:
        return self.mode == "delivery"

    @property
    def name(self) -> str:
        if not (self.loss or self.duplicate or self.reorder):
            return "no faults"
        return f"loss {self.loss:.0%}, dup {self.duplicate:.0%}, reorder {self.reorder:.0%}"


@dataclass(frozen=True)
class Plan:
    members: int = 4
    messages: int = 200  # per member
    rate: float = 10.0  # messages a second, per member
    drain: float = 10.0  # seconds after the last send, at most
    seed: int = 11
    reorder_min: float = 0.005
    reorder_max: float = 0.060
    settle: float = 0.3  # seconds between the last join and the first message
    quiet: float = 1.0  # v1: a point ends once nothing arrived for this long
    linger: float = 1.0  # the client's close() option: the wait for our last copies


FULL = Plan()
SMOKE = Plan(members=3, messages=8, rate=40.0, drain=1.5, settle=0.1, quiet=0.3, linger=0.2)
SMOKE_LOSS = 0.10


# ---------------------------------------------------------------------------
# One member
# ---------------------------------------------------------------------------


@dataclass
class Inbox:
    """What one member's application got."""

    order: list[tuple[int, int]]  # (sender, number) of each first delivery, in order
    seqs: list[int]
    latencies_ns: list[int]
    seen: set[tuple[int, int]]
    duplicates: int = 0
    gaps: int = 0  # Seqs reported missing (Gap.missed)
    undelivered: int = 0
    errors: int = 0
    overflow: int = 0
    closed: str | None = None  # a Closed before we left: the room ended under us
    strange: int = 0  # a Message whose text is not ours

    @classmethod
    def empty(cls) -> Inbox:
        return cls([], [], [], set())


def text_of(sender: int, number: int, sent_ns: int) -> str:
    return f"L{sender}:{number}:{sent_ns}"


def parse_text(text: str) -> tuple[int, int, int] | None:
    if not text.startswith("L"):
        return None
    try:
        sender, number, sent = (int(part) for part in text[1:].split(":"))
    except ValueError:
        return None
    return sender, number, sent


async def read_events(chat: ChatClient, inbox: Inbox, expected: int, done: asyncio.Event) -> None:
    async for event in chat:
        now = time.monotonic_ns()
        match event:
            case Message(text=text, seq=seq):
                parsed = parse_text(text)
                if parsed is None:
                    inbox.strange += 1
                    continue
                sender, number, sent = parsed
                key = (sender, number)
                if key in inbox.seen:
                    inbox.duplicates += 1
                    continue
                inbox.seen.add(key)
                inbox.order.append(key)
                inbox.seqs.append(seq)
                inbox.latencies_ns.append(max(0, now - sent))
                if len(inbox.seen) == expected:
                    done.set()
            case Gap():
                inbox.gaps += event.missed
            case Undelivered():
                inbox.undelivered += 1
            case ErrorReply():
                inbox.errors += 1
            case Overflow(dropped=dropped):
                inbox.overflow += dropped
            case Closed(reason=reason):
                inbox.closed = reason


async def send_messages(chat: ChatClient, index: int, plan: Plan, start: float) -> None:
    """``plan.messages`` messages at ``plan.rate``, on an absolute schedule from ``start``
    (loop time), this member's slot staggered within each period."""
    loop = asyncio.get_running_loop()
    period = 1.0 / plan.rate
    first = start + index * period / plan.members
    for number in range(plan.messages):
        delay = first + number * period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await chat.send(text_of(index, number, time.monotonic_ns()))
        except ConnectionLost:
            return  # the room ended under us: reported as closed_early


# ---------------------------------------------------------------------------
# One point
# ---------------------------------------------------------------------------


async def leave(chats: list[ChatClient], readers: list[asyncio.Task[None]]) -> None:
    """Everyone leaves, members first and the host (``chats[0]``) last, since its leave
    closes the room; then the readers stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(*(chat.close() for chat in chats[1:]))
            if chats:
                await chats[0].close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


def lossy_proxy(
    plan: Plan | QuietPlan,
    tcp_port: int,
    udp_port: int,
    loss: float,
    duplicate: float,
    reorder: float,
) -> AbstractAsyncContextManager[FaultProxy]:
    """The fault proxy in front of the server, both ways alike, with the plan's seed and
    reordering delays."""
    return FaultProxy.start(
        tcp_port,
        udp_port,
        seed=plan.seed,
        loss=loss,
        duplicate=duplicate,
        reorder=reorder,
        reorder_min=plan.reorder_min,
        reorder_max=plan.reorder_max,
    )


async def run_point(
    point: Point, plan: Plan, tcp_port: int, udp_port: int, room: str = "lossy"
) -> dict[str, Any]:
    """One room through a fault proxy in front of the server at these ports."""
    expected = plan.members * plan.messages  # every member gets every message
    inboxes = [Inbox.empty() for _ in range(plan.members)]
    done = [asyncio.Event() for _ in range(plan.members)]
    started = time.monotonic()
    asyncio.get_running_loop().set_exception_handler(_ignore_cancelled)
    async with lossy_proxy(
        plan, tcp_port, udp_port, point.loss, point.duplicate, point.reorder
    ) as proxy:
        chats: list[ChatClient] = []
        readers: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(30):
                for index in range(plan.members):
                    enter = ChatClient.create if index == 0 else ChatClient.join
                    chat = await enter(
                        proxy.address,
                        room,
                        f"m{index}",
                        delivery=point.delivery,
                        linger=plan.linger,
                        # The proxy rewrites the admission, which it can do in clear only.
                        security=PLAINTEXT,
                    )
                    chats.append(chat)
                    readers.append(
                        asyncio.ensure_future(
                            read_events(chat, inboxes[index], expected, done[index])
                        )
                    )
            granted = [chat.delivery for chat in chats]
            loop = asyncio.get_running_loop()
            start = loop.time() + plan.settle
            await asyncio.gather(
                *(send_messages(chat, i, plan, start) for i, chat in enumerate(chats))
            )
            last_send = time.monotonic()
            await _drain(point, plan, inboxes, done)
            drained = time.monotonic() - last_send
        finally:
            await leave(chats, readers)
        traffic = proxy.counters.as_dict()
    return summarise(point, plan, inboxes, granted, traffic, drained, time.monotonic() - started)


def _ignore_cancelled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The proxy's close cancels the TCP relays it still holds (the server keeps a
    connection open after the client's EOF), and asyncio's stream callback logs the
    cancellation as an error: it is not one."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def _drain(point: Point, plan: Plan, inboxes: list[Inbox], done: list[asyncio.Event]) -> None:
    """Until every member has every message, for ``plan.drain`` seconds at most; a
    version 1 room also ends after ``plan.quiet`` seconds in which nothing arrived."""
    deadline = time.monotonic() + plan.drain
    count = sum(len(inbox.order) for inbox in inboxes)
    quiet_since = time.monotonic()
    while not all(event.is_set() for event in done):
        now = time.monotonic()
        if now >= deadline:
            return
        latest = sum(len(inbox.order) for inbox in inboxes)
        if latest != count:
            count, quiet_since = latest, now
        elif not point.delivery and now - quiet_since >= plan.quiet:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(0.05, deadline - now)):
                await asyncio.gather(*(event.wait() for event in done))


def _quantile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6  # ms


def same_order(inboxes: list[Inbox]) -> tuple[bool, int]:
    """Whether every member got the messages it shares with the first member in the
    first member's order; and, over all members, how many of their deliveries came
    right after one that the first member got later (0 when the orders agree)."""
    reference = {key: i for i, key in enumerate(inboxes[0].order)}
    descents = 0
    for inbox in inboxes[1:]:
        positions = [reference[key] for key in inbox.order if key in reference]
        descents += sum(1 for a, b in pairwise(positions) if b < a)
    return descents == 0, descents


def summarise(
    point: Point,
    plan: Plan,
    inboxes: list[Inbox],
    granted: list[bool],
    traffic: dict[str, dict[str, int]],
    drained: float,
    seconds: float,
) -> dict[str, Any]:
    sent = plan.members * plan.messages
    expected = sent * plan.members
    delivered = sum(len(inbox.order) for inbox in inboxes)
    latencies = sorted(ns for inbox in inboxes for ns in inbox.latencies_ns)
    agree, descents = same_order(inboxes)
    up, down = traffic["up"], traffic["down"]
    return {
        "mode": point.mode,
        "loss": point.loss,
        "duplicate": point.duplicate,
        "reorder": point.reorder,
        "members": plan.members,
        "granted": sum(granted),
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "delivered_pct": 100 * delivered / expected if expected else 0.0,
        "worst_member_pct": min(100 * len(i.order) / sent for i in inboxes) if sent else 0.0,
        "duplicates": sum(inbox.duplicates for inbox in inboxes),
        "same_order": agree,
        "out_of_order": descents,
        "seq_increasing": all(all(b > a for a, b in pairwise(inbox.seqs)) for inbox in inboxes),
        "p50_ms": _quantile(latencies, 0.50),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else None,
        "gaps": sum(inbox.gaps for inbox in inboxes),
        "undelivered": sum(inbox.undelivered for inbox in inboxes),
        "errors": sum(inbox.errors for inbox in inboxes),
        "overflow": sum(inbox.overflow for inbox in inboxes),
        "closed_early": sum(inbox.closed is not None for inbox in inboxes),
        "strange": sum(inbox.strange for inbox in inboxes),
        "drain_s": drained,
        "seconds": seconds,
        "up": up,
        "down": down,
        "up_per_message": up["received"] / sent if sent else 0.0,
        "down_per_delivery": down["received"] / expected if expected else 0.0,
    }


# ---------------------------------------------------------------------------
# Quiet members (--quiet): does loss evict members that say nothing?
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QuietPlan:
    members: int = 15  # quiet members, through the proxy (the observer is one more)
    duration: float = 60.0  # seconds of silence, measured
    idle_timeout: float = 3.0  # the server's --idle-timeout
    loss: float = 0.20  # each way
    duplicate: float = 0.05
    reorder: float = 0.10
    seed: int = 11
    reorder_min: float = 0.005
    reorder_max: float = 0.060
    settle: float = 1.0  # seconds after the last join before the silence is counted
    linger: float = 1.0


QUIET = QuietPlan()
QUIET_SMOKE = QuietPlan(members=4, duration=2.0, idle_timeout=0.6, settle=0.2, linger=0.2)


@dataclass
class Fate:
    """What one quiet member's application was told."""

    closed: str | None = None  # a Closed before we left
    paths: list[str] = field(default_factory=list)  # PathChanged texts
    timed_out: set[str] = field(default_factory=set)  # names in "timed out" NOTICEs it got


async def watch(chat: ChatClient, fate: Fate) -> None:
    async for event in chat:
        match event:
            case Notice(text=text):
                said = parse_notice(text)
                if said is not None and said.what is Presence.TIMED_OUT:
                    fate.timed_out.add(said.name)
            case PathChanged(text=text):
                fate.paths.append(text)
            case Closed(reason=reason):
                fate.closed = reason


async def run_quiet(
    plan: QuietPlan, tcp_port: int, udp_port: int, room: str = "quiet"
) -> dict[str, Any]:
    """An observer (the host, direct) and ``plan.members`` members through the proxy,
    all silent for ``plan.duration`` seconds; the server's idle timeout is the caller's."""
    started = time.monotonic()
    asyncio.get_running_loop().set_exception_handler(_ignore_cancelled)
    names = [f"q{index}" for index in range(plan.members)]
    fates = [Fate() for _ in names]
    seen = Fate()  # the observer's
    async with lossy_proxy(
        plan, tcp_port, udp_port, plan.loss, plan.duplicate, plan.reorder
    ) as proxy:
        chats: list[ChatClient] = []
        readers: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(30):
                observer = await ChatClient.create(
                    (HOST, tcp_port), room, "observer", linger=plan.linger, security=PLAINTEXT
                )
                chats.append(observer)
                readers.append(asyncio.ensure_future(watch(observer, seen)))
                for name, fate in zip(names, fates, strict=True):
                    chat = await ChatClient.join(
                        proxy.address,
                        room,
                        name,
                        linger=plan.linger,
                        # The proxy rewrites the admission, which it can do in clear only.
                        security=PLAINTEXT,
                    )
                    chats.append(chat)
                    readers.append(asyncio.ensure_future(watch(chat, fate)))
            granted = sum(chat.delivery for chat in chats[1:])
            heartbeat = chats[-1].heartbeat_interval
            await asyncio.sleep(plan.settle)
            before = proxy.counters.as_dict()
            quiet_from = time.monotonic()
            await asyncio.sleep(plan.duration)
            quiet_for = time.monotonic() - quiet_from
            after = proxy.counters.as_dict()
            left_alone = [fate.closed for fate in fates]  # before anyone leaves
        finally:
            await leave(chats, readers)
    told = seen.timed_out.union(*(fate.timed_out for fate in fates))
    closed = {name for name, reason in zip(names, left_alone, strict=True) if reason}
    moved = {name for name, fate in zip(names, fates, strict=True) if fate.paths}
    minutes = quiet_for / 60
    up = after["up"]["received"] - before["up"]["received"]
    down = after["down"]["received"] - before["down"]["received"]
    return {
        "scenario": "quiet",
        "members": plan.members,
        "granted": granted,
        "idle_timeout": plan.idle_timeout,
        "heartbeat": heartbeat,
        "loss": plan.loss,
        "duplicate": plan.duplicate,
        "reorder": plan.reorder,
        "seed": plan.seed,
        "quiet_s": quiet_for,
        "dropped": len(closed | told),
        "closed": sorted(closed),
        "closed_reasons": sorted({r for r in left_alone if r}),
        "timed_out": sorted(told),
        "observer_saw_timed_out": sorted(seen.timed_out),
        "moved_to_tcp": len(moved),
        "path_changes": sorted({text for fate in fates for text in fate.paths}),
        "up_per_member_per_min": up / plan.members / minutes if minutes else 0.0,
        "down_per_member_per_min": down / plan.members / minutes if minutes else 0.0,
        "up_dropped": after["up"]["dropped"] - before["up"]["dropped"],
        "traffic": after,
        "seconds": time.monotonic() - started,
    }


def measure_quiet(plan: QuietPlan, logs: Path) -> dict[str, Any]:
    extra = ("--idle-timeout", f"{plan.idle_timeout:g}")
    with running(SERVER, NO_GENERATOR, logs, None, extra=extra) as server:
        print(f"lossy: {plan.members} quiet members, {plan.duration:g} s ...", file=sys.stderr)
        row = asyncio.run(run_quiet(plan, server.tcp_port, server.udp_port))
        row["loop"] = server.loop
    return row


def render_quiet(row: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"OCM quiet members on a lossy network, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; the server with --idle-timeout {row['idle_timeout']:g} "
        f"(clients heartbeat every {row['heartbeat']:g} s minus 0-20 %) on {meta['loop']}; "
        f"reordered datagrams held {meta['plan']['reorder_min'] * 1000:g}-"
        f"{meta['plan']['reorder_max'] * 1000:g} ms.",
        "",
        "| quiet members | idle timeout s | loss each way | dup | reorder | seed | quiet s "
        "| dropped | moved to TCP | datagrams up per member per minute "
        "| down per member per minute |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| {row['members']} | {row['idle_timeout']:g} | {row['loss']:.0%} "
        f"| {row['duplicate']:.0%} | {row['reorder']:.0%} | {row['seed']} "
        f"| {row['quiet_s']:.1f} | {row['dropped']} of {row['members']} "
        f"| {row['moved_to_tcp']} of {row['members']} | {row['up_per_member_per_min']:.1f} "
        f"| {row['down_per_member_per_min']:.1f} |",
    ]
    notes = []
    if row["closed"]:
        notes.append(f"closed: {', '.join(row['closed'])} ({'; '.join(row['closed_reasons'])})")
    if row["timed_out"]:
        notes.append(f"announced timed out: {', '.join(row['timed_out'])}")
    if row["path_changes"]:
        notes.append(f"path changes: {'; '.join(row['path_changes'])}")
    if row["granted"] != row["members"]:
        notes.append(f"delivery granted to {row['granted']} of {row['members']}")
    if notes:
        lines += ["", "Problems: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The grid, the report
# ---------------------------------------------------------------------------


def grid(args: argparse.Namespace) -> list[Point]:
    points = []
    for mode in args.modes:
        if args.clean:
            points.append(Point(mode, 0.0))
        for loss in args.loss:
            points.append(Point(mode, loss, args.duplicate, args.reorder))
    return points


def measure(points: list[Point], plan: Plan, logs: Path) -> list[dict[str, Any]]:
    """Every point, one after the other, each in a room of its own on one server."""
    rows = []
    with running(SERVER, NO_GENERATOR, logs, None) as server:

        async def each() -> None:
            for index, point in enumerate(points):
                print(f"lossy: {point.mode}, {point.name} ...", file=sys.stderr)
                room = f"lossy-{index}"
                row = await run_point(point, plan, server.tcp_port, server.udp_port, room)
                row["loop"] = server.loop
                rows.append(row)

        asyncio.run(each())
    return rows


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    plan = meta["plan"]
    lines = [
        f"OCM on a lossy network, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; a room of {plan['members']} members, each sending "
        f"{plan['messages']} messages at {plan['rate']:g}/s through the fault proxy "
        f"(seed {plan['seed']}; reordered datagrams held {plan['reorder_min'] * 1000:g}-"
        f"{plan['reorder_max'] * 1000:g} ms); the server on {meta['loop']}.",
        "",
        "| members | loss each way | dup | reorder | delivered to the application "
        "| worst member | duplicates | same order | p50 ms | p99 ms | max ms "
        "| gaps | undelivered | datagrams up per message | down per delivery | drain s |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        order = "yes" if row["same_order"] and row["seq_increasing"] else "**no**"
        if not row["same_order"]:
            order += f" ({row['out_of_order']} out of order)"
        lines.append(
            f"| {'delivery' if row['mode'] == 'delivery' else 'version 1'} "
            f"| {row['loss']:.0%} | {row['duplicate']:.0%} | {row['reorder']:.0%} "
            f"| {row['delivered_pct']:.2f} % ({row['delivered']:,} / {row['expected']:,}) "
            f"| {row['worst_member_pct']:.2f} % | {row['duplicates']:,} | {order} "
            f"| {_num(row['p50_ms'])} | {_num(row['p99_ms'])} | {_num(row['max_ms'])} "
            f"| {row['gaps']:,} | {row['undelivered']:,} | {row['up_per_message']:.2f} "
            f"| {row['down_per_delivery']:.2f} | {row['drain_s']:.1f} |"
        )
    problems = [
        f"{row['mode']} at {row['loss']:.0%}: {key} = {row[key]}"
        for row in rows
        for key in ("errors", "overflow", "closed_early", "strange")
        if row[key]
    ] + [
        f"{row['mode']} at {row['loss']:.0%}: delivery granted to {row['granted']} of "
        f"{row['members']}"
        for row in rows
        if row["granted"] != (row["members"] if row["mode"] == "delivery" else 0)
    ]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def _fractions(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError("fractions from 0 to 1, comma-separated")
    return values


def _modes(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or any(v not in MODES for v in values):
        raise argparse.ArgumentTypeError(f"comma-separated, from: {', '.join(MODES)}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lossy", description="Delivery through a seeded lossy proxy."
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny room, seconds in all")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="quiet members instead: does loss evict members that say nothing? (issue 11, 6)",
    )
    parser.add_argument(
        "--duration", type=float, help="--quiet: seconds of silence (default 60; smoke: 2)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        help="--quiet: the server's --idle-timeout (default 3; smoke: 0.6)",
    )
    parser.add_argument(
        "--loss",
        type=_fractions,
        help="loss each way, comma-separated (default: 0,0.05,0.2; smoke: 0.1; --quiet: one "
        "value, 0.2)",
    )
    parser.add_argument(
        "--modes", type=_modes, default=list(MODES), help="delivery, v1 or both (default)"
    )
    parser.add_argument("--duplicate", type=float, default=0.05, help="each way (0-1)")
    parser.add_argument("--reorder", type=float, default=0.10, help="each way (0-1)")
    parser.add_argument(
        "--clean",
        action=argparse.BooleanOptionalAction,
        help="also a point with no fault at all, the proxy alone (default: yes; smoke: no)",
    )
    parser.add_argument(
        "--members", type=int, help="members in the room (default 4; --quiet: 15 quiet ones)"
    )
    parser.add_argument("--messages", type=int, help="messages each member sends (200)")
    parser.add_argument("--rate", type=float, help="messages a second, per member (10)")
    parser.add_argument("--drain", type=float, help="seconds to wait after the last send (10)")
    parser.add_argument("--seed", type=int, help="the fault proxy's seed (11)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not (0 <= args.duplicate <= 1 and 0 <= args.reorder <= 1):
        parser.error("--duplicate and --reorder are fractions from 0 to 1")
    if args.quiet:
        if args.loss is not None and len(args.loss) != 1:
            parser.error("--quiet takes one --loss")
        if args.loss is None:
            args.loss = [QUIET.loss]
    if args.loss is None:
        args.loss = [SMOKE_LOSS] if args.smoke else [0.0, 0.05, 0.20]
    if args.clean is None:
        args.clean = not args.smoke
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    plan = SMOKE if args.smoke else FULL
    given = {
        key: getattr(args, key)
        for key in ("members", "messages", "rate", "drain", "seed")
        if getattr(args, key) is not None
    }
    plan = replace(plan, **given)
    if not (
        2 <= plan.members <= 50
        and 1 <= plan.messages <= 100_000
        and 0 < plan.rate <= 1000
        and 0 < plan.drain <= 120
    ):
        raise BenchError("--members 2-50, --messages 1-100000, --rate 0-1000, --drain 0-120")
    return plan


def make_quiet_plan(args: argparse.Namespace) -> QuietPlan:
    plan = QUIET_SMOKE if args.smoke else QUIET
    given = {
        key: getattr(args, key)
        for key in ("members", "duration", "idle_timeout", "seed")
        if getattr(args, key) is not None
    }
    plan = replace(plan, loss=args.loss[0], duplicate=args.duplicate, reorder=args.reorder, **given)
    if not (1 <= plan.members <= 200 and 0 < plan.duration <= 3600 and plan.idle_timeout > 0):
        raise BenchError("--members 1-200, --duration 0-3600, --idle-timeout above 0")
    return plan


def main_quiet(args: argparse.Namespace) -> int:
    try:
        plan = make_quiet_plan(args)
        with tempfile.TemporaryDirectory(prefix="ocm-lossy-") as tmp:
            row = measure_quiet(plan, Path(tmp))
    except BenchError as error:
        print(f"lossy: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "python -m bench.lossy " + " ".join(sys.argv[1:]),
        "plan": plan.__dict__,
        "loop": row["loop"],
        "smoke": args.smoke,
    }
    report = render_quiet(row, meta)
    print(report)
    return write_reports("lossy", report, {"meta": meta, "rows": [row]}, args.markdown, args.json)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quiet:
        return main_quiet(args)
    try:
        plan = make_plan(args)
        with tempfile.TemporaryDirectory(prefix="ocm-lossy-") as tmp:
            rows = measure(grid(args), plan, Path(tmp))
    except BenchError as error:
        print(f"lossy: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "python -m bench.lossy" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "plan": plan.__dict__,
        "loop": rows[0]["loop"] if rows else "-",
        "smoke": args.smoke,
    }
    report = render(rows, meta)
    print(report)
    return write_reports("lossy", report, {"meta": meta, "rows": rows}, args.markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
