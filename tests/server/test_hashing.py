"""Password hashes on the server: its own executor, bounded by --max-concurrent-hashes.

The hashes are watched, not timed: PasswordHash is wrapped to record which thread ran
each one and how many ran at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import pytest

from ocm.server.passwords import PasswordHash
from ocm.wire import Admission, CreateRoom, JoinRoom, encode_request
from tests.kit import ReplyReader, TcrpConnection, admit, running_server

P = ParamSpec("P")
T = TypeVar("T")
PASSWORD = "s3cret"
# Generous: a test waits for every queued hash (about 40 ms each) on a slow machine.
QUEUED_TIMEOUT = 60.0


@dataclass
class HashWatch:
    """Every hash the server computes: the thread it ran in, and the most at once."""

    threads: list[str] = field(default_factory=list)
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, hash_function: Callable[P, T]) -> Callable[P, T]:
        def watched(*args: P.args, **kwargs: P.kwargs) -> T:
            with self.lock:
                self.threads.append(threading.current_thread().name)
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                return hash_function(*args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        return watched


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[HashWatch]:
    watch = HashWatch()
    monkeypatch.setattr(PasswordHash, "verify", watch.wrap(PasswordHash.verify))
    # The bound classmethod, wrapped in a plain function: PasswordHash.create(password).
    monkeypatch.setattr(PasswordHash, "create", watch.wrap(PasswordHash.create))
    yield watch


async def join(port: int, name: str) -> Admission:
    """JOIN_ROOM "vault" with the right password, waiting as long as the queue takes."""
    connection = await TcrpConnection.open(port)
    try:
        connection.writer.write(encode_request(JoinRoom("vault", name, PASSWORD)))
        await connection.writer.drain()
        replies = ReplyReader(connection.reader)
        async with asyncio.timeout(QUEUED_TIMEOUT):
            ack = await replies.next()
            assert getattr(ack, "ok", False), ack
            complete = await replies.next()
    finally:
        await connection.close()
    assert isinstance(complete, Admission)
    return complete


async def test_hashes_run_on_the_servers_executor_and_it_closes(hashes: HashWatch) -> None:
    async with running_server(max_concurrent_hashes=2) as server:
        executor = server.hash_executor
        assert isinstance(executor, ThreadPoolExecutor)
        assert executor._max_workers == 2
        await admit(server.tcp_port, CreateRoom("vault", "alice", PASSWORD))
        joined = await asyncio.gather(*(join(server.tcp_port, f"m{n}") for n in range(8)))
        assert len(joined) == 8
        # Every hash (the create's and 8 joins') ran in one of at most 2 threads of the
        # server's own pool, never on the event loop or its default executor.
        assert len(hashes.threads) == 9
        assert all(name.startswith("ocm-hash") for name in hashes.threads), hashes.threads
        assert len(set(hashes.threads)) <= 2
        assert hashes.most <= 2
        assert 1 <= len(executor._threads) <= 2
        workers = set(executor._threads)
    # Closed with the server: nothing more can run on it, and its threads end.
    with pytest.raises(RuntimeError):
        executor.submit(print)
    for worker in workers:
        worker.join(QUEUED_TIMEOUT)
        assert not worker.is_alive()


async def test_twenty_concurrent_protected_joins_one_hash_at_a_time(hashes: HashWatch) -> None:
    async with running_server(max_concurrent_hashes=1) as server:
        await admit(server.tcp_port, CreateRoom("vault", "alice", PASSWORD))
        names = [f"member{n}" for n in range(20)]
        joined = await asyncio.gather(*(join(server.tcp_port, name) for name in names))
        assert sorted(admission.members[-1] for admission in joined) == sorted(names)
        assert len({admission.token for admission in joined}) == 20
        assert len(server.registry.rooms["vault"].members) == 21
        assert hashes.most == 1  # queued behind one another, never two at once
        assert len(set(hashes.threads)) == 1
        assert len(server.hash_executor._threads) == 1
