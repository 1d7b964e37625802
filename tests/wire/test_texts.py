"""Unit tests of ocm.wire.texts: every fixed text parses back to what made it.

The server writes these texts and clients read them back; a formatter and its parser
that drift apart would make clients misread the room (a member list that never
shrinks, a refusal taken for a loss). Version 1's exact wording is pinned too: other
clients match it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocm.wire import Kind, decode_server_datagram
from ocm.wire.names import name_problem
from ocm.wire.texts import (
    ACTION_END,
    ACTION_START,
    SHUTDOWN_REASON,
    ClosedReason,
    HostGone,
    Malformed,
    MemberEvent,
    NotUtf8,
    Presence,
    Refusal,
    ServerShutdown,
    TooLong,
    UnknownToken,
    format_action,
    format_closed,
    format_notice,
    format_refusal,
    parse_action,
    parse_closed,
    parse_notice,
    parse_refusal,
)

# Any valid member name, spaces and the words of the texts included.
names = st.text(min_size=1, max_size=40).filter(lambda n: name_problem(n, "name") is None)


@given(names, st.sampled_from(Presence))
def test_notices_round_trip(name: str, what: Presence) -> None:
    event = MemberEvent(name, what)
    assert parse_notice(format_notice(event)) == event


def closed_reasons(name: str, what: Presence) -> list[ClosedReason]:
    """One of each kind of :data:`ClosedReason`."""
    return [HostGone(name, what), ServerShutdown()]


def refusals(limit: int) -> list[Refusal]:
    """One of each kind of :data:`Refusal`."""
    return [UnknownToken(), TooLong(limit), NotUtf8(), Malformed()]


def test_the_round_trips_cover_every_kind() -> None:
    """A kind added to a union without its round trip fails here, not in a client."""
    assert {type(r) for r in closed_reasons("bob", Presence.LEFT)} == set(get_args(ClosedReason))
    assert {type(r) for r in refusals(1)} == set(get_args(Refusal))


@given(names, st.sampled_from([Presence.LEFT, Presence.TIMED_OUT]))
def test_closed_reasons_round_trip(name: str, what: Presence) -> None:
    for reason in closed_reasons(name, what):
        assert parse_closed(format_closed(reason)) == reason


@given(st.integers(min_value=0, max_value=4096))
def test_refusals_round_trip(limit: int) -> None:
    for refusal in refusals(limit):
        assert parse_refusal(format_refusal(refusal)) == refusal


def test_the_version_1_wording_is_kept() -> None:
    assert format_notice(MemberEvent("bob", Presence.JOINED)) == "bob joined"
    assert format_notice(MemberEvent("bob", Presence.LEFT)) == "bob left"
    assert format_notice(MemberEvent("bob", Presence.TIMED_OUT)) == "bob timed out"
    host_left = format_closed(HostGone("alice", Presence.LEFT))
    assert host_left == "host alice left; the room is closed"
    assert format_closed(ServerShutdown()) == SHUTDOWN_REASON == "server shutting down"
    assert format_refusal(UnknownToken()) == "unknown token for this room"
    assert format_refusal(TooLong(4087)) == "message too long: max 4087 bytes"
    assert format_refusal(NotUtf8()) == "message text is not valid UTF-8"


def test_a_name_that_looks_like_a_notice_keeps_its_words() -> None:
    """Names may hold spaces and even the notice words: the suffix is the last one."""
    assert parse_notice("bob left joined") == MemberEvent("bob left", Presence.JOINED)
    assert parse_notice("a b timed out") == MemberEvent("a b", Presence.TIMED_OUT)


def test_an_unknown_token_error_cut_short_is_still_recognised() -> None:
    """ERRORs to unknown senders are cut to the size of the datagram they answer."""
    assert parse_refusal("unknown token for th") == UnknownToken()


@pytest.mark.parametrize(
    "text",
    ["", "bob", "joined", "bob came", "host alice gone", "message too long: max x bytes"],
)
def test_other_texts_parse_to_none_and_never_raise(text: str) -> None:
    assert parse_notice(text) is None
    assert parse_closed(text) is None
    assert parse_refusal(text) is None


@given(st.text())
def test_actions_round_trip(words: str) -> None:
    assert parse_action(format_action(words)) == words


def test_an_action_is_irc_ctcp_action() -> None:
    """docs/protocol.md, section 2: the convention IRC clients and bridges know."""
    assert format_action("waves") == "\x01ACTION waves\x01" == ACTION_START + "waves" + ACTION_END
    assert parse_action("\x01ACTION waves") == "waves"  # no closing \x01: cut to fit
    assert parse_action("\x01ACTION\x01") == parse_action("\x01ACTION") == ""


@pytest.mark.parametrize(
    "text", ["", "waves", "/me waves", "ACTION waves", "\x01ACTIONwaves\x01", "\x01VERSION\x01"]
)
def test_other_chat_texts_are_not_actions(text: str) -> None:
    assert parse_action(text) is None


def test_the_protocol_page_shows_an_action_on_the_wire() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    example = re.search(
        r"<!-- example: server action -->\n```text\n(.*?)\n```",
        doc.read_text(encoding="utf-8"),
        re.S,
    )
    assert example is not None
    datagram = decode_server_datagram(bytes.fromhex(example[1]))
    assert (datagram.kind, datagram.sender, parse_action(datagram.text)) == (
        Kind.MESSAGE,
        "bob",
        "waves",
    )
