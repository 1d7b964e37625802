"""The Lua scripts on a real Redis, called directly: what a node's call leaves in the
store (the integration tests see the same through nodes and clients)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import redis

from ocm.server.cluster import layout, scripts
from tests.redis_kit import RedisServer

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows"),
]

A, B = "a" * 16, "b" * 16  # two nodes' ids
ROOM = "lobby"
ROOM_KEYS = [layout.room_key(ROOM), layout.members_key(ROOM)]


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    create = client.register_script(scripts.CREATE)
    create(
        keys=[
            *ROOM_KEYS,
            layout.seq_key(ROOM),
            layout.history_key(ROOM),
            layout.ROOMS,
            layout.hosted_key("127.0.0.1"),
        ],
        args=[
            *(ROOM, "rid1", "", "", "", "host"),
            *(layout.member_value(B, 0, "host"), "127.0.0.1", 100, 100),
        ],
    )
    yield client
    client.close()


def places(store: redis.Redis) -> list[tuple[int, str]]:
    values = [str(value) for value in store.hvals(layout.members_key(ROOM))]
    return sorted((layout.member_place(v), layout.member_name(v)) for v in values)


def restore(store: redis.Redis, *, lost: bool, roster: list[str], pairs: list[str]) -> list[str]:
    result: list[str] = store.register_script(scripts.RESTORE)(
        keys=[*ROOM_KEYS, layout.seq_key(ROOM), layout.ROOMS, layout.history_key(ROOM)],
        args=[
            *(ROOM, "rid1", "", "", "", "host", "127.0.0.1", 0, "host"),
            *("1" if lost else "", len(roster), "" if lost else "1", *pairs),
        ],
    )
    return result


def test_joins_take_places_in_order_the_host_first(store: redis.Redis) -> None:
    join = store.register_script(scripts.JOIN)
    for node, name in ((B, "x"), (B, "b"), (A, "c")):
        assert join(keys=ROOM_KEYS, args=["rid1", name, node, 100, name])[0] == "ok"
    assert places(store) == [(0, "host"), (1, "x"), (2, "b"), (3, "c")]
    refused = join(keys=ROOM_KEYS, args=["rid1", "b", A, 100, "B"])  # keyed casefolded
    assert refused == ["name_taken"]


def test_a_member_written_back_after_the_reaper_takes_the_next_place(
    store: redis.Redis,
) -> None:
    """Not its old roster index, which another member may hold by now (a review found
    two members at one place, so COMPLETE's order was a tie)."""
    join = store.register_script(scripts.JOIN)
    for node, name in ((B, "x"), (B, "b"), (A, "c")):
        join(keys=ROOM_KEYS, args=["rid1", name, node, 100, name])
    store.hdel(layout.members_key(ROOM), "x", "c")  # x left; the reaper took A's c
    roster = ["host", "b", "c"]
    result = restore(store, lost=False, roster=roster, pairs=["c", layout.member_value(A, 2, "c")])
    assert result[0] == "ok" and [layout.member_name(v) for v in result[2:]] == ["c"]
    assert places(store) == [(0, "host"), (2, "b"), (4, "c")]


def test_a_store_that_lost_everything_gets_the_roster_places_back(
    redis_server: RedisServer,
) -> None:
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    roster = ["host", "b", "c"]
    for node, name in ((B, "host"), (B, "b"), (A, "c")):  # each node writes its own
        value = layout.member_value(node, roster.index(name), name)
        restore(store, lost=True, roster=roster, pairs=[name, value])
    assert places(store) == [(0, "host"), (1, "b"), (2, "c")]
    assert store.hget(layout.room_key(ROOM), "joins") == "3"  # the next joiner is 4th
    store.close()
