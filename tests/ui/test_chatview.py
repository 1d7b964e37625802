"""ocm.ui.chatview: lines, colours, sanitising, commands and completion order."""

from __future__ import annotations

import colorsys
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_toolkit.utils import get_cwidth

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
from ocm.client.chat import LOST_CONTACT
from ocm.client.delivery import STOPPED_ANSWERING, restarted_reason
from ocm.client.events import NETWORK_GONE
from ocm.client.session import RoomState
from ocm.ui.chatview import (
    EXIT_ERROR,
    EXIT_LEFT,
    EXIT_ROOM_CLOSED,
    EXIT_SERVER_LOST,
    HELP,
    HELP_COMMANDS,
    HELP_KEYS,
    HISTORY_STAMP,
    MIN_TEXT_COLUMNS,
    PALETTE,
    Command,
    Ending,
    Roster,
    cells,
    closed_line,
    closed_lines,
    closing,
    djb2,
    ending,
    event_lines,
    exit_status,
    help_lines,
    info_line,
    info_lines,
    left_lines,
    mentions,
    name_style,
    one_line,
    parse_input,
    pipe_input,
    pipe_line,
    sanitize,
    toolbar,
    who_lines,
)
from ocm.wire import Kind, ServerDatagram, encode_server_datagram
from ocm.wire.texts import (
    HostGone,
    Presence,
    ServerShutdown,
    UnknownToken,
    format_action,
    format_closed,
    format_refusal,
)
from tests.strategies import names
from tests.ui.kit import NOON, plain


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


def rgb(colour: str) -> tuple[float, float, float]:
    return (int(colour[1:3], 16) / 255, int(colour[3:5], 16) / 255, int(colour[5:7], 16) / 255)


