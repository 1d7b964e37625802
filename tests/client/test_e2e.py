"""ocm.client.e2e: RoomCipher, the sealing and opening at ChatClient's boundary, on
events made by hand (the integration through real sockets is tests/test_e2e.py)."""

from __future__ import annotations

from ocm.client.e2e import MAX_REPORTED_SENDERS, RoomCipher, undecryptable_text
from ocm.client.events import Closed, Event, Gap, Message, Notice, Undelivered
from ocm.client.session import chat_message
from ocm.wire.e2e import E2eKeys, envelope_size, open_text, seal_text

KEYS = E2eKeys(auth=bytes(range(32)), message=bytes(range(32, 64)))
OTHER = bytes(32)
NONCE = bytes(12)


def cipher(name: str = "alice") -> RoomCipher:
    return RoomCipher("vault", name, KEYS)


def wire(sender: str, text: str, key: bytes = KEYS.message, room: str = "vault") -> str:
    return seal_text(key, room, sender, text, NONCE)


def test_our_text_is_sealed_as_ours_in_our_room() -> None:
    envelope = cipher("alice").seal("hi all", NONCE)
    assert envelope.startswith("e2e1:") and "hi all" not in envelope
    assert open_text(KEYS.message, "vault", "alice", envelope) == "hi all"


def test_messages_are_opened_actions_included_and_history_kept() -> None:
    events: list[Event] = [
        chat_message("bob", wire("bob", "hello"), 3),  # what the core makes of the wire
        chat_message("bob", wire("bob", "\x01ACTION waves\x01"), 4, history=True),
        Notice("carol joined", 5),
        Gap(6, 8),
    ]
    assert cipher().open_events(events) == [
        Message("bob", "hello", 3),
        Message("bob", "waves", 4, history=True, action=True),
        Notice("carol joined", 5),
        Gap(6, 8),
    ]


def test_our_undelivered_text_comes_back_as_typed() -> None:
    envelope = cipher("alice").seal("\x01ACTION leaves\x01", NONCE)
    opened = cipher("alice").open_events([Undelivered(envelope), Closed("gone")])
    assert opened == [Undelivered("\x01ACTION leaves\x01"), Closed("gone")]


def test_what_does_not_open_is_dropped_counted_and_reported_once_per_sender() -> None:
    room = cipher()
    events = [
        chat_message("mallory", "hello in clear", 1),
        chat_message("mallory", "\x01ACTION in clear\x01", 2),  # an action, not sealed
        chat_message("bob", wire("bob", "hi", key=OTHER), 3),  # another password
        chat_message("bob", wire("carol", "hi"), 4),  # re-attributed by the server
        chat_message("bob", wire("bob", "hi", room="lobby"), 5),  # from another room
        chat_message("bob", wire("bob", "still here"), 6),
    ]
    assert room.open_events(events) == [
        Notice(undecryptable_text("mallory"), 1),
        Notice(undecryptable_text("bob"), 3),
        Message("bob", "still here", 6),
    ]
    assert room.undecryptable == 5
    assert "mallory could not be decrypted" in undecryptable_text("mallory")


def test_reports_stop_after_so_many_senders_but_the_count_goes_on() -> None:
    room = cipher()
    names = [f"forged{k}" for k in range(MAX_REPORTED_SENDERS + 5)]
    opened = room.open_events(chat_message(name, "x", k + 1) for k, name in enumerate(names))
    assert len(opened) == MAX_REPORTED_SENDERS
    assert room.undecryptable == len(names)


def test_the_limit_leaves_room_for_the_envelope() -> None:
    room = cipher()
    limit = room.limit(4000)
    assert envelope_size(limit) <= 4000 < envelope_size(limit + 1)
    assert len(room.seal("x" * limit, NONCE)) <= 4000
