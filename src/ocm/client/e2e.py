"""The client's side of end-to-end rooms (section 5 of docs/protocol.md): texts sealed
on the way out, events opened on the way in. Sans-I/O, as the other cores.

:class:`RoomCipher` sits at :class:`~ocm.client.ChatClient`'s boundary, around the
room's core (:class:`~ocm.client.session.RoomState` or
:class:`~ocm.client.delivery.DeliveryState`), which keeps working on the wire's text:
it matches the server's copies of our messages against those in flight, repairs gaps
and replays history with the server's bytes, none of which it needs to read. The
adapter seals a text before the core sees it (:meth:`RoomCipher.seal`) and opens the
core's events before the reader sees them (:meth:`RoomCipher.open_events`): a
:class:`~ocm.client.events.Message` and an :class:`~ocm.client.events.Undelivered` get
their plaintext back, history and repairs included.

A message that does not open (another key, forged or altered by the server, or not
sealed at all) is never shown as text: it is dropped and counted
(:attr:`RoomCipher.undecryptable`), and the first one from each sender is reported as a
:class:`~ocm.client.events.Notice` that says so (:func:`undecryptable_text`).

Randomness (each message's nonce) comes from the adapter, as time does.
"""

from __future__ import annotations

from collections.abc import Iterable

from ocm.client.events import Event, Message, Notice, Undelivered
from ocm.client.session import chat_message
from ocm.errors import ProtocolError
from ocm.wire.e2e import E2eKeys, max_plain_bytes, open_text, seal_text

__all__ = ["MAX_REPORTED_SENDERS", "RoomCipher", "undecryptable_text"]

# Senders whose undecryptable messages get a Notice (the first of each): a server that
# forges messages under made-up names must not flood the screen. Beyond these, each
# such message is still dropped and counted.
MAX_REPORTED_SENDERS = 16


def undecryptable_text(sender: str) -> str:
    """The Notice that reports the first message from ``sender`` that did not open."""
    return (
        f"a message from {sender} could not be decrypted and was dropped"
        " (not sealed with this room's key: forged, altered, or another password)"
    )


class RoomCipher:
    """The message key of one end-to-end room, for one member."""

    def __init__(self, room: str, name: str, keys: E2eKeys) -> None:
        self.room = room
        self.name = name  # ours, as the server relays it (the sender of our texts)
        self._key = keys.message
        self.undecryptable = 0  # messages dropped because they did not open
        self._reported: set[str] = set()  # senders whose first such message was reported

    def seal(self, text: str, nonce: bytes) -> str:
        """Our ``text`` as the wire carries it: an ``e2e1:`` envelope."""
        return seal_text(self._key, self.room, self.name, text, nonce)

    def limit(self, wire_limit: int) -> int:
        """The longest text (UTF-8 bytes) whose envelope fits in ``wire_limit``."""
        return max_plain_bytes(wire_limit)

    def open_events(self, events: Iterable[Event]) -> list[Event]:
        """``events`` as the reader should see them: messages opened (or dropped and
        reported), our undelivered texts opened, everything else unchanged."""
        opened: list[Event] = []
        for event in events:
            match event:
                case Message(sender, text, seq, history, action):
                    # The core read the wire's text: an envelope is never an action.
                    plain = None if action else self._open(sender, text)
                    if plain is not None:
                        opened.append(chat_message(sender, plain, seq, history))
                        continue
                    self.undecryptable += 1
                    folded = sender.casefold()
                    if folded not in self._reported and len(self._reported) < MAX_REPORTED_SENDERS:
                        self._reported.add(folded)
                        opened.append(Notice(undecryptable_text(sender), seq, history))
                case Undelivered(text, certain):
                    # Ours, so it opens; anything else is shown as it was.
                    plain = self._open(self.name, text)
                    opened.append(event if plain is None else Undelivered(plain, certain))
                case _:
                    opened.append(event)
        return opened

    def _open(self, sender: str, text: str) -> str | None:
        try:
            return open_text(self._key, self.room, sender, text)
        except ProtocolError:
            return None
