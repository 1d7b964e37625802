"""ocm.server.limits: one field per limit, and the flags and README rows made from them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

import pytest

from ocm.cli import build_parser
from ocm.cli import server as servercli
from ocm.server.guards import ErrorReplyLimiter, FailureLimiter
from ocm.server.limits import (
    Limits,
    count,
    flags,
    markdown_rows,
    positive_count,
    positive_seconds,
    seconds,
)
from ocm.server.registry import RoomRegistry
from tests.kit import running_server

# The flags and defaults of `ocm server` before Limits existed: none may change.
FLAGS = {
    "--idle-timeout": 60.0,
    "--max-rooms": 10_000,
    "--max-members": 1_000,
    "--max-rooms-per-ip": 20,
    "--max-connections-per-ip": 32,
    "--max-connections": 4096,
    "--max-payload": 65_536,
    "--message-timeout": 5.0,
    "--tcp-idle-timeout": 10.0,
    "--max-concurrent-hashes": 2,
    "--max-password-failures": 5,
    "--failure-window": 60.0,
    "--error-replies-per-second": 5,
    # The delivery extension (issue 11).
    "--history-messages": 1024,
    "--history-bytes": 262144,
    "--repair-rate": 1000,
    "--closed-resend-interval": 0.2,
    "--tunnel-buffer": 262144,
}


def parse_server(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["server", *argv])


def test_every_field_has_a_default_a_unit_a_help_and_a_type() -> None:
    for f in fields(Limits):
        assert set(f.metadata) == {"unit", "help", "type"}, f.name
        assert f.metadata["unit"] and f.metadata["help"], f.name
        assert f.metadata["type"] in (positive_seconds, positive_count), f.name
        default = getattr(Limits(), f.name)
        assert default > 0, f.name
        # a float limit is seconds, a whole one counts something
        assert (f.metadata["unit"] == "seconds") == isinstance(default, float), f.name
        assert f.metadata["type"](str(default)) == default, f.name


def test_the_flags_and_defaults_are_those_of_before() -> None:
    assert {flag.option: flag.default for flag in flags()} == FLAGS
    assert [flag.option for flag in flags()] == list(FLAGS)  # the README's order
    for flag in flags():
        assert type(flag.default) is type(FLAGS[flag.option]), flag.option


def test_the_parser_defaults_are_the_limits() -> None:
    assert servercli.limits_of(parse_server()) == Limits()


def test_the_parser_takes_every_limit() -> None:
    args = parse_server(
        "--idle-timeout",
        "0.5",
        "--max-rooms",
        "3",
        "--tcp-idle-timeout",
        "1e3",
        "--error-replies-per-second",
        "50",
        "--max-password-failures",
        "1",
    )
    assert servercli.limits_of(args) == replace(
        Limits(),
        idle_timeout=0.5,
        max_rooms=3,
        tcp_idle_timeout=1000.0,
        error_replies_per_second=50,
        max_password_failures=1,
    )


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--idle-timeout", "0"], "must be a positive number of seconds, got 0"),
        (["--failure-window", "-1"], "must be a positive number of seconds, got -1"),
        (["--message-timeout", "nan"], "must be a positive number of seconds, got nan"),
        (["--message-timeout", "soon"], "invalid positive_seconds value: 'soon'"),
        (["--max-rooms", "0"], "must be at least 1, got 0"),
        (["--max-members", "1.5"], "invalid positive_count value: '1.5'"),
        (["--max-payload", "-5"], "must be at least 1, got -5"),
    ],
)
def test_the_parser_refuses_what_is_not_a_limit(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_server(*argv)
    assert exit_.value.code == 2
    assert f"argument {argv[0]}: {complaint}" in capsys.readouterr().err


def test_help_shows_each_limit_with_its_unit_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_server("--help")
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "--idle-timeout SECONDS seconds of silence before a member is dropped" in out
    assert "--max-payload BYTES largest TCRP payload, in bytes (default: 65536)" in out


def test_markdown_rows_write_defaults_as_typed_and_names_as_code() -> None:
    rows = markdown_rows()
    assert rows[0] == (
        "| `--idle-timeout` | `60` | seconds of silence before a member is dropped"
        " (fractions allowed) |"
    )
    assert "per window before `rate_limited` |" in rows[10]
    assert len(rows) == len(fields(Limits))


@dataclass(frozen=True, slots=True)
class Wider(Limits):
    """Limits with one more: what a new limit takes is this one field."""

    # Some widgets, for the test.
    max_widgets: int = count(7, "widgets", "widgets per room, see too_many_widgets")
    widget_timeout: float = seconds(0.25, "seconds a widget may spin")


def test_a_new_field_is_a_new_flag_and_a_new_readme_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [flag.option for flag in flags(Wider)][-2:] == ["--max-widgets", "--widget-timeout"]
    assert markdown_rows(Wider)[-2:] == [
        "| `--max-widgets` | `7` | widgets per room, see `too_many_widgets` |",
        "| `--widget-timeout` | `0.25` | seconds a widget may spin |",
    ]
    monkeypatch.setattr(servercli, "Limits", Wider)
    args = parse_server("--max-widgets", "9", "--max-rooms", "4")
    assert servercli.limits_of(args) == Wider(max_widgets=9, max_rooms=4)
    assert servercli.limits_of(parse_server()) == Wider()
    with pytest.raises(SystemExit):
        parse_server("--widget-timeout", "0")
    assert "--widget-timeout: must be a positive number" in capsys.readouterr().err


def test_the_cores_default_to_the_limits() -> None:
    limits = Limits()
    registry = RoomRegistry()
    assert (
        registry.idle_timeout,
        registry.max_rooms,
        registry.max_members,
        registry.max_rooms_per_ip,
    ) == (limits.idle_timeout, limits.max_rooms, limits.max_members, limits.max_rooms_per_ip)
    failures = FailureLimiter()
    assert (failures.max_failures, failures.window) == (
        limits.max_password_failures,
        limits.failure_window,
    )
    assert ErrorReplyLimiter().rate == limits.error_replies_per_second


async def test_the_server_hands_each_limit_to_its_layer() -> None:
    async with running_server(
        idle_timeout=30.0,
        max_rooms=7,
        max_members=6,
        max_rooms_per_ip=5,
        max_password_failures=4,
        failure_window=3.0,
        error_replies_per_second=2,
        max_payload=1000,
        history_messages=9,
        history_bytes=999,
        repair_rate=8,
        closed_resend_interval=0.5,
    ) as server:
        limits = server.config.limits
        assert limits == replace(
            Limits(),
            history_messages=9,
            history_bytes=999,
            repair_rate=8,
            closed_resend_interval=0.5,
            idle_timeout=30.0,
            max_rooms=7,
            max_members=6,
            max_rooms_per_ip=5,
            max_password_failures=4,
            failure_window=3.0,
            error_replies_per_second=2,
            max_payload=1000,
        )
        registry = server.registry
        assert (
            registry.idle_timeout,
            registry.max_rooms,
            registry.max_members,
            registry.max_rooms_per_ip,
        ) == (30.0, 7, 6, 5)
        assert (
            registry.history_messages,
            registry.history_bytes,
            registry.repair_rate,
            registry.closed_resend_interval,
        ) == (9, 999, 8, 0.5)
        assert (registry.failures.max_failures, registry.failures.window) == (4, 3.0)
        assert server.relay.errors.rate == 2
        assert server.tcrp.limits is limits
