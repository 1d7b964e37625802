"""The kit's redis-server starts, answers, loses its keys on restart and keeps a password."""

from __future__ import annotations

import sys

import pytest
import redis

from tests.redis_kit import RedisServer, answers_ping

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows"),
]


def test_it_answers_ping_on_its_url(redis_server: RedisServer) -> None:
    assert answers_ping(redis_server.port)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.ping()


def test_a_restart_keeps_the_port_and_loses_every_key(redis_server: RedisServer) -> None:
    port = redis_server.port
    with redis.Redis.from_url(redis_server.url) as client:
        client.set("ocm:rooms", "lobby")
        redis_server.restart()
        assert redis_server.port == port
        assert client.get("ocm:rooms") is None  # redis-py reconnects by itself
    redis_server.stop()
    assert not answers_ping(port)
    redis_server.stop()  # idempotent


def test_with_a_password_an_unauthenticated_command_is_refused() -> None:
    with RedisServer(password="not in the url") as server:
        assert answers_ping(server.port)  # NOAUTH counts as up
        with (
            redis.Redis.from_url(server.url) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.set("ocm:rooms", "lobby")
        with redis.Redis.from_url(server.url, password="not in the url") as client:
            assert client.set("ocm:rooms", "lobby")
