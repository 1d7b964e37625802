"""A cluster node and its Redis: a password, TLS (rediss://), and what Redis never holds.

docs/security.md ("What Redis sees"): the nodes reach Redis with a password given in
``OCM_REDIS_PASSWORD`` (or in the URL, never logged), over TLS when the URL says
``rediss://``; and no room password, token, resume secret or key is ever written there.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import redis

from ocm.client import ChatClient, list_rooms
from ocm.errors import ErrorCode, ServerError
from ocm.server.cluster.redis_backend import PASSWORD_VARIABLE, UNREACHABLE
from ocm.server.identity import load_identity
from tests.kit import running_server, server_of, until
from tests.redis_kit import NOT_FOUND, RedisServer, free_port

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows"),
]

PASSWORD = "redis-secret-3f9a"
NODE = {"idle_timeout": 2.0, "redis_backoff": (0.05, 0.2)}


@pytest.fixture
def protected_redis() -> RedisServer:
    try:
        server = RedisServer(password=PASSWORD)
        server.start()
    except FileNotFoundError:
        pytest.fail(NOT_FOUND, pytrace=False)
    return server


async def test_a_node_reaches_a_redis_with_a_password_from_the_environment(
    protected_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
        async with running_server(redis_url=protected_redis.url, **NODE) as node:
            assert node.backend.state() is not None and node.backend.state().up  # type: ignore[union-attr]
            chat = await ChatClient.create(server_of(node), "lobby", "alice")
            assert [room.name for room in await list_rooms(server_of(node))] == ["lobby"]
            await chat.close()
    finally:
        protected_redis.stop()


async def test_a_wrong_password_is_refused_and_never_logged(
    protected_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    url = protected_redis.url.replace("redis://", "redis://:not-the-password@")
    caplog.set_level(logging.INFO)
    try:
        async with running_server(redis_url=url, **NODE) as node:
            assert not node.backend.state().up  # type: ignore[union-attr]
            with pytest.raises(ServerError) as refused:
                await ChatClient.create(server_of(node), "lobby", "alice")
            assert refused.value.code is ErrorCode.SERVER_FULL
            assert UNREACHABLE in refused.value.message
    finally:
        protected_redis.stop()
    assert "not-the-password" not in caplog.text
    assert "redis unreachable at redis://***@127.0.0.1" in caplog.text


async def test_a_node_reaches_redis_over_tls(tmp_path: Path) -> None:
    identity = load_identity(tmp_path, None, None)  # a key and a self-signed certificate
    tls_port = free_port()
    tls = (
        *("--tls-port", str(tls_port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(identity.cert_file), "--tls-key-file", str(identity.key_file)),
        *("--tls-ca-cert-file", str(identity.cert_file)),
    )
    try:
        server = RedisServer(extra=tls)
        server.start()
    except FileNotFoundError:
        pytest.fail(NOT_FOUND, pytrace=False)
    url = (
        f"rediss://127.0.0.1:{tls_port}/0"
        f"?ssl_ca_certs={identity.cert_file}&ssl_check_hostname=false"
    )
    try:
        async with running_server(redis_url=url, **NODE) as node:
            await until(lambda: node.backend.state().up)  # type: ignore[union-attr]
            chat = await ChatClient.create(server_of(node), "lobby", "alice")
            assert [room.name for room in await list_rooms(server_of(node))] == ["lobby"]
            await chat.close()
    finally:
        server.stop()


async def test_redis_never_holds_a_password_a_token_or_a_key(redis_server: RedisServer) -> None:
    room_password = "correct horse battery staple"
    async with (
        running_server(redis_url=redis_server.url, **NODE) as a,
        running_server(redis_url=redis_server.url, **NODE) as b,
    ):
        alice = await ChatClient.create(server_of(a), "vault", "alice", password=room_password)
        bob = await ChatClient.join(server_of(b), "vault", "bob", password=room_password)
        await alice.send("a line")
        members = [*a.registry.rooms["vault"].members.values()]
        members += b.registry.rooms["vault"].members.values()
        room = a.registry.rooms["vault"]
        secrets = [room_password.encode(), room.key, b.registry.rooms["vault"].key]
        for member in members:
            secrets += [member.token_bytes, member.key, member.session or b""]
        assert all(secrets)
        store = redis.Redis.from_url(redis_server.url)
        held = b""
        for key in store.keys("*"):
            assert isinstance(key, bytes)
            held += key + repr(store.dump(key)).encode()
        store.close()
        await alice.close()
        await bob.close()
    assert b"vault" in held  # the room is there...
    leaked = [secret for secret in secrets if secret in held or secret.hex().encode() in held]
    assert leaked == []  # ...none of its secrets
