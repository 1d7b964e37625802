"""An end-to-end room (section 5) in the front ends: the toolbar's ``e2e`` mark, the
terminal showing plaintext, and the notice for a message that did not decrypt."""

from __future__ import annotations

from ocm.client import ChatClient, Notice
from ocm.client.e2e import undecryptable_text
from ocm.ui.chatview import event_lines, pipe_line, toolbar
from ocm.wire.e2e import FLOOR_ITERATIONS, FLOOR_MEMORY_KIB
from ocm.wire.tcrp import E2eParams
from tests.kit import ready, running_server, server_of
from tests.ui.kit import NOON, plain, screen_for

FLOOR = E2eParams(bytes(16), FLOOR_MEMORY_KIB, FLOOR_ITERATIONS, 1)


def test_the_toolbar_marks_an_e2e_room() -> None:
    marked = toolbar("vault", ["alice"], "alice", "alice", e2e=True)
    assert plain(marked) == " vault  e2e  1 member · you are the host · /help"
    assert ("class:bottom-toolbar.e2e", " e2e ") in marked
    assert "e2e" not in plain(toolbar("vault", ["alice"], "alice", "alice"))


def test_the_undecryptable_notice_is_a_notice_line() -> None:
    notice = Notice(undecryptable_text("mallory"), 4)
    assert pipe_line(notice).startswith("* a message from mallory could not be decrypted")
    [line] = event_lines(notice, NOON, "alice")[:1]
    assert "-- a message from mallory could not be decrypted" in plain(line)


async def test_the_terminal_shows_the_mark_and_plaintext() -> None:
    async with running_server() as server:
        where = server_of(server)
        alice = await ready(
            server, await ChatClient.create(where, "vault", "alice", "pw", e2e=FLOOR)
        )
        bob = await ready(server, await ChatClient.join(where, "vault", "bob", "pw"))
        async with alice, screen_for(bob) as screen:
            await screen.shows(" vault  e2e  2 members")  # the toolbar
            screen.type("hello alice\r")
            await screen.shows("12:05 <bob> hello alice")
            await alice.send("hi bob")
            await screen.shows("12:05 <alice> hi bob")
            assert "e2e1:" not in screen.out.getvalue()
            screen.type("exit\r")
            assert await screen.exit_status() == 0