def luminance(colour: str) -> float:
    """WCAG's relative luminance."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: float, b: float) -> float:
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def hue(colour: str) -> float:
    return colorsys.rgb_to_hsv(*rgb(colour))[0] * 360


def hue_distance(a: float, b: float) -> float:
    return min(abs(a - b), 360 - abs(a - b))


def near(a: str, b: str) -> bool:
    """Two colours a reader may take for each other: hues less than 30 degrees apart,
    and luminances within a contrast of 1.5 (alice in bright green beside carol in
    green were both)."""
    return hue_distance(hue(a), hue(b)) < 30 and contrast(luminance(a), luminance(b)) < 1.5


def test_name_colours_are_far_apart_and_read_on_dark_and_light() -> None:
    assert 8 <= len(PALETTE) <= 12
    for index, colour in enumerate(PALETTE):
        for other in PALETTE[index + 1 :]:
            assert not near(colour, other), (colour, other)
        # 3:1 against black and white: no white, black or bright yellow.
        assert contrast(luminance(colour), 0.0) >= 3, colour
        assert contrast(luminance(colour), 1.0) >= 3, colour
        assert hue_distance(hue(colour), 0) > 25, colour  # red is for errors
        assert colorsys.rgb_to_hsv(*rgb(colour))[1] >= 0.5, colour  # a colour, not grey
    assert near("#00ff00", "#00d700")  # the test can fail: bright green and green
    styles = {name_style(name) for name in ("alice", "bob", "carol")}
    assert len(styles) == 3


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
        (Undelivered("hi\nthere", certain=True), "! not delivered: hi there"),
        (Undelivered(format_action("waves"), certain=True), "! not delivered: /me waves"),
        (Undelivered("hi\nthere"), "! not confirmed: hi there"),
        (Message("alice", "waves", 6, action=True), "* alice waves"),
        (Message("alice", "/me waves", 7), "alice: /me waves"),
        (Overflow(1), "! skipped 1 event"),
        (Overflow(20), "! skipped 20 events"),
        (
            PathChanged("UDP blocked here; chatting over TCP"),
            "! UDP blocked here; chatting over TCP",
        ),
        (Closed("host alice left; the room is closed"), "! room closed: the host alice left"),
    ],
)
def test_pipe_lines(event: Event, line: str) -> None:
    assert pipe_line(event) == line


def test_the_last_pipe_line_is_worded_for_us() -> None:
    dropped = Closed("no longer in the room (the server says: unknown token for this room)")
    assert pipe_line(dropped, me="bob") == (
        "! you were dropped after too long a silence; the room goes on without you"
    )
    stopped = Closed(STOPPED_ANSWERING)
    assert pipe_line(stopped, server_lost=True) == (
        "! the server stopped answering — the chat is over"
    )


def test_pipe_lines_from_before_we_entered_say_so() -> None:
    assert pipe_line(Message("alice", "hi\nall", 3, history=True)) == "history alice: hi all"
    assert pipe_line(Notice("bob joined", 4, history=True)) == "history * bob joined"
    assert pipe_line(Message("history", "x", 5)) == "history: x"  # a name, not the prefix
    assert pipe_line(Message("al", "waves", 6, history=True, action=True)) == "history * al waves"


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
    [action] = event_lines(Message("alice", "waves", 2, action=True), NOON, me="bob")
    assert plain(action) == "12:05 * alice waves"
    assert action[-1] == ("class:action", "waves")
    [poke] = event_lines(Message("alice", "pokes bob", 3, action=True), NOON, me="bob")
    assert poke[-1] == ("class:mention", "pokes bob")
    # Plain text that starts with /me is plain text: //me sends it so.
    [literal] = event_lines(Message("alice", "/me waves", 4), NOON, me="bob")
    assert plain(literal) == "12:05 <alice> /me waves"


@pytest.mark.parametrize(
    ("event", "text", "style"),
    [
        (Notice("bob joined", 1), "12:05 -- bob joined", "class:notice"),
        (ErrorReply("no"), "12:05 !! the server refused a message: no", "class:error"),
        (Gap(2, 5), "12:05 !! 3 messages lost on the way (UDP); the chat goes on", "class:error"),
        (Gap(2, 3), "12:05 !! 1 message lost on the way (UDP); the chat goes on", "class:error"),
        (
            Undelivered("hi\x1b[2J", certain=True),
            "12:05 !! not delivered: hi\ufffd[2J",
            "class:error",
        ),
        (
            Undelivered(format_action("waves"), certain=True),
            "12:05 !! not delivered: /me waves",
            "class:error",
        ),
        (
            Undelivered("hi"),
            "12:05 !! not confirmed (it may have been): hi",
            "class:error",
        ),
        (Overflow(7), "12:05 !! 7 events skipped: they came too fast to show", "class:error"),
        (
            PathChanged("the network\x1b changed"),
            "12:05 -- the network\ufffd changed",
            "class:info",
        ),
        (
            Closed("server shutting down"),
            "12:05 !! room closed: the server is shutting down",
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
    assert plain(closed) == "12:05 !! room closed: the host alice left"
    lost = closed_line(Closed("the server stopped answering"), NOON, server_lost=True)
    assert plain(lost) == "12:05 !! the server stopped answering — the chat is over"
    restarted = Closed("the server restarted; room lobby no longer exists")
    assert plain(closed_line(restarted, NOON, server_lost=True)) == (
        "12:05 !! the server restarted; room lobby no longer exists — the chat is over"
    )
    assert lost[-1][0] == closed[-1][0] == "class:closed"
    assert plain(closed_line(Closed("bad\x1b[2J"), NOON)).endswith("bad\ufffd[2J")
    [wrapped] = closed_lines(Closed("server shutting down"), NOON, width=80)
    assert plain(wrapped) == "12:05 !! room closed: the server is shutting down"


def dropped_reason() -> str:
    """What the client itself says when the server no longer knows its token."""
    state = RoomState("bob", "alice", ["alice", "bob"])
    error = ServerDatagram(Kind.ERROR, 0, "", format_refusal(UnknownToken()))
    [event] = state.datagram_received(encode_server_datagram(error))
    assert isinstance(event, Closed)
    return event.reason


@pytest.mark.parametrize(
    ("reason", "me", "is_host", "server_lost", "text", "status"),
    [
        (
            format_closed(HostGone("alice", Presence.LEFT)),
            "bob",
            False,
            False,
            "room closed: the host alice left",
            EXIT_ROOM_CLOSED,
        ),
        (
            format_closed(HostGone("alice", Presence.TIMED_OUT)),
            "bob",
            False,
            False,
            "room closed: the host alice timed out",
            EXIT_ROOM_CLOSED,
        ),
        (
            format_closed(HostGone("Alice", Presence.LEFT)),
            "alice",
            True,
            False,
            "you left; the room is closed for everyone",
            EXIT_ROOM_CLOSED,
        ),
        (
            format_closed(HostGone("alice", Presence.TIMED_OUT)),
            "alice",
            True,
            False,
            "room closed: the server dropped you, its host, after too long a silence",
            EXIT_ROOM_CLOSED,
        ),
        (
            format_closed(ServerShutdown()),
            "bob",
            False,
            False,
            "room closed: the server is shutting down",
            EXIT_ROOM_CLOSED,
        ),
        (
            dropped_reason(),
            "bob",
            False,
            False,
            "you were dropped after too long a silence; the room goes on without you",
            EXIT_SERVER_LOST,
        ),
        (
            dropped_reason(),
            "alice",
            True,
            False,
            "you were dropped after too long a silence, which closed your room",
            EXIT_SERVER_LOST,
        ),
        (
            STOPPED_ANSWERING,
            "bob",
            False,
            True,
            "the server stopped answering — the chat is over",
            EXIT_SERVER_LOST,
        ),
        (
            restarted_reason("lobby"),
            "bob",
            False,
            True,
            "the server restarted; room lobby no longer exists — the chat is over",
            EXIT_SERVER_LOST,
        ),
        (
            LOST_CONTACT,
            "bob",
            False,
            True,
            "lost contact with the server — the chat is over",
            EXIT_SERVER_LOST,
        ),
        (
            NETWORK_GONE,
            "bob",
            False,
            False,
            "our network went away — the chat is over",
            EXIT_SERVER_LOST,
        ),
        (
            "could not resume (bad secret)",
            "bob",
            False,
            False,
            "could not resume (bad secret) — the chat is over",
            EXIT_SERVER_LOST,
        ),
        ("the end\x1b", "bob", False, False, "room closed: the end\ufffd", EXIT_ROOM_CLOSED),
    ],
)
def test_every_ending_is_one_sentence_and_its_own_status(
    reason: str, me: str, is_host: bool, server_lost: bool, text: str, status: int
) -> None:
    """The room closing for everyone (3) apart from losing it ourselves (4): a
    member the server dropped is never told "room closed", for the room goes on."""
    found = ending(Closed(reason), me=me, is_host=is_host, server_lost=server_lost)
    assert found == Ending(text, status)
    assert exit_status(Closed(reason), server_lost=server_lost, left=True, lines_lost=False) == (
        status
    )
    line = closed_line(Closed(reason), NOON, server_lost=server_lost, me=me, is_host=is_host)
    assert plain(line) == f"12:05 !! {text}"
    assert pipe_line(Closed(reason), me=me, is_host=is_host, server_lost=server_lost) == (
        f"! {text}"
    )


def test_the_line_when_we_left_tells_a_host_the_room_closed() -> None:
    [member] = left_lines("lobby", NOON, is_host=False)
    assert plain(member) == '12:05 -- you left "lobby"'
    [host] = left_lines("lobby", NOON, is_host=True)
    assert plain(host) == '12:05 -- you left "lobby"; the room is closed for everyone'
    assert host[-1][0] == "class:warning"


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
        (Closed(dropped_reason()), False, True, False, EXIT_SERVER_LOST),  # the room goes on
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
    # Section 5: a client without TLS (--insecure) says so; an encrypted one says nothing.
    clear = toolbar("lobby", ["alice"], "alice", "alice", over_tcp=True, encrypted=False)
    assert plain(clear).endswith("· /help · over TCP · not encrypted")


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
        ("/me waves", Command("send", "\x01ACTION waves\x01")),
        ("/ME  waves twice ", Command("send", format_action("waves twice"))),
        ("/me    x", Command("send", format_action("x"))),
        ("  /me x  y ", Command("send", format_action("x  y"))),
        ("/me", Command("help")),
        ("//etc/hosts", Command("send", "/etc/hosts")),
        ("//me x", Command("send", "/me x")),
        ("//exit", Command("send", "/exit")),
        ("//", Command("send", "/")),
        ("/say exit", Command("send", "exit")),
        ("/say /who  ", Command("send", "/who  ")),
        ("/say", Command("help")),
        ("/frobnicate now", Command("unknown", "/frobnicate")),
    ],
)
def test_parse_input(line: str, command: Command) -> None:
    assert parse_input(line) == command


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("hello", Command("send", "hello")),
        ("", Command("empty")),
        ("exit", Command("exit")),
        ("/exit", Command("exit")),
        ("/me waves", Command("send", format_action("waves"))),
        ("//me x", Command("send", "/me x")),
        ("//exit", Command("send", "/exit")),
        ("/say exit", Command("send", "exit")),
        ("/who", Command("send", "/who")),  # a script's lines are its messages
        ("/etc/hosts changed", Command("send", "/etc/hosts changed")),
        ("/me", Command("empty")),  # help on a terminal: nothing sent, no empty action
        ("/ME   ", Command("empty")),
        ("/me  x", Command("send", format_action("x"))),
        ("/mexico", Command("send", "/mexico")),
        ("/say", Command("empty")),  # help on a terminal: nothing sent either
        ("/SAY  ", Command("empty")),
        ("/sayonara", Command("send", "/sayonara")),
    ],
)
def test_pipe_input_follows_the_terminal_for_exit_me_say_and_slashes(
    line: str, command: Command
) -> None:
    assert pipe_input(line) == command


def test_help_is_a_table_of_every_command_and_key() -> None:
    lines = [plain(line) for line in help_lines(NOON)]
    assert lines[0] == "12:05 -- commands"
    assert lines[1 + len(HELP_COMMANDS)] == "12:05 -- keys"
    rows = [line for line in lines if line.startswith("12:05 --   ")]
    assert len(rows) == len(HELP_COMMANDS) + len(HELP_KEYS)
    column = {len(row) - len(row.split("  ")[-1].lstrip()) for row in rows}
    assert len(column) == 1  # every description starts in the same column
    assert "12:05 --   /say TEXT    send TEXT as it is, even exit or /who" in lines
    assert any(line.startswith("12:05 --   //TEXT") for line in lines)
    assert any(line.startswith("12:05 --   Ctrl-C") for line in lines)
    assert "commands:" in HELP and any(line.startswith("  /me TEXT") for line in HELP)
    narrow = [plain(line) for line in help_lines(NOON, width=50)]
    assert all(cells(line) <= 50 for line in narrow)
    [start] = [i for i, line in enumerate(narrow) if "Ctrl-C" in line]
    description = narrow[start].index("clear")
    assert narrow[start + 1][:description].isspace()  # wrapped under its column
    assert narrow[start + 1][description] != " "


def test_long_lines_wrap_at_words_under_the_text_column() -> None:
    text = "the quick brown fox jumps over the lazy dog " * 3
    lines = event_lines(Message("alice", text.strip(), 1), NOON, me="bob", width=40)
    shown = [plain(line) for line in lines]
    column = len("12:05 <alice> ")
    assert shown[0] == "12:05 <alice> the quick brown fox jumps"
    assert all(cells(line) <= 40 for line in shown)
    for line in shown[1:]:
        assert line[:column] == " " * column and line[column] != " "
    words = " ".join(line.strip() for line in shown).removeprefix("12:05 <alice> ")
    assert words == text.strip()  # nothing lost, no word cut
    assert all(style == "class:text" for line in lines[1:] for style, _ in line[1:])
    # Short enough: one line, as without a width.
    assert event_lines(Message("alice", "hi", 1), NOON, "bob", width=40) == event_lines(
        Message("alice", "hi", 1), NOON, "bob"
    )


def test_wrapping_cuts_a_word_longer_than_a_line_and_keeps_line_breaks() -> None:
    url = "https://example.org/" + "x" * 60
    lines = [plain(line) for line in event_lines(Message("al", url, 1), NOON, "bob", width=40)]
    assert lines[0] == ("12:05 <al> " + url)[:40]
    assert lines[0].removeprefix("12:05 <al> ") + "".join(line.strip() for line in lines[1:]) == (
        url
    )
    assert all(cells(line) <= 40 for line in lines)
    text = "one two three four five six\nseven"
    lines = [plain(line) for line in event_lines(Message("al", text, 1), NOON, "bob", width=32)]
    assert lines == [
        "12:05 <al> one two three four",
        "           five six",
        "           seven",
    ]


def test_wrapping_counts_wide_characters_and_narrow_terminals() -> None:
    wide = "漢字" * 20  # 80 columns, no spaces
    lines = [plain(line) for line in event_lines(Message("al", wide, 1), NOON, "bob", width=30)]
    assert all(cells(line) <= 30 for line in lines)
    assert "".join(line.strip() for line in lines).endswith(wide)
    # A long name on a narrow terminal: the text goes under the name, not in a sliver.
    name = "a-rather-long-name-indeed"
    named = [
        plain(line) for line in event_lines(Message(name, "word " * 20, 1), NOON, "bob", width=40)
    ]
    assert 40 - len(f"12:05 <{name}> ") < MIN_TEXT_COLUMNS
    assert all(line.startswith(" " * 6 + "word") for line in named[1:])


def test_actions_notices_who_and_info_lines_wrap_too() -> None:
    action = event_lines(Message("al", "waves " * 10, 1, action=True), NOON, "bob", width=32)
    assert [plain(line) for line in action][:2] == [
        "12:05 * al waves waves waves",
        "           waves waves waves",
    ]
    notice = event_lines(Notice("someone with a long long name joined", 1), NOON, "b", width=30)
    assert [plain(line) for line in notice] == [
        "12:05 -- someone with a long",
        "         long name joined",
    ]
    history = event_lines(Message("al", "x " * 30, 1, history=True), NOON, "bob", width=30)
    assert {style for line in history for style, _ in line} == {"class:history"}
    who = who_lines([f"member{n}" for n in range(10)], "member0", NOON, width=50)
    assert len(who) > 1
    assert plain(who[1]).startswith(" " * len("12:05 -- 10 members: "))
    info = info_lines("a " * 40, NOON, width=30)
    assert all(plain(line).startswith(" " * 9) for line in info[1:])
    assert plain(info_line("a " * 40, NOON)) == "12:05 -- " + sanitize("a " * 40)


def test_a_word_that_fits_a_line_goes_to_the_next_one_whole() -> None:
    """The review's cases: a long name leaves no room for the first word."""
    name = "x" * 12  # "12:05 <xxxxxxxxxxxx> " is 21 columns
    lines = [plain(line) for line in event_lines(Message(name, "  b", 1), NOON, "bob", width=23)]
    assert lines == [f"12:05 <{name}>", "      b"]  # not 24 columns, no line of spaces
    party = "🎉 party time for all of us"
    lines = [plain(line) for line in event_lines(Message(name, party, 1), NOON, "bob", width=21)]
    assert lines == [f"12:05 <{name}>", "      🎉 party time", "      for all of us"]
    # The name itself wider than the terminal: cut like a long word, the text whole.
    name = "x" * 30
    lines = [plain(line) for line in event_lines(Message(name, "abc def", 1), NOON, "", width=10)]
    assert all(cells(line) <= 10 for line in lines)
    assert lines[0] == "12:05 <xxx" and lines[-2:] == ["      abc", "      def"]
    assert "".join(line.strip() for line in lines[1:-2]) == "x" * 27 + ">"


