"""Unit tests of ocm.server.history: the bounded room history, the relayed-message log
and the repair budget, with time passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ocm.server.history import RELAYED_WINDOW, Budget, History, RelayedLog
from ocm.wire import SEQ_CYCLE


def test_history_keeps_the_newest_by_count() -> None:
    history = History(max_messages=3, max_bytes=1000)
    for seq in range(1, 6):
        history.append(seq, b"m%d" % seq)
    assert len(history) == 3 and history.first_seq == 3
    assert [history.get(s) for s in range(1, 7)] == [None, None, b"m3", b"m4", b"m5", None]


def test_history_keeps_the_newest_by_bytes_but_always_the_last() -> None:
    history = History(max_messages=100, max_bytes=10)
    history.append(1, b"x" * 6)
    history.append(2, b"y" * 6)
    assert (history.first_seq, history.bytes, history.get(2)) == (2, 6, b"y" * 6)
    history.append(3, b"z" * 50)  # over the cap alone: still kept, it is the newest
    assert (history.first_seq, len(history), history.get(3)) == (3, 1, b"z" * 50)


def test_history_across_the_seq_wrap() -> None:
    history = History(max_messages=4, max_bytes=1000)
    seqs = [SEQ_CYCLE - 2, SEQ_CYCLE - 1, SEQ_CYCLE, 1, 2]
    for seq in seqs:
        history.append(seq, str(seq).encode())
    assert history.first_seq == SEQ_CYCLE - 1
    assert [history.get(s) for s in seqs] == [None, *(str(s).encode() for s in seqs[1:])]


@given(st.integers(1, 50), st.integers(1, 400), st.lists(st.integers(0, 40), max_size=80))
def test_history_bounds_hold(max_messages: int, max_bytes: int, sizes: list[int]) -> None:
    history = History(max_messages, max_bytes)
    for seq, size in enumerate(sizes, 1):
        history.append(seq, bytes(size))
        assert len(history) <= max_messages
        assert history.bytes <= max_bytes or len(history) == 1
        assert history.get(seq) == bytes(size)  # the newest is always there


def test_relayed_log_deals_with_numbers_in_order() -> None:
    log = RelayedLog()
    assert log.seen(1) is None
    assert log.hold(3, b"three") and log.hold(2, None)  # 2 was refused
    assert not log.hold(3, b"three")  # already waiting
    log.dealt_with(10)  # message 1 relayed as Seq 10
    assert log.take_held() == (True, None)
    log.dealt_with(0)
    assert log.take_held() == (True, b"three")
    log.dealt_with(11)
    assert log.take_held() == (False, None)
    assert (log.seen(1), log.seen(2), log.seen(3), log.seen(4)) == (10, 0, 11, None)
    assert (log.held, log.held_bytes) == ({}, 0)


def test_relayed_log_forgets_old_numbers_as_dealt_with() -> None:
    log = RelayedLog()
    for seq in range(RELAYED_WINDOW + 1):
        log.dealt_with(seq + 100)
    assert log.seen(1) == 0  # too long ago to say under which Seq, but not relayed again
    assert log.seen(2) == 101 and log.seen(RELAYED_WINDOW + 2) is None


def test_budget_grants_a_burst_then_the_rate() -> None:
    budget = Budget(rate=10.0, burst=5.0, now=0.0)
    assert budget.take(8, 0.0) == 5
    assert budget.take(8, 0.0) == 0
    assert budget.take(8, 0.3) == 3
    assert budget.take(100, 100.0) == 5  # never more than the burst saved up
