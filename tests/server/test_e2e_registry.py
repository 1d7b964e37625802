"""The registry's end-to-end rooms (section 5 of docs/protocol.md): kept parameters,
LOOKUP_ROOM, and joins that do not say they speak ``e2e``. Time is passed in."""

from __future__ import annotations

import pytest

from ocm.errors import ErrorCode, RoomError
from ocm.server.guards import FailureLimiter
from ocm.server.passwords import PasswordHash
from ocm.server.registry import RoomRegistry
from ocm.wire.tcrp import E2eParams, RoomDetails

IP = "127.0.0.1"
PARAMS = E2eParams(bytes(range(16)), 19456, 2, 1)
AUTH = "ab" * 32  # what a member sends: the auth key in hex
HASH = PasswordHash.create(AUTH)


@pytest.fixture
def registry() -> RoomRegistry:
    # One wrong password blocks an IP: a refusal that counted would show at once.
    return RoomRegistry(idle_timeout=60.0, failures=FailureLimiter(max_failures=1))


def e2e_room(registry: RoomRegistry, name: str = "vault") -> None:
    pending = registry.begin_create(name, "alice", IP, e2e=PARAMS, password_given=True)
    registry.finish_create(pending, HASH, 0.0, delivery=True)


def test_an_e2e_room_keeps_its_parameters_and_tells_them(registry: RoomRegistry) -> None:
    e2e_room(registry)
    registry.create_room("open", "carol", None, IP, 0.0)
    assert registry.rooms["vault"].e2e == PARAMS
    assert registry.lookup("vault") == RoomDetails("vault", 1, True, PARAMS)
    assert registry.lookup("open") == RoomDetails("open", 1, False, None)
    with pytest.raises(RoomError) as caught:
        registry.lookup("nowhere")
    assert caught.value.code is ErrorCode.NO_SUCH_ROOM
    # LIST_ROOMS shows it as any protected room.
    assert [(r.name, r.protected) for r in registry.list_rooms()] == [
        ("open", False),
        ("vault", True),
    ]


def test_an_e2e_room_needs_a_password(registry: RoomRegistry) -> None:
    with pytest.raises(RoomError) as caught:
        registry.begin_create("vault", "alice", IP, e2e=PARAMS)
    assert (caught.value.code, caught.value.message) == (
        ErrorCode.BAD_REQUEST,
        "an end-to-end room needs a password",
    )
    pending = registry.begin_create("vault", "alice", IP, e2e=PARAMS, password_given=True)
    with pytest.raises(RoomError):  # and no hash: still refused when finished
        registry.finish_create(pending, None, 0.0)
    assert registry.rooms == {}


def test_a_join_without_e2e_is_refused_before_the_password_and_not_counted(
    registry: RoomRegistry,
) -> None:
    e2e_room(registry)
    for password in (AUTH, "guess", None):
        with pytest.raises(RoomError) as caught:
            registry.join_room("vault", "bob", password, IP, 1.0, delivery=True)
        assert caught.value.code is ErrorCode.E2E_REQUIRED
    assert not registry.failures.blocked(IP, 1.0)
    member, _ = registry.join_room("vault", "bob", AUTH, IP, 1.0, delivery=True, e2e=True)
    assert member.room.name == "vault"


def test_a_wrong_auth_key_counts_as_any_wrong_password(registry: RoomRegistry) -> None:
    e2e_room(registry)
    with pytest.raises(RoomError) as caught:
        registry.join_room("vault", "bob", "cd" * 32, IP, 1.0, e2e=True)
    assert caught.value.code is ErrorCode.WRONG_PASSWORD
    assert registry.failures.blocked(IP, 1.0)


def test_a_room_recreated_as_e2e_while_a_plain_join_was_hashed_refuses_it(
    registry: RoomRegistry,
) -> None:
    registry.create_room("vault", "alice", HASH, IP, 0.0)
    pending = registry.begin_join("vault", "bob", IP, 0.0)  # a plain join, hash under way
    registry.leave_member(registry.rooms["vault"].members["alice"], 0.5)
    e2e_room(registry)
    with pytest.raises(RoomError) as caught:
        registry.finish_join(pending, True, 1.0)
    assert caught.value.code is ErrorCode.E2E_REQUIRED
    assert not registry.failures.blocked(IP, 1.0)