def test_spaces_that_do_not_fit_still_part_two_words() -> None:
    # One column left after "abcdefg": the two spaces cannot be drawn, and "i", narrow
    # enough to fit where they would have been, must not be glued to it.
    event = Message("al", "abcdefg  i", 1)
    lines = [plain(line) for line in event_lines(event, NOON, "", width=19)]
    assert lines == ["12:05 <al> abcdefg", "      i"]


def test_cells_counts_as_prompt_toolkit_draws() -> None:
    for text in ["a", "漢", "🎉", "❤️", "e\u0301", "a\u200bb", "a\u200db", "\ufe0f", "\u00ad", "한"]:
        assert cells(text) == get_cwidth(text), text
    assert cells("❤️") == 1  # the variation selector takes no column


# Words made of narrow, wide, zero-width and combining characters, long and short.
_WORD_CHARS = st.sampled_from(["a", "b", "é", "e\u0301", "漢", "🎉", "❤️", "\u200b", "-", "/"])
_WORDS = st.lists(_WORD_CHARS, min_size=1, max_size=40).map("".join)
_TEXTS = st.lists(
    st.one_of(_WORDS, st.sampled_from([" ", "  ", "     ", "\n", "\t"])), max_size=30
).map("".join)
_SENDERS = st.one_of(names(), st.lists(_WORD_CHARS, min_size=1, max_size=30).map("".join))


