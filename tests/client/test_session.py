"""ocm.client.session: the client's sans-I/O core, datagram bytes in and events out.

No socket and no clock: every test feeds bytes (made with :mod:`ocm.wire`) and
passes times by hand. The same core is tested through real sockets in
tests/test_client.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocm.client.events import (
    Closed,
    ErrorReply,
    Event,
    Gap,
    Message,
    Notice,
    Overflow,
    Undelivered,
)
from ocm.client.session import (
    BASELINE_SLACK,
    EventQueue,
    RoomState,
    SeqTracker,
    encode_text,
    fit_text,
    text_limit,
)
from ocm.errors import ErrorCode, ProtocolError
from ocm.wire import MAX_DATAGRAM, SEQ_CYCLE, Kind, ServerDatagram, encode_server_datagram

CLIENT = Path(__file__).resolve().parents[2] / "src" / "ocm" / "client"


@pytest.mark.parametrize("module", ["session.py", "delivery.py"])
def test_the_core_does_no_io_and_reads_no_clock(module: str) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse((CLIENT / module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    io = {"asyncio", "selectors", "socket", "ssl", "subprocess", "threading", "time"}
    assert imported & io == set()
    assert imported - {"__future__"} <= {"bisect", "collections", "dataclasses", "ocm", "typing"}


# ---------------------------------------------------------------------------
# Seq and the room state
# ---------------------------------------------------------------------------


def test_seq_first_number_is_the_baseline_then_in_order() -> None:
    tracker = SeqTracker()
    assert tracker.accept(41) == (True, None)  # a late joiner never sees 1
    assert tracker.accept(42) == (True, None)
    assert tracker.accept(43) == (True, None)


def test_seq_duplicates_are_dropped() -> None:
    tracker = SeqTracker()
    for seq in (1, 2, 3):
        tracker.accept(seq)
    assert tracker.accept(3) == (False, None)
    assert tracker.accept(2) == (False, None)
    assert tracker.accept(1) == (False, None)


def test_seq_gap_is_reported_and_a_late_datagram_still_delivered_once() -> None:
    tracker = SeqTracker()
    tracker.accept(1)
    assert tracker.accept(5) == (True, Gap(expected=2, got=5))
    assert Gap(2, 5).missed == 3
    assert tracker.accept(3) == (True, None)  # late, not a duplicate
    assert tracker.accept(3) == (False, None)  # now it is one
    assert tracker.accept(6) == (True, None)


def test_seq_wraps_after_uint32_max() -> None:
    tracker = SeqTracker()
    tracker.accept(SEQ_CYCLE - 1)
    assert tracker.accept(SEQ_CYCLE) == (True, None)
    assert tracker.accept(1) == (True, None)  # 0 is skipped: it belongs to ERROR
    assert tracker.accept(SEQ_CYCLE) == (False, None)
    assert tracker.accept(4) == (True, Gap(expected=2, got=4))
    wrapped = SeqTracker()
    wrapped.accept(SEQ_CYCLE)
    assert wrapped.accept(2) == (True, Gap(expected=1, got=2))
    assert Gap(SEQ_CYCLE, 2).missed == 2


def test_seq_takes_a_datagram_overtaken_by_the_baseline() -> None:
    tracker = SeqTracker()
    assert tracker.accept(100) == (True, None)  # 99 was sent first but arrives second
    assert tracker.accept(99) == (True, None)
    assert tracker.accept(99) == (False, None)  # once
    assert tracker.accept(101) == (True, None)
    assert tracker.accept(100 - BASELINE_SLACK) == (True, None)  # the slack reaches this far
    assert tracker.accept(99 - BASELINE_SLACK) == (False, None)  # and no further
    wrapped = SeqTracker()
    wrapped.accept(2)
    assert wrapped.accept(1) == (True, None)
    assert wrapped.accept(SEQ_CYCLE) == (True, None)  # 0 is not a Seq: below 1 is the top


def test_seq_remembers_a_bounded_number_of_missing_datagrams() -> None:
    tracker = SeqTracker(max_missing=10)
    tracker.accept(1)
    assert tracker.accept(1_000_001) == (True, Gap(2, 1_000_001))
    assert tracker.accept(1_000_000) == (True, None)  # among the newest missing: late
    assert tracker.accept(999_991) == (True, None)
    assert tracker.accept(999_990) == (False, None)  # too old to remember
    assert len(tracker._missing) <= 10


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=80))
def test_seq_never_delivers_a_number_twice(seqs: list[int]) -> None:
    tracker = SeqTracker()
    delivered = [seq for seq in seqs if tracker.accept(seq)[0]]
    assert len(delivered) == len(set(delivered))


@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_seq_gaps_count_exactly_the_lost_datagrams(lost: list[bool]) -> None:
    # Datagrams 1..n in order, some lost (never the first: it is the baseline).
    tracker = SeqTracker()
    missed = 0
    for seq, is_lost in enumerate(lost, start=1):
        if is_lost and seq > 1:
            continue
        _, gap = tracker.accept(seq)
        missed += gap.missed if gap else 0
    last_kept = max(i for i, is_lost in enumerate(lost, start=1) if not is_lost or i == 1)
    assert missed == sum(lost[1:last_kept])


def datagram(kind: Kind, seq: int, text: str = "", sender: str = "") -> bytes:
    return encode_server_datagram(ServerDatagram(kind, seq, sender, text))


def test_room_state_turns_datagrams_into_events_and_tracks_members() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"])
    assert state.datagram_received(datagram(Kind.NOTICE, 4, "carol joined")) == [
        Notice("carol joined", 4)
    ]
    assert state.datagram_received(datagram(Kind.MESSAGE, 5, "hi", "carol")) == [
        Message("carol", "hi", 5)
    ]
    state.datagram_received(datagram(Kind.NOTICE, 6, "mary ann joined"))
    assert state.members == ["alice", "bob", "carol", "mary ann"]
    state.datagram_received(datagram(Kind.NOTICE, 7, "CAROL left"))
    state.datagram_received(datagram(Kind.NOTICE, 8, "mary ann timed out"))
    state.datagram_received(datagram(Kind.NOTICE, 9, "the moon is full"))  # not about members
    assert state.members == ["alice", "bob"]


def test_room_state_reports_gaps_before_the_datagram_and_drops_duplicates() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"])
    state.datagram_received(datagram(Kind.MESSAGE, 1, "one", "alice"))
    assert state.datagram_received(datagram(Kind.MESSAGE, 1, "one", "alice")) == []
    assert state.datagram_received(datagram(Kind.MESSAGE, 4, "four", "alice")) == [
        Gap(2, 4),
        Message("alice", "four", 4),
    ]


def test_room_state_errors_and_the_end() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"])
    state.sent("x" * 5000, deadline=2.0)
    assert state.unconfirmed == 1
    refused = datagram(Kind.ERROR, 0, "message too long: max 4087 bytes")
    assert state.datagram_received(refused) == [ErrorReply("message too long: max 4087 bytes")]
    assert state.unconfirmed == 0
    assert state.datagram_received(b"\x09garbage") == []  # malformed: ignored, counted
    assert state.malformed == 1
    closed = state.datagram_received(datagram(Kind.CLOSED, 2, "host alice left"))
    assert closed == [Closed("host alice left")]
    assert state.ended == Closed("host alice left")
    assert state.datagram_received(datagram(Kind.MESSAGE, 3, "late", "alice")) == []


def test_room_state_unknown_token_error_ends_the_room() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"])
    # The relay may cut its ERROR to the size of our datagram: a prefix is enough.
    events = state.datagram_received(datagram(Kind.ERROR, 0, "unknown token for th"))
    assert len(events) == 1 and isinstance(events[0], Closed)
    assert "unknown token for th" in events[0].reason
    assert state.end("again") == []  # the end happens once


def test_room_state_counts_our_copies_as_confirmations() -> None:
    state = RoomState("Bob", "alice", ["alice", "Bob"])
    state.sent("x", deadline=2.0)
    state.sent("y", deadline=2.5)
    state.datagram_received(datagram(Kind.MESSAGE, 1, "x", "alice"))
    assert state.unconfirmed == 2
    state.datagram_received(datagram(Kind.MESSAGE, 2, "x", "bob"))  # names ignore case
    assert state.unconfirmed == 1
    assert list(state.pending) == [("y", 2.5)]


def test_room_state_gives_up_on_copies_that_do_not_come_back() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"])
    for n, text in enumerate(["one", "two", "three", "four"]):
        state.sent(text, deadline=10.0 + n)
    assert state.next_deadline() == 10.0
    assert state.expire(9.9) == []
    # "one" was lost; the copy of "two" must confirm "two", not the oldest in flight.
    state.datagram_received(datagram(Kind.MESSAGE, 1, "two", "bob"))
    assert [text for text, _ in state.pending] == ["one", "three", "four"]
    assert state.expire(12.0) == [Undelivered("one"), Undelivered("three")]
    assert (state.unconfirmed, state.undelivered, state.next_deadline()) == (1, 2, 13.0)
    state.datagram_received(datagram(Kind.MESSAGE, 2, "one", "bob"))  # too late: no match
    assert state.unconfirmed == 1
    state.end("host left")
    assert state.expire(99.0) == [] and state.next_deadline() is None  # over: no reports


# ---------------------------------------------------------------------------
# What may be sent
# ---------------------------------------------------------------------------


def test_text_limit_is_the_tighter_of_the_two_datagrams() -> None:
    token = "t" * 32
    # A short name: our datagram (2 + room + token + text) is the limit.
    assert text_limit("r" * 255, token, "al") == MAX_DATAGRAM - 2 - 255 - 32
    # A long name: the relayed datagram (6 + sender + text) is.
    assert text_limit("lobby", token, "b" * 100) == MAX_DATAGRAM - 6 - 100
    # Bytes, not characters.
    assert text_limit("lobby", token, "é" * 50) == MAX_DATAGRAM - 6 - 100


def test_encode_text_refuses_what_the_relay_would_refuse() -> None:
    assert encode_text("héllo", 6) == "héllo".encode()
    with pytest.raises(ProtocolError) as caught:
        encode_text("héllo!", 6)
    assert caught.value.code is ErrorCode.TOO_LARGE
    assert caught.value.message == "message too long: 7 bytes, at most 6 (not sent)"
    with pytest.raises(ProtocolError, match="empty") as caught:
        encode_text("", 6)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(ProtocolError, match="not valid Unicode") as caught:
        encode_text("\ud800", 6)  # a lone surrogate has no UTF-8
    assert caught.value.code is ErrorCode.BAD_REQUEST


@given(st.text(), st.integers(min_value=1, max_value=40))
def test_fit_text_is_the_longest_prefix_that_encode_text_takes(text: str, limit: int) -> None:
    fitted = fit_text(text, limit)
    assert text.startswith(fitted)
    assert len(fitted.encode()) <= limit
    if fitted != text:  # one more character would not fit
        assert len(text[: len(fitted) + 1].encode()) > limit
    if fitted:
        assert encode_text(fitted, limit) == fitted.encode()


# ---------------------------------------------------------------------------
# Events waiting for the reader
# ---------------------------------------------------------------------------


def test_event_queue_hands_events_out_in_order() -> None:
    queue = EventQueue(limit=10)
    assert len(queue) == 0 and queue.take() is None
    queue.extend([Notice("bob joined", 1), Message("bob", "hi", 2)])
    assert len(queue) == 2
    assert queue.take() == Notice("bob joined", 1)
    assert queue.take() == Message("bob", "hi", 2)
    assert queue.take() is None


def test_event_queue_drops_the_oldest_and_reports_them_first() -> None:
    queue = EventQueue(limit=3)
    queue.extend(Notice(f"user{seq} joined", seq) for seq in range(1, 6))
    queue.extend([Closed("server shutting down")])  # the newest is never the one dropped
    assert len(queue) == 4  # three events and the Overflow that reports the other three
    taken: list[Event] = []
    while (event := queue.take()) is not None:
        taken.append(event)
    assert taken == [
        Overflow(3),
        Notice("user4 joined", 4),
        Notice("user5 joined", 5),
        Closed("server shutting down"),
    ]
    # The count starts again once reported.
    queue.extend(Notice(f"user{seq} joined", seq) for seq in range(6, 11))
    assert queue.take() == Overflow(2)


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=60))
def test_event_queue_loses_nothing_without_saying_so(limit: int, count: int) -> None:
    queue = EventQueue(limit)
    queue.extend(Notice("x", seq) for seq in range(1, count + 1))
    first = queue.take()
    dropped = first.dropped if isinstance(first, Overflow) else 0
    rest: list[Event] = [] if first is None or isinstance(first, Overflow) else [first]
    while (event := queue.take()) is not None:
        rest.append(event)
    assert dropped + len(rest) == count
    assert len(rest) == min(limit, count)
    assert [e.seq for e in rest if isinstance(e, Notice)] == list(range(dropped + 1, count + 1))


def test_room_state_an_error_drops_only_the_message_it_refused() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"])
    state.sent("good", deadline=2.0)
    state.sent("x" * 5000, deadline=2.1)
    state.sent("also good", deadline=2.2)
    # "message too long: max N" can only be the text over N bytes, not the oldest.
    refused = datagram(Kind.ERROR, 0, "message too long: max 4087 bytes")
    assert state.datagram_received(refused) == [ErrorReply("message too long: max 4087 bytes")]
    assert [text for text, _ in state.pending] == ["good", "also good"]
    # Nothing we sent can be the one refused as bad UTF-8, nor by any other ERROR:
    # nothing is dropped (the timeout reports whatever was really lost).
    for text in ["message text is not valid UTF-8", "message too long: max 9999 bytes"]:
        assert state.datagram_received(datagram(Kind.ERROR, 0, text)) == [ErrorReply(text)]
    assert [text for text, _ in state.pending] == ["good", "also good"]
    assert state.expire(2.3) == [Undelivered("good"), Undelivered("also good")]


# ---------------------------------------------------------------------------
# The heartbeat schedule (section 2: at least one datagram every interval)
# ---------------------------------------------------------------------------


def test_a_heartbeat_is_due_one_interval_after_the_last_datagram() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"], heartbeat_interval=5.0, now=100.0)
    assert state.next_deadline() == 105.0
    assert not state.heartbeat_due(104.9)
    assert state.heartbeat_due(105.0)
    state.datagram_sent(105.0)  # the heartbeat went out
    assert state.next_deadline() == 110.0 and not state.heartbeat_due(109.0)


def test_a_chat_line_postpones_the_heartbeat() -> None:
    """Any datagram keeps us in the room, so a chatty member sends no heartbeats."""
    state = RoomState("bob", "alice", ["alice", "bob"], heartbeat_interval=5.0, now=0.0)
    for now in (3.0, 6.0, 9.0):
        assert not state.heartbeat_due(now)
        state.sent("hi", now + 2.0)
        state.datagram_sent(now)
    assert state.next_deadline() == 5.0  # the oldest copy, due before the heartbeat
    assert state.expire(11.0) == [Undelivered("hi")] * 3
    assert state.next_deadline() == 14.0 and state.heartbeat_due(14.0)


def test_no_heartbeat_once_the_room_is_over() -> None:
    state = RoomState("bob", "alice", ["alice", "bob"], heartbeat_interval=5.0, now=0.0)
    state.end("left the room")
    assert state.next_deadline() is None and not state.heartbeat_due(99.0)


def test_room_state_knows_when_the_server_said_we_are_out() -> None:
    """close() returns True without leaving when the server ended the room for us."""
    state = RoomState("bob", "alice", ["alice", "bob"])
    assert not state.out
    state.end("lost contact with the server")  # our conclusion, not the server's word
    assert not state.out
    for last in (
        datagram(Kind.CLOSED, 1, "server shutting down"),
        datagram(Kind.ERROR, 0, "unknown token"),
    ):
        state = RoomState("bob", "alice", ["alice", "bob"])
        state.datagram_received(last)
        assert state.out and state.ended is not None
