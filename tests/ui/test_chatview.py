"""ocm.ui.chatview: lines, colours, sanitising, commands and completion order."""

from __future__ import annotations

from datetime import datetime

import pytest

from ocm.client import Closed, ErrorReply, Event, Gap, Message, Notice, Overflow, Undelivered
from ocm.ui.chatview import (
    PALETTE,
    Command,
    Roster,
    djb2,
    event_lines,
    info_line,
    mentions,
    name_style,
    one_line,
    parse_input,
    pipe_line,
    sanitize,
    toolbar,
    who_lines,
)

NOON = datetime(2025, 6, 3, 12, 5)


def plain(fragments: list[tuple[str, str]]) -> str:
    return "".join(text for _, text in fragments)


def test_djb2_is_the_classic_hash() -> None:
    assert djb2("") == 5381
    assert djb2("a") == 5381 * 33 + ord("a")
    assert djb2("é") == (5381 * 33 + 0xC3) * 33 + 0xA9  # over UTF-8 bytes
    assert 0 <= djb2("x" * 1000) < 2**32


def test_name_colours_are_stable_case_blind_and_spread() -> None:
    assert name_style("alice") == name_style("alice") == name_style("ALICE")
    assert name_style("alice").removeprefix("bold ") in PALETTE
    colours = {name_style(f"user{n}") for n in range(60)}
    assert len(colours) >= len(PALETTE) - 2
    assert not any("red" in c and "bright" not in c for c in colours)  # red means error


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hello", "hello"),
        ("a\tb", "a b"),
        ("\x1b[2Jgone", "\ufffd[2Jgone"),
        ("\x1b]0;title\x07", "\ufffd]0;title\ufffd"),
        ("over\rwrite", "over\ufffdwrite"),
        ("c1 \x9b31m", "c1 \ufffd31m"),
        ("del\x7f", "del\ufffd"),
        ("héllo ✓ 漢字", "héllo ✓ 漢字"),
    ],
)
def test_sanitize_neutralises_every_control_character(text: str, shown: str) -> None:
    assert sanitize(text) == shown


def test_one_line_turns_line_breaks_into_spaces() -> None:
    assert one_line("a\nb\r\nc\rd\x1b") == "a b c d\ufffd"


def test_mentions_whole_words_ignoring_case() -> None:
    assert mentions("hi Bob!", "bob")
    assert mentions("bob: look", "bob")
    assert not mentions("bobby tables", "bob")
    assert not mentions("kebob", "bob")
    assert mentions("ping mary ann", "Mary Ann")
    assert mentions("a.b?", "a.b")  # names are literal, not patterns


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Message("alice", "hello", 3), "alice: hello"),
        (Message("alice", "two\nlines\x1b[H", 4), "alice: two lines\ufffd[H"),
        (Notice("bob joined", 5), "* bob joined"),
        (ErrorReply("message too long"), "! error: message too long"),
        (Gap(6, 9), "! missed 3 messages"),
        (Gap(6, 7), "! missed 1 message"),
        (Undelivered("hi\nthere"), "! not delivered: hi there"),
        (Overflow(1), "! skipped 1 event"),
        (Overflow(20), "! skipped 20 events"),
        (
            Closed("host alice left; the room is closed"),
            "! room closed: host alice left; the room is closed",
        ),
    ],
)
def test_pipe_lines(event: Event, line: str) -> None:
    assert pipe_line(event) == line


def test_event_lines_for_messages() -> None:
    [line] = event_lines(Message("alice", "hello", 1), NOON, me="bob")
    assert plain(line) == "12:05 <alice> hello"
    assert (name_style("alice"), "alice") in line
    assert ("class:text", "hello") in line


def test_event_lines_highlight_a_mention_but_not_our_own_words() -> None:
    [line] = event_lines(Message("alice", "hey Bob", 1), NOON, me="bob")
    assert ("class:mention", "hey Bob") in line
    [own] = event_lines(Message("bob", "I am bob", 2), NOON, me="bob")
    assert ("class:text", "I am bob") in own
    assert (name_style("bob") + " underline", "bob") in own


def test_event_lines_split_a_multi_line_message_and_show_actions() -> None:
    first, second = event_lines(Message("al", "one\ntwo\x1b", 1), NOON, me="bob")
    assert plain(first) == "12:05 <al> one"
    assert plain(second) == " " * len("12:05 <al> ") + "two\ufffd"
    [action] = event_lines(Message("alice", "/me waves", 2), NOON, me="bob")
    assert plain(action) == "12:05 * alice waves"


@pytest.mark.parametrize(
    ("event", "text", "style"),
    [
        (Notice("bob joined", 1), "12:05 -- bob joined", "class:notice"),
        (ErrorReply("no"), "12:05 !! the server refused a message: no", "class:error"),
        (Gap(2, 5), "12:05 !! 3 messages lost on the way (UDP); the chat goes on", "class:error"),
        (Undelivered("hi\x1b[2J"), "12:05 !! not delivered: hi\ufffd[2J", "class:error"),
        (Overflow(7), "12:05 !! 7 events skipped: they came too fast to show", "class:error"),
        (
            Closed("server shutting down"),
            "12:05 !! room closed: server shutting down",
            "class:closed",
        ),
    ],
)
def test_event_lines_style_everything_but_chat_apart(event: Event, text: str, style: str) -> None:
    [line] = event_lines(event, NOON, me="bob")
    assert plain(line) == text
    assert line[-1][0] == style


def test_info_who_and_toolbar() -> None:
    assert plain(info_line("hi\x1b", NOON)) == "12:05 -- hi\ufffd"
    [who] = who_lines(["alice", "bob"], "alice", NOON)
    assert plain(who) == "12:05 -- 2 members: alice (host), bob"
    assert plain(toolbar("lobby", ["alice"], "alice", "alice")) == (
        " lobby  1 member · you are the host · /help"
    )
    assert "host: alice" in plain(toolbar("lobby", ["alice", "bob"], "alice", "bob"))
    sending = toolbar("lobby", ["alice"], "alice", "alice", unconfirmed=2)
    assert plain(sending).endswith("· /help · 2 sending")
    assert sending[-1] == ("class:bottom-toolbar.sending", " · 2 sending")


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("hello", Command("send", "hello")),
        ("  spaced  ", Command("send", "  spaced  ")),
        ("", Command("empty")),
        ("   ", Command("empty")),
        ("exit", Command("exit")),
        (" exit ", Command("exit")),
        ("exit now", Command("send", "exit now")),
        ("/exit", Command("exit")),
        ("/QUIT", Command("exit")),
        ("/who", Command("who")),
        ("/help", Command("help")),
        ("/me waves", Command("send", "/me waves")),
        ("/me", Command("help")),
        ("//etc/hosts", Command("send", "/etc/hosts")),
        ("/frobnicate now", Command("unknown", "/frobnicate")),
    ],
)
def test_parse_input(line: str, command: Command) -> None:
    assert parse_input(line) == command


def test_roster_completes_recent_speakers_first_and_never_ourselves() -> None:
    roster = Roster("bob")
    members = ["alice", "Albert", "bob", "alfred", "carol"]
    assert roster.complete("al", members) == ["Albert", "alfred", "alice"]
    roster.spoke("alice")
    roster.spoke("alfred")
    assert roster.complete("AL", members) == ["alfred", "alice", "Albert"]
    assert roster.complete("", members) == ["alfred", "alice", "Albert", "carol"]
    assert roster.complete("b", members) == []
    roster.spoke("gone")  # left the room: never offered
    assert "gone" not in roster.complete("", members)