@settings(max_examples=300, deadline=None)
@given(_SENDERS, _TEXTS, st.integers(min_value=12, max_value=80), st.booleans())
def test_wrapped_lines_fit_the_width_and_keep_every_word(
    sender: str, text: str, width: int, action: bool
) -> None:
    event = Message(sender, text, 1, action=action)
    shown = [plain(line) for line in event_lines(event, NOON, "bob", width=width)]
    assert all(cells(line) <= width for line in shown)
    # A line of spaces only is an empty (or blank) line of the text, never the wrapping.
    text_lines = [sanitize(line) for line in text.split("\n")]
    blank = sum(1 for line in text_lines[1:] if not line.strip(" "))
    assert sum(1 for line in shown if not line.strip(" ")) <= blank
    assert shown[0].strip(" ")
    # Every word comes back in order; a word is cut only when longer than a whole line.
    name = sanitize(sender)
    head = f"12:05 * {name} " if action else f"12:05 <{name}> "
    column = cells(head)
    indent = column if width - column >= MIN_TEXT_COLUMNS else min(column, len("12:05 "))
    room = width - (0 if indent >= width else indent)
    pieces = iter(piece for line in shown for piece in re.findall(r"[^ ]+", line))
    for word in re.findall(r"[^ \n]+", head + "\n".join(text_lines)):
        joined, count = "", 0
        while joined != word:
            joined += next(pieces)
            count += 1
            assert word.startswith(joined)
        assert count == 1 or cells(word) > room, (word, count)
    assert next(pieces, None) is None


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
