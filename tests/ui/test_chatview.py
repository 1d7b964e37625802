"""ocm.ui.chatview: lines, colours, sanitising, commands and completion order."""

from __future__ import annotations

from datetime import datetime

import pytest

from ocm.client import (
    Closed,
    ErrorReply,
    Event,
    Gap,
    Message,
    Notice,
    Overflow,
    PathChanged,
    Undelivered,
)
from ocm.ui.chatview import (
    EXIT_ERROR,
    EXIT_LEFT,
    EXIT_ROOM_CLOSED,
    EXIT_SERVER_LOST,
    HISTORY_STAMP,
    PALETTE,
    Command,
    Roster,
    closed_line,
    closing,
    djb2,
    event_lines,
    exit_status,
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
            PathChanged("UDP blocked here; chatting over TCP"),
            "! UDP blocked here; chatting over TCP",
        ),
        (
            Closed("host alice left; the room is closed"),
            "! room closed: host alice left; the room is closed",
        ),
    ],
)
def test_pipe_lines(event: Event, line: str) -> None:
    assert pipe_line(event) == line


def test_pipe_lines_from_before_we_entered_say_so() -> None:
    assert pipe_line(Message("alice", "hi\nall", 3, history=True)) == "history alice: hi all"
    assert pipe_line(Notice("bob joined", 4, history=True)) == "history * bob joined"
    assert pipe_line(Message("history", "x", 5)) == "history: x"  # a name, not the prefix


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
        (Gap(2, 3), "12:05 !! 1 message lost on the way (UDP); the chat goes on", "class:error"),
        (Undelivered("hi\x1b[2J"), "12:05 !! not delivered: hi\ufffd[2J", "class:error"),
        (Overflow(7), "12:05 !! 7 events skipped: they came too fast to show", "class:error"),
        (
            PathChanged("the network\x1b changed"),
            "12:05 -- the network\ufffd changed",
            "class:info",
        ),
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


def test_a_gap_with_delivery_means_messages_the_server_no_longer_had() -> None:
    [line] = event_lines(Gap(2, 5), NOON, me="bob", delivery=True)
    assert plain(line) == (
        "12:05 !! 3 messages missing: the server no longer had them; the chat goes on"
    )
    assert line[-1][0] == "class:error"


def test_history_lines_are_dimmed_whole_and_undated() -> None:
    """A message from before we entered: its own style throughout (no name colour, no
    mention highlight), and no time, which we do not know."""
    first, second = event_lines(Message("alice", "hey bob\nmore", 1, history=True), NOON, "bob")
    assert plain(first) == f"{HISTORY_STAMP} <alice> hey bob" == "--:-- <alice> hey bob"
    assert plain(second) == " " * len("12:05 <alice> ") + "more"
    assert {style for style, _ in first + second} == {"class:history"}
    [notice] = event_lines(Notice("carol joined", 2, history=True), NOON, "bob")
    assert plain(notice) == "--:-- -- carol joined"
    assert {style for style, _ in notice} == {"class:history"}
    [live] = event_lines(Message("alice", "hey bob", 3), NOON, "bob")
    assert plain(live) == "12:05 <alice> hey bob"
    assert ("class:mention", "hey bob") in live


def test_the_last_line_says_whether_the_room_closed_or_the_server_was_lost() -> None:
    closed = closed_line(Closed("host alice left; the room is closed"), NOON)
    assert plain(closed) == "12:05 !! room closed: host alice left; the room is closed"
    lost = closed_line(Closed("the server stopped answering"), NOON, server_lost=True)
    assert plain(lost) == "12:05 !! the server stopped answering — the chat is over"
    restarted = Closed("the server restarted; room lobby no longer exists")
    assert plain(closed_line(restarted, NOON, server_lost=True)) == (
        "12:05 !! the server restarted; room lobby no longer exists — the chat is over"
    )
    assert lost[-1][0] == closed[-1][0] == "class:closed"
    assert plain(closed_line(Closed("bad\x1b[2J"), NOON)).endswith("bad\ufffd[2J")


def test_closing_picks_the_end_of_the_stream() -> None:
    assert closing(Closed("bye")) == Closed("bye")
    assert closing(Message("a", "b", 1)) is None


@pytest.mark.parametrize(
    ("closed", "server_lost", "left", "lines_lost", "status"),
    [
        (None, False, True, False, EXIT_LEFT),
        (None, False, True, True, EXIT_ERROR),
        (None, False, False, False, EXIT_SERVER_LOST),  # the leave went unanswered
        (None, False, False, True, EXIT_SERVER_LOST),
        (Closed("host alice left; the room is closed"), False, True, False, EXIT_ROOM_CLOSED),
        (Closed("server shutting down"), False, True, True, EXIT_ROOM_CLOSED),
        (Closed("the server stopped answering"), True, False, True, EXIT_SERVER_LOST),
        (Closed("the server restarted; room x no longer exists"), True, True, False, 4),
    ],
)
def test_exit_statuses(
    closed: Closed | None, server_lost: bool, left: bool, lines_lost: bool, status: int
) -> None:
    assert (EXIT_LEFT, EXIT_ERROR, EXIT_ROOM_CLOSED, EXIT_SERVER_LOST) == (0, 1, 3, 4)
    found = exit_status(closed, server_lost=server_lost, left=left, lines_lost=lines_lost)
    assert found == status


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
    tunnelled = toolbar("lobby", ["alice"], "alice", "alice", over_tcp=True)
    assert plain(tunnelled).endswith("· /help · over TCP")


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
